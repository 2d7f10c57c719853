"""`operator-console eval` on real runs: one JSON line per trial with the AIOpsLab-style fields,
a table on stderr, the campaign stored, and `eval compare` failing on a fallen win rate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from operator_console.cli import main
from operator_console.db import create_db_engine, init_db
from operator_console.db.evals import EvalRepository
from tests.integration.conftest import console_argv, console_env

pytestmark = pytest.mark.integration

FIELDS = {
    "scenario",
    "brain",
    "trial",
    "detected",
    "ttd_s",
    "localized",
    "root_cause_ok",
    "mitigated",
    "ttm_s",
    "wrong_actions",
    "tickets",
    "tokens",
    "cost_usd",
    "steps",
    "wall_s",
    "win",
}
ROOT = Path(__file__).resolve().parents[2]


def test_eval_prints_a_line_per_run_and_a_table(tmp_path: Path) -> None:
    # A scenario file outside scenarios/ works as well as a name.
    outside = tmp_path / "elsewhere" / "burst.toml"
    outside.parent.mkdir()
    outside.write_text((ROOT / "scenarios" / "ratelimiter-healthy-burst.toml").read_text())
    env = console_env(tmp_path / "data")
    done = subprocess.run(
        console_argv(
            "eval",
            "--scenarios",
            f"ratelimiter-node-kill,{outside}",
            "--brain",
            "rules,none",
            "--trials",
            "2",
            "--json",
            "--parallel",
            "2",
            "--pace",
            "0.3",
            "--csv",
            str(tmp_path / "runs.csv"),
            "--no-charts",
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 8, done.stdout
    assert all(FIELDS <= set(line) for line in lines)
    kills = [r for r in lines if r["scenario"] == "ratelimiter-node-kill"]
    for run in kills:
        assert run["detected"] and run["localized"] and run["ttd_s"] is not None
        assert run["tickets"] == 1 and run["wrong_actions"] == 0
    rules = [r for r in kills if r["brain"] == "rules"]
    assert all(r["root_cause_ok"] and r["mitigated"] and r["win"] for r in rules), rules
    assert all(
        r["root_cause_ok"] is None and r["steps"] == 0 for r in kills if r["brain"] == "none"
    )
    # A healthy surge has nothing to find: every run wins, with no ticket and no action.
    bursts = [r for r in lines if r["scenario"] == "burst"]
    assert len(bursts) == 4
    for run in bursts:
        assert run["win"], run
        assert (run["detected"], run["ttd_s"], run["tickets"], run["wrong_actions"]) == (
            False,
            None,
            0,
            0,
        )
    assert "SCENARIO" in done.stderr and "TTD med" in done.stderr
    assert (tmp_path / "runs.csv").read_text().count("\n") == 9  # header and 8 runs

    engine = create_db_engine(f"sqlite:///{tmp_path / 'data' / 'operator-console.db'}")
    (campaign,) = EvalRepository(engine).campaigns()
    assert len(EvalRepository(engine).runs(campaign.id)) == 8
    assert {(c["scenario"], c["brain"]) for c in campaign.cells} == {
        ("ratelimiter-node-kill", "rules"),
        ("ratelimiter-node-kill", "none"),
        ("burst", "rules"),
        ("burst", "none"),
    }


def test_compare_says_what_changed_and_fails_on_a_fallen_win_rate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evals.db'}"
    engine = create_db_engine(url)
    init_db(engine)
    repo = EvalRepository(engine)

    def cell(win_rate: float, ttd: float) -> dict[str, object]:
        return {
            "scenario": "s",
            "brain": "rules",
            "runs": 4,
            "wins": int(win_rate * 4),
            "win_rate": win_rate,
            "ttd_median": ttd,
            "ttm_median": 3.0,
            "wrong_actions": 0,
            "tickets": 1.0,
        }

    for name, win_rate, ttd in (("before", 1.0, 1.5), ("faster", 1.0, 0.5), ("worse", 0.5, 0.5)):
        repo.create(name, name, {"scenarios": ["s"]})
        repo.finish(name, [cell(win_rate, ttd)], interrupted=False)
    better = CliRunner().invoke(main, ["eval", "compare", "before", "faster", "--db", url])
    assert better.exit_code == 0, better.output
    assert "ttd_median 1.5 -> 0.5 (better)" in better.output
    worse = CliRunner().invoke(main, ["eval", "compare", "faster", "worse", "--db", url])
    assert worse.exit_code == 1
    assert "win_rate 1.0 -> 0.5 (worse)" in worse.output
    missing = CliRunner().invoke(main, ["eval", "compare", "before", "nope", "--db", url])
    assert missing.exit_code == 1 and "no campaign 'nope'" in missing.output
