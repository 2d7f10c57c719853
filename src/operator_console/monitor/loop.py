"""The monitor: observe, check invariants, keep tickets, auto-resolve only on clean evidence."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from operator_console.contract import ClusterView, Subject
from operator_console.db.models import TicketRow
from operator_console.db.tickets import TicketRepository
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
from operator_console.domain.events import (
    CauseCleared,
    Observed,
    TicketEscalated,
    TicketOpened,
    TicketResolved,
    TicketUpdated,
    ViolationDetected,
)

log = logging.getLogger(__name__)

OBSERVER_FAILED = "observation_failed"
UPDATE_EVERY_S = 5.0
# Symptoms of one fault show within this of each other (grace ticks, windows of client stats).
INCIDENT_WINDOW_S = 30.0


def _id(ticket: TicketRow) -> int:
    assert ticket.id is not None, "a stored ticket has an id"
    return ticket.id


@dataclass(slots=True)
class _Track:
    """Per dedup key: how many ticks in a row it failed, and when it was first seen failing."""

    failing: int = 0
    first_seen: datetime | None = None
    clean: int = 0
    last_update: float = 0.0


@dataclass(slots=True)
class TickResult:
    observation: Observation | None
    violations: list[Violation] = field(default_factory=list)
    opened: list[TicketRow] = field(default_factory=list)
    resolved: list[TicketRow] = field(default_factory=list)
    duration_s: float = 0.0


class _ObserverFailure:
    """Stands in for a subject state when observe() itself raised."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        return {"error": self.reason}

    def summary(self) -> str:
        return f"observation failed: {self.reason}"


