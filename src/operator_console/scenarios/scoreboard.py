"""Per incident, the times a presenter and an SRE ask for: detected after X s (the fault to its
first ticket), diagnosed after Y s, fixed and verified (or mitigated) after Z s, and what the
brain cost. Computed from the run's events as they happen, or from the database's rows; the
console and the headless run only show the result."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from operator_console.actions.store import ActionRepository
from operator_console.audit import AuditLog
from operator_console.db import RunRepository, TicketRepository, TicketRow
from operator_console.db.models import ActionRow, AuditRow
from operator_console.domain.events import (
    ActionVerified,
    DiagnosisReady,
    Event,
    FaultInjected,
    TicketAbandoned,
    TicketEscalated,
    TicketEvent,
    TicketMitigated,
    TicketOpened,
    TicketResolved,
)

# What the times are counted from: the fault the scenario injected, or (with no fault on
# record, as when watching a cluster) the moment the incident was first seen.
SINCE_FAULT = "fault"
SINCE_FIRST_SEEN = "first seen"
SUMMARY_KEY = "incidents"
USAGE_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens")


def usage_tokens(usage: dict[str, Any] | None) -> tuple[int, float]:
    """Tokens and estimated cost of one brain call (zero for the offline brain)."""
    usage = usage or {}
    tokens = sum(int(usage.get(key) or 0) for key in USAGE_TOKENS)
    return tokens, float(usage.get("estimated_cost_usd") or 0.0)


@dataclass(frozen=True, slots=True)
class IncidentScore:
    """One incident's times, in seconds since `since` (the fault, or its first sighting)."""

    incident_id: int
    tickets: tuple[int, ...]  # the incident's tickets, its first (the cause) first
    invariant: str  # of the first ticket
    target: str
    since: str
    fault: str | None  # the fault counted from: "kind on target"
    detected_s: float | None
    diagnosed_s: float | None
    fixed_s: float | None  # an action verified that cured it
    mitigated_s: float | None  # an action verified that hid the symptom (the cause remained)
    resolved_s: float | None  # every ticket of the incident resolved
    action: str | None  # the action that fixed or mitigated it
    state: str  # open, diagnosed, fixed, mitigated, resolved, escalated, abandoned
    brain: str | None
    tokens: int
    cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tickets"] = list(self.tickets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IncidentScore:
        """A score back from a run's stored summary."""

        def number(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            incident_id=int(data.get("incident_id") or 0),
            tickets=tuple(int(t) for t in data.get("tickets") or ()),
            invariant=str(data.get("invariant", "")),
            target=str(data.get("target", "")),
            since=str(data.get("since", SINCE_FIRST_SEEN)),
            fault=text("fault"),
            detected_s=number("detected_s"),
            diagnosed_s=number("diagnosed_s"),
            fixed_s=number("fixed_s"),
            mitigated_s=number("mitigated_s"),
            resolved_s=number("resolved_s"),
            action=text("action"),
            state=str(data.get("state", "open")),
            brain=text("brain"),
            tokens=int(data.get("tokens") or 0),
            cost_usd=float(data.get("cost_usd") or 0.0),
        )


def _after(t: float | None, since: float) -> float | None:
    return None if t is None else round(max(0.0, t - since), 3)


