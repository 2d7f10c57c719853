"""One fault, one incident: tickets that show close together and relate (the same target, or one
invariant a consequence of the other) share an incident; unrelated ones do not."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from operator_console.contract import ClusterView
from operator_console.db import TicketRepository
from operator_console.domain import (
    Observation,
    Severity,
    SourceState,
    SourceStatus,
    Violation,
    utcnow,
)
from operator_console.domain.bus import EventBus
from operator_console.monitor import Monitor


class _State:
    def __init__(self, failing: dict[str, list[str]]) -> None:
        self.failing = failing

    def to_dict(self) -> dict[str, Any]:
        return dict(self.failing)

    def summary(self) -> str:
        return str(self.failing)


class _Fails:
    severity = Severity.CRITICAL
    grace = 1
    description = "scripted"

    def __init__(self, name: str, consequence_of: tuple[str, ...] = ()) -> None:
        self.name = name
        self.consequence_of = consequence_of

    def check(self, observation: Observation) -> list[Violation]:
        state = observation.state
        assert isinstance(state, _State)
        return [
            Violation(self.name, t, Severity.CRITICAL, f"{self.name} on {t}")
            for t in state.failing.get(self.name, [])
        ]


class _Subject:
    name = "scripted"

    def __init__(self, frames: list[dict[str, list[str]]]) -> None:
        self.frames = frames
        self.invariants = [
            _Fails("store_dead"),
            _Fails("key_over_limit", consequence_of=("store_dead",)),
            _Fails("disk_full"),
        ]

    async def observe(self) -> Observation:
        return Observation(
            subject=self.name,
            at=utcnow(),
            sources={"s": SourceStatus("s", SourceState.OK)},
            state=_State(self.frames.pop(0)),
        )

    def panel(self, observation: Observation) -> ClusterView:
        return ClusterView(rows=())

    def condition(self, name: str, target: str, observation: Observation) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_consequence_joins_its_cause_and_an_unrelated_fault_does_not(
    engine: Engine,
) -> None:
    frames = [
        {"key_over_limit": ["user:hot"]},  # the symptom shows first
        {"key_over_limit": ["user:hot"], "store_dead": ["store"]},  # then its cause
        {"key_over_limit": ["user:hot"], "store_dead": ["store"], "disk_full": ["node-3"]},
        {
            "key_over_limit": ["user:hot", "user:7"],
            "store_dead": ["store"],
            "disk_full": ["node-3"],
        },
    ]
    tickets = TicketRepository(engine)
    monitor = Monitor(_Subject(frames), tickets, EventBus(), run_id="r1", interval=0.01)
    for _ in range(4):
        await monitor.tick()
    by_target = {(t.invariant, t.target): t for t in tickets.list(run_id="r1")}
    first = by_target[("key_over_limit", "user:hot")]
    assert first.incident_id == first.id
    assert by_target[("store_dead", "store")].incident_id == first.id
    assert by_target[("key_over_limit", "user:7")].incident_id == first.id
    unrelated = by_target[("disk_full", "node-3")]
    assert unrelated.incident_id == unrelated.id != first.id
    assert [t.invariant for t in tickets.incident(first.id)] == [
        "key_over_limit",
        "store_dead",
        "key_over_limit",
    ]