class Monitor:
    """Runs one tick at a time; the next tick starts `interval` after the previous one began,
    or right after it ended if it overran, so ticks never overlap."""

    def __init__(
        self,
        subject: Subject,
        tickets: TicketRepository,
        bus: EventBus,
        *,
        run_id: str | None = None,
        interval: float = 1.0,
        resolve_after: int = 3,
        escalate_after_s: float | None = None,
        observe_timeout_s: float | None = None,
    ) -> None:
        self.subject = subject
        self.tickets = tickets
        self.bus = bus
        self.run_id = run_id
        self.interval = interval
        self.resolve_after = resolve_after
        self.escalate_after_s = escalate_after_s
        self.observe_timeout_s = observe_timeout_s or max(5.0, interval * 5)
        self.last_observation: Observation | None = None
        self.ticks = 0
        self._tracks: dict[str, _Track] = {}
        self._grace = {inv.name: max(1, inv.grace) for inv in subject.invariants}
        self._cause_cleared: set[int] = set()
        self._causes = {inv.name: tuple(inv.consequence_of) for inv in subject.invariants}

    async def run(self) -> None:
        """Tick until cancelled; a failing tick is logged and the loop goes on."""
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitor tick failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.interval - elapsed))

    async def _observe(self) -> Observation:
        try:
            async with asyncio.timeout(self.observe_timeout_s):
                return await self.subject.observe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the observer itself broke: that is a failed source
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            state = SourceState.TIMEOUT if isinstance(exc, TimeoutError) else SourceState.ERROR
            return Observation(
                subject=self.subject.name,
                at=utcnow(),
                sources={"observer": SourceStatus("observer", state, reason)},
                state=_ObserverFailure(reason),
            )

    def _check(self, observation: Observation) -> list[Violation]:
        if "observer" in observation.sources and not observation.sources["observer"].ok:
            status = observation.sources["observer"]
            return [
                Violation(
                    OBSERVER_FAILED,
                    "observer",
                    Severity.WARNING,
                    f"observing {self.subject.name} failed: {status.reason}",
                    {"source": status.to_dict()},
                )
            ]
        violations: list[Violation] = []
        for invariant in self.subject.invariants:
            try:
                violations.extend(invariant.check(observation))
            except Exception as exc:
                log.exception("invariant %s failed to evaluate", invariant.name)
                violations.append(
                    Violation(
                        OBSERVER_FAILED,
                        f"invariant:{invariant.name}",
                        Severity.WARNING,
                        f"invariant {invariant.name} could not be evaluated: {exc}",
                    )
                )
        return violations

    async def tick(self) -> TickResult:
        started = time.monotonic()
        observation = await self._observe()
        self.last_observation = observation
        self.ticks += 1
        violations = self._check(observation)
        self.bus.publish(
            Observed(
                subject=observation.subject,
                sources={k: v.to_dict() for k, v in observation.sources.items()},
                state=observation.state.to_dict(),
                violations=[v.dedup_key for v in violations],
                panel=self._panel(observation).to_dict(),
            )
        )
        result = TickResult(observation=observation, violations=violations)
        unresolved = {
            t.dedup_key: t for t in await asyncio.to_thread(self.tickets.unresolved, self.run_id)
        }
        failing_keys = {v.dedup_key for v in violations}

        for violation in violations:
            track = self._tracks.setdefault(violation.dedup_key, _Track())
            track.clean = 0
            track.failing += 1
            if track.failing == 1:
                track.first_seen = observation.at
                self.bus.publish(
                    ViolationDetected(
                        invariant=violation.invariant,
                        target=violation.target,
                        severity=violation.severity.value,
                        message=violation.message,
                    )
                )
            ticket = unresolved.get(violation.dedup_key)
            if ticket is not None and ticket.state == TicketState.MITIGATED.value:
                reason = f"the symptom is back despite the mitigation: {violation.message}"
                escalated = await asyncio.to_thread(self.tickets.escalate, _id(ticket), reason)
                self.bus.publish(TicketEscalated(**escalated.event_fields(), reason=reason))
                continue
            if ticket is not None:
                updated = await asyncio.to_thread(
                    self.tickets.record_occurrence,
                    _id(ticket),
                    violation,
                )
                # Numbers in the message move every tick; tell the timeline at most every
                # UPDATE_EVERY_S, or at once when the violation comes back after clean ticks.
                now = time.monotonic()
                changed = updated.message != ticket.message
                if track.failing == 1 or (changed and now - track.last_update >= UPDATE_EVERY_S):
                    track.last_update = now
                    self.bus.publish(TicketUpdated(**updated.event_fields()))
            elif track.failing >= self._grace.get(violation.invariant, 1):
                first_seen = track.first_seen or observation.at
                mates = [*unresolved.values(), *result.opened]
                ticket = await asyncio.to_thread(
                    self.tickets.open,
                    violation,
                    subject=self.subject.name,
                    run_id=self.run_id,
                    observation=observation.to_dict(),
                    first_seen=first_seen,
                    incident_id=self.incident_for(violation, first_seen, mates),
                )
                track.last_update = time.monotonic()
                result.opened.append(ticket)
                self.bus.publish(TicketOpened(**ticket.event_fields()))

        for key, track in list(self._tracks.items()):
            if key not in failing_keys:
                track.failing = 0
                if key not in unresolved:
                    del self._tracks[key]

        for key, ticket in unresolved.items():
            if key in failing_keys:
                continue
            if ticket.state == TicketState.MITIGATED.value:
                await self._watch_cause(ticket, observation)
                continue
            track = self._tracks.setdefault(key, _Track())
            # A tick with any failed source is not evidence of health: start counting again.
            track.clean = track.clean + 1 if observation.all_sources_ok else 0
            if track.clean >= self.resolve_after and ticket.held_by is None:
                resolved = await asyncio.to_thread(
                    self.tickets.set_state,
                    _id(ticket),
                    TicketState.RESOLVED,
                )
                result.resolved.append(resolved)
                del self._tracks[key]
                self.bus.publish(TicketResolved(**resolved.event_fields(), clean_ticks=track.clean))

        if self.escalate_after_s is not None:
            await self._escalate_stale(unresolved, failing_keys)
        result.duration_s = time.monotonic() - started
        return result

    def related(self, a_invariant: str, a_target: str, b: TicketRow) -> bool:
        """One fault's symptoms: the same target, or one invariant a consequence of the other."""
        return (
            a_target == b.target
            or b.invariant in self._causes.get(a_invariant, ())
            or a_invariant in self._causes.get(b.invariant, ())
        )

    def incident_for(
        self, violation: Violation, first_seen: datetime, mates: list[TicketRow]
    ) -> int | None:
        """The open incident this violation belongs to: one whose tickets first showed within
        INCIDENT_WINDOW_S of it and relate to it; None starts a new incident."""
        for mate in sorted(mates, key=lambda t: t.id or 0):
            close = abs((mate.first_seen - first_seen).total_seconds()) <= INCIDENT_WINDOW_S
            if close and self.related(violation.invariant, violation.target, mate):
                return mate.incident_id or mate.id
        return None

    async def _watch_cause(self, ticket: TicketRow, observation: Observation) -> None:
        """A mitigated ticket: once its cause has stayed clear for `resolve_after` clean
        observations, say so (the agent then undoes the mitigation)."""
        if not ticket.cause or ticket.id in self._cause_cleared:
            return
        condition = self.subject.condition(ticket.cause, ticket.target, observation)
        if condition is None:
            return
        track = self._tracks.setdefault(ticket.dedup_key, _Track())
        clear = not condition.holds and observation.all_sources_ok
        track.clean = track.clean + 1 if clear else 0
        if track.clean >= self.resolve_after:
            self._cause_cleared.add(_id(ticket))
            self.bus.publish(
                CauseCleared(**ticket.event_fields(), cause=ticket.cause, detail=condition.remains)
            )

    async def _escalate_stale(self, unresolved: dict[str, TicketRow], failing: set[str]) -> None:
        now = utcnow()
        for key, ticket in unresolved.items():
            if ticket.held_by is not None or ticket.state in (
                TicketState.ESCALATED.value,
                TicketState.MITIGATED.value,
            ):
                continue
            if key not in failing:
                continue
            age = (now - ticket.first_seen).total_seconds()
            if age >= (self.escalate_after_s or 0):
                reason = f"unattended for {age:.0f} s and still failing"
                escalated = await asyncio.to_thread(
                    self.tickets.set_state,
                    _id(ticket),
                    TicketState.ESCALATED,
                    reason=reason,
                )
                self.bus.publish(TicketEscalated(**escalated.event_fields(), reason=reason))

    def _panel(self, observation: Observation) -> ClusterView:
        """The subject's panel rows; an observer that failed shows why instead."""
        if isinstance(observation.state, _ObserverFailure):
            return ClusterView(rows=(), note=observation.state.summary())
        try:
            return self.subject.panel(observation)
        except Exception as exc:
            log.exception("the subject could not draw its panel")
            return ClusterView(rows=(), note=f"panel unavailable: {type(exc).__name__}: {exc}")
