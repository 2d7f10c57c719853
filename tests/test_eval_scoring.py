"""Scoring one run from its timeline, on the edges that decide a win: a run with nothing to find
and nothing found wins; any action where nothing should happen, or on a target the fault did not
touch, is a wrong action; the wrong root cause loses; the `none` baseline is judged without an
agent. The timelines are event objects as a run publishes them (one is a recorded real run)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from operator_console.domain.events import (
    ActionExecuting,
    ActionProposed,
    ActionVerified,
    AgentStep,
    DiagnosisReady,
    Event,
    FaultCleared,
    FaultInjected,
    RunFinished,
    RunStarted,
    TicketOpened,
    TicketResolved,
    event_from_dict,
)
from operator_console.scenarios.catalog import find_scenario
from operator_console.scenarios.model import Scenario
from operator_console.scenarios.scoring import NONE, Cell, quantile, score, table
from tests.tui.replaying import RECORDING

USAGE = {
    "input_tokens": 900,
    "output_tokens": 100,
    "cache_read_tokens": 0,
    "estimated_cost_usd": 0.004,
}


def node_kill() -> Scenario:
    return find_scenario("ratelimiter-node-kill")


def healthy() -> Scenario:
    return find_scenario("ratelimiter-healthy-burst")


def _run(scenario: Scenario, *events: Event, problems: tuple[str, ...] = ()) -> list[Event]:
    """A run's timeline: started, the events, finished with its summary."""
    started = RunStarted(
        run_id="r1", scenario=scenario.name, subject=scenario.subject, run_dir="/tmp/r1", chapters=3
    )
    summary = {"duration_s": 21.5, "problems": list(problems)}
    return [started, *events, RunFinished(ok=not problems, summary=summary, t=21.5)]


def _fault(t: float = 7.0) -> FaultInjected:
    return FaultInjected(
        kind="node_kill", target="node-2", params={}, description="SIGKILL node-2", t=t
    )


def _opened(ticket_id: int, t: float, target: str = "node-2", incident: int = 1) -> TicketOpened:
    return TicketOpened(
        ticket_id=ticket_id,
        invariant="node_down",
        target=target,
        severity="critical",
        state="open",
        occurrences=1,
        message=f"{target} is down",
        incident_id=incident,
        t=t,
    )


def _diagnosed(ticket_id: int, label: str, t: float) -> DiagnosisReady:
    return DiagnosisReady(
        ticket_id=ticket_id,
        brain="rules",
        summary="s",
        root_cause="the process died",
        label=label,
        confidence=0.9,
        evidence=[],
        alternatives=[],
        recommended=[{"action": "restart_node", "params": {"node": "node-2"}}],
        usage=USAGE,
        t=t,
    )


def _action(
    action_id: int, targets: list[str], t: float, *, verified: bool, ticket_id: int = 1
) -> list[Event]:
    fields: dict[str, Any] = {
        "action_id": action_id,
        "ticket_id": ticket_id,
        "action": "restart_node",
        "params": {"node": targets[0]},
        "risk": "medium",
    }
    events: list[Event] = [
        ActionProposed(**fields, state="proposed", targets=targets, decision="execute", t=t),
        ActionExecuting(**fields, state="executing", t=t + 0.1),
    ]
    if verified:
        events.append(ActionVerified(**fields, state="verified", detail="node_down clear", t=t + 3))
    return events


def _fixed(label: str = "process_died") -> list[Event]:
    """The fault, its ticket, the right diagnosis, the remedy verified, the ticket resolved."""
    return [
        _fault(),
        _opened(1, 7.03),
        AgentStep(ticket_id=1, brain="rules", seq=1, kind="reasoning", text="...", t=7.05),
        _diagnosed(1, label, 7.1),
        *_action(1, ["node-2"], 7.2, verified=True),
        TicketResolved(
            ticket_id=1,
            invariant="node_down",
            target="node-2",
            severity="critical",
            state="resolved",
            occurrences=3,
            message="m",
            by="agent",
            t=10.3,
        ),
    ]


