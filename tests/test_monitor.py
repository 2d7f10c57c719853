"""The monitor's bookkeeping: grace, dedup, auto-resolution, holds and escalation.

The subject here is scripted (a list of observations played back) because these tests are about
what the monitor does with observations, not about reading a cluster; the real observer against
real processes is covered in tests/integration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from operator_console.contract import ClusterView, PanelRow
from operator_console.db import TicketRepository
from operator_console.domain import (
    Observation,
    Severity,
    SourceState,
    SourceStatus,
    TicketState,
    Violation,
    utcnow,
)
from operator_console.domain.bus import EventBus
from operator_console.domain.events import Event, Observed, TicketResolved
from operator_console.monitor import Monitor


@dataclass
class Frame:
    failing: list[str] = field(default_factory=list)  # targets failing "probe"
    sources_ok: bool = True
    raises: Exception | None = None


class _State:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame

    def to_dict(self) -> dict[str, Any]:
        return {"failing": self.frame.failing}

    def summary(self) -> str:
        return ",".join(self.frame.failing)


class ProbeInvariant:
    name = "probe"
    severity = Severity.CRITICAL
    description = "targets answer"
    consequence_of: tuple[str, ...] = ()

    def __init__(self, grace: int) -> None:
        self.grace = grace

    def check(self, observation: Observation) -> list[Violation]:
        state = observation.state
        assert isinstance(state, _State)
        return [Violation("probe", t, Severity.CRITICAL, f"{t} fails") for t in state.frame.failing]


class ScriptedSubject:
    name = "scripted"

    def __init__(self, frames: list[Frame], grace: int = 1) -> None:
        self.frames = frames
        self.invariants = [ProbeInvariant(grace)]

    async def observe(self) -> Observation:
        frame = self.frames.pop(0)
        if frame.raises:
            raise frame.raises
        state = SourceState.OK if frame.sources_ok else SourceState.TIMEOUT
        return Observation(
            subject=self.name,
            at=utcnow(),
            sources={"src": SourceStatus("src", state, "" if frame.sources_ok else "timed out")},
            state=_State(frame),
        )

    def panel(self, observation: Observation) -> ClusterView:
        state = observation.state
        assert isinstance(state, _State)
        return ClusterView(
            rows=tuple(PanelRow(t, "failing", tone="error") for t in state.frame.failing)
        )

    def condition(self, name: str, target: str, observation: Observation) -> None:
        return None

    async def close(self) -> None:
        return None


def _monitor(engine: Engine, frames: list[Frame], **kwargs: Any) -> tuple[Monitor, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.add_listener(events.append)
    grace = kwargs.pop("grace", 1)
    monitor = Monitor(
        ScriptedSubject(frames, grace),
        TicketRepository(engine),
        bus,
        run_id="r1",
        interval=0.01,
        resolve_after=3,
        **kwargs,
    )
    return monitor, events


def names(events: list[Event], *wanted: str) -> list[str]:
    return [e.name for e in events if e.name in wanted]


async def test_ticket_opens_only_after_grace_and_dedups(engine: Engine) -> None:
    frames = [Frame(["a"]), Frame(["a"]), Frame(["a"]), Frame(["a"])]
    monitor, events = _monitor(engine, frames, grace=2)
    await monitor.tick()
    assert TicketRepository(engine).unresolved("r1") == []
    await monitor.tick()
    await monitor.tick()
    await monitor.tick()
    tickets = TicketRepository(engine).unresolved("r1")
    assert [t.dedup_key for t in tickets] == ["probe:a"]
    assert tickets[0].occurrences == 3
    assert names(events, "violation_detected", "ticket_opened") == [
        "violation_detected",
        "ticket_opened",
    ]


async def test_auto_resolves_after_k_clean_ticks_with_sources_ok(engine: Engine) -> None:
    frames = [Frame(["a"]), Frame(), Frame(), Frame()]
    monitor, events = _monitor(engine, frames)
    for _ in range(3):
        await monitor.tick()
    assert TicketRepository(engine).unresolved("r1")  # two clean ticks are not enough
    await monitor.tick()
    assert TicketRepository(engine).unresolved("r1") == []
    resolved = [e for e in events if isinstance(e, TicketResolved)]
    assert resolved and resolved[0].target == "a"


async def test_a_failed_source_restarts_the_clean_count(engine: Engine) -> None:
    frames = [Frame(["a"]), Frame(), Frame(), Frame(sources_ok=False), Frame(), Frame(), Frame()]
    monitor, _ = _monitor(engine, frames)
    for _ in range(6):
        await monitor.tick()
    assert TicketRepository(engine).unresolved("r1"), "a tick with a failed source is not clean"
    await monitor.tick()
    assert TicketRepository(engine).unresolved("r1") == []


async def test_observer_that_raises_is_never_read_as_healthy(engine: Engine) -> None:
    frames = [Frame(["a"])] + [Frame(raises=ConnectionError("refused"))] * 6
    monitor, events = _monitor(engine, frames)
    for _ in range(7):
        await monitor.tick()
    unresolved = TicketRepository(engine).unresolved("r1")
    assert {t.dedup_key for t in unresolved} == {"probe:a", "observation_failed:observer"}
    assert "ticket_resolved" not in [e.name for e in events]


async def test_held_ticket_is_not_auto_resolved(engine: Engine) -> None:
    frames = [Frame(["a"])] + [Frame()] * 5
    monitor, _ = _monitor(engine, frames)
    await monitor.tick()
    repo = TicketRepository(engine)
    ticket = repo.unresolved("r1")[0]
    from sqlmodel import Session

    with Session(engine) as session:
        row = session.get(type(ticket), ticket.id)
        assert row is not None
        row.held_by = "agent"
        session.add(row)
        session.commit()
    for _ in range(5):
        await monitor.tick()
    assert [t.id for t in repo.unresolved("r1")] == [ticket.id]


async def test_stale_failing_ticket_escalates_once(engine: Engine) -> None:
    frames = [Frame(["a"])] * 4
    monitor, events = _monitor(engine, frames, escalate_after_s=0.0)
    for _ in range(4):
        await monitor.tick()
    escalated = [e for e in events if e.name == "ticket_escalated"]
    assert len(escalated) == 1
    ticket = TicketRepository(engine).unresolved("r1")[0]
    assert ticket.state == TicketState.ESCALATED.value
    assert ticket.escalation_reason and "still failing" in ticket.escalation_reason


async def test_run_loop_does_not_overlap_ticks(engine: Engine) -> None:
    import asyncio

    class Slow(ScriptedSubject):
        active = 0
        max_active = 0

        async def observe(self) -> Observation:
            Slow.active += 1
            Slow.max_active = max(Slow.max_active, Slow.active)
            await asyncio.sleep(0.05)
            Slow.active -= 1
            return await super().observe()

    bus = EventBus()
    monitor = Monitor(
        Slow([Frame()] * 100), TicketRepository(engine), bus, run_id="r", interval=0.01
    )
    task = asyncio.create_task(monitor.run())
    # Wait for ticks, not for a fixed time: a loaded machine may be slow to start.
    deadline = asyncio.get_running_loop().time() + 15
    while monitor.ticks < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert monitor.ticks >= 3
    assert Slow.max_active == 1


async def test_each_tick_carries_the_subject_drawn_panel(engine: Engine) -> None:
    monitor, events = _monitor(engine, [Frame(["a", "b"])])
    await monitor.tick()
    (observed,) = [e for e in events if isinstance(e, Observed)]
    view = ClusterView.from_dict(observed.panel)
    assert [(row.target, row.state, row.tone) for row in view.rows] == [
        ("a", "failing", "error"),
        ("b", "failing", "error"),
    ]
