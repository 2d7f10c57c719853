"""A campaign file (TOML) read without running it: every field, the defaults, the command line
over the file, and one clear line naming the field and the fix for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from operator_console.actions.store import Mode
from operator_console.db import create_db_engine
from operator_console.scenarios.campaign import (
    CampaignError,
    CampaignRunner,
    _seeded,
    campaign_from,
    load_campaign,
)
from operator_console.scenarios.catalog import find_scenario
from operator_console.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nightly.toml"
    path.write_text(text)
    return path


def test_every_field_of_a_campaign_file_is_read(tmp_path: Path) -> None:
    # A scenario file outside scenarios/ is named by its path, next to bundled names.
    own = tmp_path / "mine" / "burst.toml"
    own.parent.mkdir()
    own.write_text((ROOT / "scenarios" / "ratelimiter-healthy-burst.toml").read_text())
    path = _write(
        tmp_path,
        f"""
name = "nightly"
scenarios = ["ratelimiter-node-kill", "{own}"]
brains = ["none", "rules", "none"]
trials = 3
mode = "approve"
seed = 7
parallel = 2
pace = 0.5
""",
    )
    campaign = load_campaign(path)
    assert campaign.name == "nightly"
    assert [s.name for s in campaign.scenarios] == ["ratelimiter-node-kill", "burst"]
    assert campaign.brains == ["none", "rules"]  # each brain once, in the file's order
    assert (campaign.trials, campaign.mode, campaign.seed) == (3, Mode.APPROVE, 7)
    assert (campaign.parallel, campaign.pace) == (2, 0.5)
    assert campaign.spec() == {
        "name": "nightly",
        "scenarios": ["ratelimiter-node-kill", "burst"],
        "brains": ["none", "rules"],
        "trials": 3,
        "mode": "approve",
        "seed": 7,
        "parallel": 2,
        "pace": 0.5,
    }
    # Every trial of every scenario and brain, each its own run.
    engine = create_db_engine(f"sqlite:///{tmp_path / 'evals.db'}")
    runner = CampaignRunner(campaign, Settings(data_dir=tmp_path / "data"), engine)
    trials = runner.trials()
    assert len(trials) == 2 * 2 * 3
    assert [(s.name, b, t) for s, b, t in trials[:4]] == [
        ("ratelimiter-node-kill", "none", 1),
        ("ratelimiter-node-kill", "rules", 1),
        ("burst", "none", 1),
        ("burst", "rules", 1),
    ]


def test_a_file_with_only_scenarios_takes_the_defaults_and_flags_win(tmp_path: Path) -> None:
    path = _write(tmp_path, 'scenarios = ["ratelimiter-node-kill"]\n')
    campaign = load_campaign(path)
    assert (campaign.name, campaign.brains, campaign.trials) == ("campaign", ["rules"], 1)
    assert (campaign.mode, campaign.seed, campaign.parallel, campaign.pace) == (
        Mode.AUTO,
        None,
        1,
        1.0,
    )
    flagged = load_campaign(path, trials=5, brains=["none"], seed=None, mode=None)
    assert (flagged.trials, flagged.brains, flagged.seed, flagged.mode) == (
        5,
        ["none"],
        None,
        Mode.AUTO,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scenarios = [", "not a TOML campaign file"),
        ('scenarios = ["ratelimiter-node-kill"]\nrounds = 3\n', "rounds: Extra inputs"),
        ("scenarios = []\n", "scenarios: List should have at least 1 item"),
        ('scenarios = ["ratelimiter-node-kill"]\nbrains = ["gpt"]\n', "brains.0: Input should be"),
        ('scenarios = ["ratelimiter-node-kill"]\ntrials = 0\n', "trials: Input should be greater"),
        ('scenarios = ["ratelimiter-node-kill"]\nmode = "yolo"\n', "mode: Input should be"),
        ('scenarios = ["no-such-scenario"]\n', "no scenario by that name"),
    ],
)
def test_a_bad_campaign_file_is_one_line_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value).strip()
    if "no scenario" not in message:
        assert str(caught.value).startswith(f"{path}: ")


def test_a_missing_file_and_a_command_line_without_scenarios_say_so(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="no such campaign file"):
        load_campaign(tmp_path / "absent.toml")
    with pytest.raises(CampaignError, match="command line: scenarios: Field required"):
        campaign_from({"brains": ["rules"]}, where="command line")


def test_the_seed_reaches_a_workload_that_takes_one() -> None:
    scenario = find_scenario("ratelimiter-node-kill")
    assert _seeded(scenario, None) is scenario
    seeded = _seeded(scenario, 8)
    assert seeded.workload["seed"] == 8 and "seed" not in scenario.workload