@dataclass(slots=True)
class _Incident:
    incident_id: int
    invariant: str
    target: str
    opened_t: float
    fault: FaultInjected | None
    tickets: list[int] = field(default_factory=list)
    unresolved: set[int] = field(default_factory=set)
    diagnosed_t: float | None = None
    fixed_t: float | None = None
    mitigated_t: float | None = None
    resolved_t: float | None = None
    fix_action_id: int | None = None
    action: str | None = None
    escalated: bool = False
    abandoned: bool = False
    brain: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0

    def score(self) -> IncidentScore:
        since = self.fault.t if self.fault is not None else self.opened_t
        if self.resolved_t is not None:
            state = "resolved"
        elif self.mitigated_t is not None:
            state = "mitigated"
        elif self.fixed_t is not None:
            state = "fixed"
        elif self.abandoned:
            state = "abandoned"
        elif self.escalated:
            state = "escalated"
        elif self.diagnosed_t is not None:
            state = "diagnosed"
        else:
            state = "open"
        return IncidentScore(
            incident_id=self.incident_id,
            tickets=tuple(self.tickets),
            invariant=self.invariant,
            target=self.target,
            since=SINCE_FAULT if self.fault is not None else SINCE_FIRST_SEEN,
            fault=f"{self.fault.kind} on {self.fault.target}" if self.fault else None,
            detected_s=_after(self.opened_t, since) if self.fault is not None else None,
            diagnosed_s=_after(self.diagnosed_t, since),
            fixed_s=_after(self.fixed_t, since),
            mitigated_s=_after(self.mitigated_t, since),
            resolved_s=_after(self.resolved_t, since),
            action=self.action,
            state=state,
            brain=self.brain,
            tokens=self.tokens,
            cost_usd=round(self.cost_usd, 6),
        )


class Scoreboard:
    """The incidents of one run, kept up to date from its events (feed every event in order)."""

    def __init__(self) -> None:
        self._faults: list[FaultInjected] = []
        self._incidents: dict[int, _Incident] = {}
        self._by_ticket: dict[int, int] = {}

    @classmethod
    def of(cls, events: Iterable[Event]) -> Scoreboard:
        board = cls()
        for event in events:
            board.apply(event)
        return board

    def incidents(self) -> list[IncidentScore]:
        """Every incident, in the order it was first seen."""
        return [incident.score() for incident in self._incidents.values()]

    def for_ticket(self, ticket_id: int) -> IncidentScore | None:
        incident_id = self._by_ticket.get(ticket_id)
        return self._incidents[incident_id].score() if incident_id is not None else None

    def apply(self, event: Event) -> IncidentScore | None:
        """Take one event; the incident it changed, if it changed one."""
        if isinstance(event, FaultInjected):
            self._faults.append(event)
            return None
        if isinstance(event, TicketOpened):
            incident = self._open(event)
        elif isinstance(event, TicketEvent | DiagnosisReady | ActionVerified):
            ticket_id = event.ticket_id
            incident_id = self._by_ticket.get(ticket_id) if ticket_id is not None else None
            if incident_id is None:
                return None
            incident = self._incidents[incident_id]
            if not self._update(incident, event):
                return None
        else:
            return None
        return incident.score()

    def _open(self, event: TicketOpened) -> _Incident:
        incident_id = event.incident_id or event.ticket_id
        incident = self._incidents.get(incident_id)
        if incident is None:
            earlier = [f for f in self._faults if f.t <= event.t]
            incident = _Incident(
                incident_id=incident_id,
                invariant=event.invariant,
                target=event.target,
                opened_t=event.t,
                fault=earlier[-1] if earlier else None,
            )
            self._incidents[incident_id] = incident
        if event.ticket_id not in incident.tickets:
            incident.tickets.append(event.ticket_id)
        incident.unresolved.add(event.ticket_id)
        incident.resolved_t = None  # a new symptom: the incident is not over
        self._by_ticket[event.ticket_id] = incident_id
        return incident

    def _update(self, incident: _Incident, event: Event) -> bool:
        match event:
            case DiagnosisReady():
                if incident.diagnosed_t is None:
                    incident.diagnosed_t = event.t
                incident.brain = event.brain
                tokens, cost = usage_tokens(event.usage)
                incident.tokens += tokens
                incident.cost_usd += cost
            case ActionVerified():
                # Undoing a mitigation once its cause cleared is not the fix.
                if incident.fixed_t is None and incident.mitigated_t is None:
                    incident.fixed_t = event.t
                    incident.fix_action_id = event.action_id
                    incident.action = event.action
            case TicketMitigated():
                if incident.mitigated_t is None:
                    incident.mitigated_t = event.t
                    if incident.fix_action_id == event.action_id:
                        incident.fixed_t = None  # that verified action only hid the symptom
            case TicketEscalated():
                incident.escalated = True
                tokens, cost = usage_tokens(event.usage)
                incident.tokens += tokens
                incident.cost_usd += cost
            case TicketResolved():
                incident.unresolved.discard(event.ticket_id)
                if not incident.unresolved:
                    incident.resolved_t = event.t
            case TicketAbandoned():
                incident.unresolved.discard(event.ticket_id)
                incident.abandoned = True
            case _:
                return False
        return True


