"""The scoreboard: per incident, detected after X s (the fault to its first ticket), diagnosed
after Y s, fixed and verified (or only mitigated) after Z s, and what the brain cost; from a
run's events, or from the database's rows when the events are gone."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from operator_console.db import RunRepository, TicketRepository, create_db_engine, init_db
from operator_console.domain.events import (
    ActionVerified,
    DiagnosisReady,
    Event,
    FaultInjected,
    TicketAbandoned,
    TicketEscalated,
    TicketMitigated,
    TicketOpened,
    TicketResolved,
    TicketUpdated,
    event_from_dict,
)
from operator_console.scenarios.scoreboard import (
    SINCE_FAULT,
    SINCE_FIRST_SEEN,
    SUMMARY_KEY,
    IncidentScore,
    Scoreboard,
    load_incident,
)
from tests.tui.replaying import RECORDING, load_rows

USAGE = {
    "input_tokens": 1200,
    "output_tokens": 300,
    "cache_read_tokens": 500,
    "estimated_cost_usd": 0.0123,
}


def _ticket(
    cls: type[Any], ticket_id: int, t: float, incident: int | None = None, **kw: Any
) -> Any:
    fields = {
        "ticket_id": ticket_id,
        "invariant": kw.pop("invariant", "node_down"),
        "target": kw.pop("target", "node-2"),
        "severity": "critical",
        "state": kw.pop("state", "open"),
        "occurrences": 1,
        "message": "scripted",
        "incident_id": incident if incident is not None else ticket_id,
    }
    return cls(**fields, **kw, t=t)


def _fault(t: float, kind: str = "node_kill", target: str = "node-2") -> FaultInjected:
    return FaultInjected(kind=kind, target=target, params={}, description=kind, t=t)


def _diagnosis(ticket_id: int, t: float, usage: dict[str, Any] | None = None) -> DiagnosisReady:
    return DiagnosisReady(
        ticket_id=ticket_id,
        brain="claude-test",
        summary="s",
        root_cause="r",
        confidence=0.9,
        evidence=[],
        alternatives=[],
        recommended=[],
        usage=usage or {},
        t=t,
    )


def _verified(ticket_id: int, action_id: int, action: str, t: float) -> ActionVerified:
    return ActionVerified(
        action_id=action_id,
        ticket_id=ticket_id,
        action=action,
        params={},
        risk="medium",
        state="verified",
        detail="clear",
        t=t,
    )


def _board(events: list[Event]) -> list[IncidentScore]:
    return Scoreboard.of(events).incidents()


def test_times_count_from_the_fault_to_ticket_diagnosis_and_verified_fix() -> None:
    events: list[Event] = [
        _fault(10.0),
        _ticket(TicketOpened, 1, 10.8),
        # A symptom of the same fault joins its incident.
        _ticket(TicketOpened, 2, 11.5, incident=1, invariant="error_rate", target="clients"),
        _ticket(TicketUpdated, 1, 11.6, state="investigating"),
        _diagnosis(1, 12.0, USAGE),
        _verified(1, 7, "restart_node", 15.0),
        _ticket(TicketResolved, 1, 15.1, state="resolved"),
    ]
    board = Scoreboard.of(events)
    (score,) = board.incidents()
    assert score.tickets == (1, 2) and (score.invariant, score.target) == ("node_down", "node-2")
    assert (score.since, score.fault) == (SINCE_FAULT, "node_kill on node-2")
    assert (score.detected_s, score.diagnosed_s, score.fixed_s) == (0.8, 2.0, 5.0)
    assert score.mitigated_s is None and score.action == "restart_node"
    assert score.state == "fixed" and score.resolved_s is None  # the symptom is still open
    assert (score.brain, score.tokens, score.cost_usd) == ("claude-test", 2000, 0.0123)
    assert board.for_ticket(2) == score

    changed = board.apply(_ticket(TicketResolved, 2, 16.0, state="resolved"))
    assert changed is not None and changed.state == "resolved" and changed.resolved_s == 6.0
    assert IncidentScore.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed


def test_a_verified_mitigation_is_not_a_fix_and_undoing_it_is_not_one_either() -> None:
    board = Scoreboard.of(
        [
            _fault(0.0, "link_latency", "node-1"),
            _ticket(TicketOpened, 1, 1.0, invariant="latency_slo", target="node-1"),
            _diagnosis(1, 2.0),
            _verified(1, 7, "drain_node", 4.0),
            _ticket(TicketMitigated, 1, 4.01, state="mitigated", action_id=7, cause="slow"),
        ]
    )
    (score,) = board.incidents()
    assert (score.fixed_s, score.mitigated_s, score.action) == (None, 4.01, "drain_node")
    assert score.state == "mitigated" and score.tokens == 0

    board.apply(_verified(1, 8, "undrain_node", 20.0))  # the cause cleared; drained back
    board.apply(_ticket(TicketResolved, 1, 20.1, state="resolved"))
    (score,) = board.incidents()
    assert (score.fixed_s, score.mitigated_s, score.resolved_s) == (None, 4.01, 20.1)
    assert score.action == "drain_node" and score.state == "resolved"


def test_without_a_fault_times_count_from_the_first_sighting() -> None:
    (score,) = _board(
        [
            _ticket(TicketOpened, 4, 5.0),
            _diagnosis(4, 6.5),
            _ticket(TicketEscalated, 4, 8.0, state="escalated", reason="no fix", usage=USAGE),
        ]
    )
    assert (score.since, score.fault, score.detected_s) == (SINCE_FIRST_SEEN, None, None)
    assert score.diagnosed_s == 1.5 and score.state == "escalated"
    assert score.tokens == 2000  # the escalation's model call counts too


def test_each_incident_counts_from_the_latest_fault_before_it() -> None:
    events: list[Event] = [
        _fault(0.0, "node_pause", "node-1"),
        _ticket(TicketOpened, 1, 1.25, target="node-1"),
        _fault(30.0, "store_pause", "store"),
        _ticket(TicketOpened, 3, 30.5, invariant="store_unreachable", target="store"),
        _ticket(TicketAbandoned, 3, 40.0, state="abandoned", reason="the run ended"),
    ]
    first, second = _board(events)
    assert (first.fault, first.detected_s, first.state) == ("node_pause on node-1", 1.25, "open")
    assert (second.fault, second.detected_s) == ("store_pause on store", 0.5)
    assert second.state == "abandoned"
    # Events about tickets the board never saw open change nothing.
    assert Scoreboard().apply(_diagnosis(99, 1.0)) is None


def _recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDING.read_text())
    return data


def _first(raw: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in raw if e["event"] == name)


def test_the_recorded_run_scores_as_its_timeline_says() -> None:
    raw = _recorded()["events"]
    (score,) = Scoreboard.of(event_from_dict(e) for e in raw).incidents()
    fault = _first(raw, "fault_injected")["t"]
    assert score.detected_s == pytest.approx(_first(raw, "ticket_opened")["t"] - fault, abs=1e-3)
    assert score.diagnosed_s == pytest.approx(_first(raw, "diagnosis_ready")["t"] - fault, abs=1e-3)
    assert score.fixed_s == pytest.approx(_first(raw, "action_verified")["t"] - fault, abs=1e-3)
    assert score.action == _first(raw, "action_verified")["action"]
    assert score.state == "resolved" and score.brain == "rules" and score.tokens == 0


def test_load_incident_reads_the_rows_or_the_times_the_run_stored(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    init_db(engine)
    load_rows(engine)
    tables = _recorded()["tables"]
    (row,) = tables["tickets"]
    ticket = TicketRepository(engine).get(int(row["id"]))
    assert ticket is not None

    # From the rows: counted from the ticket's first sighting (the fault is not in them).
    tickets, score = load_incident(engine, ticket)
    assert [t.id for t in tickets] == [ticket.id]
    first_seen = datetime.fromisoformat(row["first_seen"])
    diagnosed = next(a for a in tables["audit"] if a["kind"] == "diagnosis_ready")
    (action,) = tables["actions"]
    assert score.since == SINCE_FIRST_SEEN and score.detected_s is None
    assert score.diagnosed_s == pytest.approx(
        (datetime.fromisoformat(diagnosed["at"]) - first_seen).total_seconds(), abs=1e-3
    )
    assert score.fixed_s == pytest.approx(
        (datetime.fromisoformat(action["finished_at"]) - first_seen).total_seconds(), abs=1e-3
    )
    assert (score.action, score.state) == (action["name"], "resolved")

    # A finished run stored the live figures in its summary: those are the ones shown.
    live = Scoreboard.of(event_from_dict(e) for e in _recorded()["events"]).incidents()
    run_id = str(tables["runs"][0]["id"])
    RunRepository(engine).finish(
        run_id, ok=True, summary={SUMMARY_KEY: [s.to_dict() for s in live]}
    )
    stored_tickets, stored = load_incident(engine, ticket)
    assert [t.id for t in stored_tickets] == [ticket.id]
    assert stored == live[0] and stored.since == SINCE_FAULT and stored.detected_s is not None