def test_a_fault_found_diagnosed_and_fixed_wins_with_its_times() -> None:
    s = score(node_kill(), "rules", 1, "r1", _run(node_kill(), *_fixed()), ok=True)
    assert (s.faults, s.detected, s.localized, s.root_cause_ok) == ("node_kill", True, True, True)
    assert (s.ttd_s, s.mitigated, s.ttm_s) == (0.03, True, 3.2)
    assert (s.wrong_actions, s.tickets, s.incidents, s.steps) == (0, 1.0, 1.0, 1)
    assert (s.tokens, s.cost_usd, s.wall_s, s.problems) == (1000, 0.004, 21.5, ())
    assert s.win


def test_the_recorded_real_run_scores_as_its_timeline_says() -> None:
    raw: list[dict[str, Any]] = json.loads(RECORDING.read_text())["events"]
    events = [e for e in map(event_from_dict, raw) if e.on_timeline]
    s = score(node_kill(), "rules", 1, "recorded", events, ok=True)
    fault = next(e["t"] for e in raw if e["event"] == "fault_injected")
    opened = next(e["t"] for e in raw if e["event"] == "ticket_opened")
    verified = next(e["t"] for e in raw if e["event"] == "action_verified")
    assert s.ttd_s == pytest.approx(opened - fault, abs=1e-3)
    assert s.ttm_s == pytest.approx(verified - fault, abs=1e-3)
    assert s.mitigated and s.wrong_actions == 0 and (s.tickets, s.incidents) == (1.0, 1.0)
    # It was recorded before diagnoses carried root-cause labels: a diagnosis that names no
    # label is not the expected root cause, so the fix alone does not win.
    (diagnosis,) = [e for e in raw if e["event"] == "diagnosis_ready"]
    assert diagnosis.get("label", "") == ""
    assert s.root_cause_ok is False and not s.win
    # Against a scenario that names no root cause, the same run wins.
    lenient = node_kill().model_copy(
        update={"expect": node_kill().expect.model_copy(update={"root_cause": None})}
    )
    judged = score(lenient, "rules", 1, "recorded", events, ok=True)
    assert judged.root_cause_ok is None and judged.win


@pytest.mark.parametrize("brain", ["rules", NONE])
def test_a_run_with_no_fault_and_no_ticket_wins(brain: str) -> None:
    s = score(healthy(), brain, 1, "r1", _run(healthy()), ok=True)
    assert (s.faults, s.detected, s.ttd_s, s.localized) == ("", False, None, True)
    assert (s.mitigated, s.ttm_s, s.wrong_actions, s.tickets) == (False, None, 0, 0.0)
    assert s.root_cause_ok is None and s.win


def test_a_ticket_where_nothing_is_wrong_loses() -> None:
    s = score(healthy(), "rules", 1, "r1", _run(healthy(), _opened(1, 9.0)), ok=True)
    assert s.tickets == 1.0 and not s.localized and not s.win


def test_any_action_where_nothing_should_happen_is_wrong() -> None:
    # Even an action on no ticket's target, that the run's own verdict let pass.
    events = _run(healthy(), *_action(5, ["node-1"], 9.0, verified=True, ticket_id=0))
    s = score(healthy(), "rules", 1, "r1", events, ok=True)
    assert s.wrong_actions == 1 and not s.win


def test_an_action_on_a_target_the_fault_did_not_touch_is_wrong() -> None:
    stray = _action(2, ["node-1"], 8.0, verified=False)  # restarted a healthy node as well
    events = _run(node_kill(), *_fixed(), *stray)
    s = score(node_kill(), "rules", 1, "r1", events, ok=True)
    assert s.mitigated and s.root_cause_ok
    assert s.wrong_actions == 1 and not s.win


