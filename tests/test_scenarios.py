"""Scenario files: every shipped one loads; a broken one names the file, the field, the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from operator_console.scenarios import ScenarioError, find_scenario, list_scenarios
from operator_console.scenarios.model import load_scenario_file

SHIPPED = {
    "ratelimiter-node-kill": "node_down",
    "ratelimiter-store-pause": "store_unreachable",
    "ratelimiter-clock-skew": "over_limit",
    "ratelimiter-config-drift": "config_drift",
    "ratelimiter-link-latency": "store_link_slow",
    "ratelimiter-link-cut": "store_unreachable",
    "ratelimiter-node-pause": "node_down",
    "ratelimiter-healthy-burst": None,
    "ratelimiter-prompt-injection": "over_limit",
    "etcd-leader-kill": "member_down",
    "etcd-member-pause": "member_down",
    "etcd-quorum-loss": "quorum_lost",
    "etcd-nospace": "nospace_alarm",
    "etcd-partition": "no_leader",
    "etcd-slow-leader": "slow_member",
    "etcd-healthy": None,
}

GOOD = """
title = "t"
subject = "ratelimiter"
[[chapters]]
title = "one"
fault = { kind = "node_kill", target = "node-1" }
[expect]
invariants = ["node_down"]
"""


def test_every_shipped_scenario_loads_with_its_expectation() -> None:
    good, bad = list_scenarios()
    assert bad == []
    by_name = {s.name: s for s in good}
    for name, invariant in SHIPPED.items():
        scenario = by_name[name]
        assert scenario.expect.invariants[:1] == ([invariant] if invariant else [])
        if invariant:
            assert scenario.faults, f"{name} injects no fault"
            assert any(c.wait_for for c in scenario.chapters)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("title = 'x'\nsubject = ", "", "not valid TOML"),
        (GOOD.replace('title = "t"\n', ""), "title", "Field required"),
        (GOOD.replace('"node_kill"', '"node_kil"'), "chapters[0].fault.kind", "unknown fault"),
        (GOOD.replace('"node-1"', '"node-7"'), "chapters[0].fault.target", "no target"),
        (GOOD.replace('"ratelimiter"', '"etcdx"'), "subject", "unknown subject"),
        (GOOD + "[topology]\nnodes = 0\n", "topology.nodes", "greater than or equal to 1"),
        (GOOD.replace('["node_down"]', '["node_dwn"]'), "expect.invariants[0]", "unknown"),
        (GOOD.replace('title = "one"', 'title = "one"\nduraton = 3'), "chapters[0].duraton", ""),
        (
            GOOD.replace('title = "one"', 'title = "one"\nworkload = { rate = -1 }'),
            "chapters[0].workload.rate",
            "greater than 0",
        ),
    ],
)
def test_broken_file_names_file_field_and_problem(
    tmp_path: Path, text: str, field: str, problem: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert info.value.field == field
    assert problem in message


def test_good_file_loads(tmp_path: Path) -> None:
    scenario = load_scenario_file(_write(tmp_path, GOOD))
    assert scenario.name == "broken"
    assert scenario.faults[0].kind == "node_kill"


def test_unknown_name_lists_known_scenarios() -> None:
    with pytest.raises(ScenarioError, match="ratelimiter-node-kill"):
        find_scenario("no-such-scenario")
