"""What the Evals screen reads: campaigns newest first, each with the runs scored and won so far
counted from the runs themselves, and whether it is running, finished or was interrupted."""

from __future__ import annotations

from pathlib import Path

from operator_console.db import create_db_engine, init_db
from operator_console.db.evals import EvalRepository
from tests.tui.replaying import campaign, load_campaign


def test_summaries_count_runs_and_wins_and_say_the_state(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'evals.db'}")
    init_db(engine)
    recorded = load_campaign(engine)
    repo = EvalRepository(engine)
    runs = repo.runs(recorded)
    repo.create("cut-short", "cut-short", {"scenarios": ["a"], "brains": ["rules"], "trials": 5})
    repo.add_run("cut-short", {**runs[0].score, "win": True})
    repo.add_run("cut-short", {**runs[1].score, "win": False})
    repo.finish("cut-short", [], interrupted=True)
    repo.create("running", "running", {"scenarios": ["a", "b"], "brains": ["none"]})

    by_id = {s.id: s for s in repo.summaries()}
    assert list(by_id) == ["running", "cut-short", recorded]  # newest first
    assert (by_id["running"].runs, by_id["running"].win_rate, by_id["running"].state) == (
        0,
        None,
        "running",
    )
    short = by_id["cut-short"]
    assert (short.runs, short.wins, short.win_rate, short.state) == (2, 1, 0.5, "interrupted")
    assert short.trials == 5 and short.brains == ("rules",)
    full = by_id[recorded]
    stored = campaign()["tables"]["eval_runs"]
    assert (full.runs, full.wins) == (len(stored), sum(r["win"] for r in stored))
    assert full.state == "finished" and full.scenarios[0] == "ratelimiter-node-kill"
    assert repo.summary("nope") is None
    assert repo.summary("cut-short") == short