def test_the_scenarios_own_remedy_verified_is_right_whatever_else_it_touches() -> None:
    remedy = [_fault(), _opened(1, 7.03), _diagnosed(1, "process_died", 7.1)]
    remedy += _action(1, ["node-2", "node-3"], 7.2, verified=True)
    s = score(node_kill(), "rules", 1, "r1", _run(node_kill(), *remedy), ok=True)
    assert s.wrong_actions == 0 and s.win


def test_the_wrong_root_cause_loses_even_when_the_fix_worked() -> None:
    events = _run(node_kill(), *_fixed(label="process_paused"))
    s = score(node_kill(), "rules", 1, "r1", events, ok=True)
    assert s.mitigated and s.root_cause_ok is False and not s.win


def test_the_none_baseline_is_judged_without_an_agent() -> None:
    cleared = FaultCleared(kind="node_kill", target="node-2", by="scenario", t=12.0)
    resolved = TicketResolved(
        ticket_id=1,
        invariant="node_down",
        target="node-2",
        severity="critical",
        state="resolved",
        occurrences=5,
        message="m",
        by="monitor",
        t=13.25,
    )
    events = _run(node_kill(), _fault(), _opened(1, 7.04), cleared, resolved)
    s = score(node_kill(), NONE, 2, "r2", events, ok=True)
    # No diagnosis to judge; mitigated is the scenario's own clearing showing.
    assert s.root_cause_ok is None and (s.steps, s.tokens) == (0, 0)
    assert (s.mitigated, s.ttm_s, s.ttd_s) == (True, 6.25, 0.04)
    assert s.win
    # Nobody acts, so nothing has to be mitigated for the baseline to pass; the run's own
    # verdict still counts.
    unresolved = score(
        node_kill(), NONE, 3, "r3", _run(node_kill(), _fault(), _opened(1, 7.04)), ok=True
    )
    assert not unresolved.mitigated and unresolved.ttm_s is None and unresolved.win
    failed = _run(node_kill(), _fault(), problems=("expected node_down",))
    assert not score(node_kill(), NONE, 4, "r4", failed, ok=False).win


def test_tickets_and_incidents_count_per_fault() -> None:
    symptom = TicketOpened(
        ticket_id=2,
        invariant="error_rate",
        target="clients",
        severity="warning",
        state="open",
        occurrences=1,
        message="errors",
        incident_id=1,
        t=8.0,
    )
    events = _run(node_kill(), *_fixed()[:2], symptom, *_fixed()[2:])
    s = score(node_kill(), "rules", 1, "r1", events, ok=True)
    assert (s.tickets, s.incidents) == (2.0, 1.0) and s.win


def test_a_run_that_never_finished_says_so() -> None:
    s = score(node_kill(), "rules", 1, "r1", _fixed(), ok=False)
    assert s.problems == ("did not finish",) and s.wall_s == 0.0 and not s.win


def test_the_table_takes_medians_and_p90_of_the_runs_that_have_times() -> None:
    runs = [
        score(node_kill(), "rules", 1, "a", _run(node_kill(), *_fixed()), ok=True),
        score(node_kill(), "rules", 2, "b", _run(node_kill(), _fault()), ok=False),
        score(healthy(), "rules", 1, "c", _run(healthy()), ok=True),
    ]
    calm, kill = table(runs)  # scenarios by name
    assert (calm.scenario, kill.scenario) == (healthy().name, node_kill().name)
    assert (kill.runs, kill.wins, kill.win_rate) == (2, 1, 0.5)
    assert (kill.ttd_median, kill.ttm_median) == (0.03, 3.2)  # the undetected run has no times
    assert (calm.ttd_median, calm.tickets) == (None, 0.0)
    assert Cell.from_dict(kill.to_dict()) == kill
    assert quantile([], 0.5) is None and quantile([1.0, 2.0, 3.0, 10.0], 0.9) == 10.0