# --------------------------------------------------------------------- from the database


def _seconds(at: datetime | None, since: datetime) -> float | None:
    return None if at is None else round(max(0.0, (at - since).total_seconds()), 3)


def score_records(
    tickets: Sequence[TicketRow], actions: Sequence[ActionRow], audit: Sequence[AuditRow]
) -> IncidentScore:
    """An incident's times from its rows, counted from when it was first seen (the fault's own
    time is known only to the run's events)."""
    ordered = sorted(tickets, key=lambda t: t.id or 0)
    first = ordered[0]
    since = min(t.first_seen for t in ordered)
    diagnoses = sorted((r for r in audit if r.kind == "diagnosis_ready"), key=lambda r: r.at)
    tokens, cost = 0, 0.0
    for row in audit:
        if row.kind in ("diagnosis_ready", "agent_escalated"):
            more, more_cost = usage_tokens(row.payload.get("usage"))
            tokens += more
            cost += more_cost
    mitigations = {t.mitigation_action_id for t in ordered if t.mitigation_action_id}
    verified = sorted(
        (a for a in actions if a.state == "verified" and a.finished_at is not None),
        key=lambda a: a.finished_at or since,
    )
    mitigation = next((a for a in verified if a.id in mitigations), None)
    fix = None if mitigation is not None else next(iter(verified), None)
    done = [t.resolved_at for t in ordered if t.state == "resolved"]
    resolved_at = max(d for d in done if d is not None) if len(done) == len(ordered) else None
    states = {t.state for t in ordered}
    if resolved_at is not None:
        state = "resolved"
    elif mitigation is not None:
        state = "mitigated"
    elif fix is not None:
        state = "fixed"
    elif "abandoned" in states:
        state = "abandoned"
    elif "escalated" in states:
        state = "escalated"
    elif diagnoses:
        state = "diagnosed"
    else:
        state = "open"
    chosen = mitigation or fix
    return IncidentScore(
        incident_id=first.incident_id or first.id or 0,
        tickets=tuple(t.id for t in ordered if t.id is not None),
        invariant=first.invariant,
        target=first.target,
        since=SINCE_FIRST_SEEN,
        fault=None,
        detected_s=None,
        diagnosed_s=_seconds(diagnoses[0].at, since) if diagnoses else None,
        fixed_s=_seconds(fix.finished_at, since) if fix is not None else None,
        mitigated_s=_seconds(mitigation.finished_at, since) if mitigation is not None else None,
        resolved_s=_seconds(resolved_at, since),
        action=chosen.name if chosen is not None else None,
        state=state,
        brain=first.brain,
        tokens=tokens,
        cost_usd=round(cost, 6),
    )


def load_incident(engine: Engine, ticket: TicketRow) -> tuple[list[TicketRow], IncidentScore]:
    """A ticket's incident: its tickets (the first, its cause, first) and its times, as its run
    stored them when it finished (the same figures the console showed live), else from the
    rows. Blocking, so a UI calls it from a thread."""
    incident_id = ticket.incident_id or ticket.id
    assert incident_id is not None
    tickets = TicketRepository(engine).incident(incident_id) if ticket.incident_id else []
    if not tickets:
        tickets = [ticket]
    run = RunRepository(engine).get(ticket.run_id) if ticket.run_id else None
    for stored in (run.summary.get(SUMMARY_KEY) or []) if run is not None else []:
        if int(stored.get("incident_id") or 0) == incident_id:
            return tickets, IncidentScore.from_dict(stored)
    actions: list[ActionRow] = []
    audit: list[AuditRow] = []
    for row in tickets:
        actions += ActionRepository(engine).find(ticket_id=row.id, limit=100)
        audit += AuditLog(engine).list(limit=500, ticket_id=row.id)
    return tickets, score_records(tickets, actions, audit)
