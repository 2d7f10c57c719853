"""Repositories for runs and tickets; short sessions, safe across processes on one database."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from operator_console.db.claims import claiming, lock_row
from operator_console.db.models import RunRow, TicketRow, TranscriptRow
from operator_console.domain import TicketState, Violation, utcnow

UNRESOLVED = (
    TicketState.OPEN.value,
    TicketState.INVESTIGATING.value,
    TicketState.ACTION_PENDING.value,
    TicketState.ESCALATED.value,
    TicketState.MITIGATED.value,
)


class RunRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, run_id: str, scenario: str, subject: str, run_dir: str) -> RunRow:
        row = RunRow(
            id=run_id,
            scenario=scenario,
            subject=subject,
            run_dir=run_dir,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        with Session(self._engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
        return row

    def finish(self, run_id: str, *, ok: bool, summary: dict[str, Any]) -> None:
        with Session(self._engine) as session:
            row = session.get(RunRow, run_id)
            if row is None:
                return
            row.finished_at = utcnow()
            row.ok = ok
            row.summary = summary
            session.add(row)
            session.commit()

    def get(self, run_id: str) -> RunRow | None:
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(RunRow, run_id)

    def reap_dead(self, alive: Callable[[int], bool]) -> list[tuple[RunRow, list[TicketRow]]]:
        """Runs of this host whose process is gone without finishing: finished as failed, their
        unresolved tickets abandoned. Returns what was reaped."""
        host = socket.gethostname()
        reaped = []
        tickets = TicketRepository(self._engine)
        for run in self.unfinished():
            if run.host != host or run.pid is None or run.pid == os.getpid() or alive(run.pid):
                continue
            reason = f"its console (pid {run.pid}) stopped without finishing run {run.id}"
            abandoned = tickets.abandon_run(run.id, reason)
            self.finish(run.id, ok=False, summary={"problems": [reason]})
            reaped.append((run, abandoned))
        return reaped

    def live(self, alive: Callable[[int], bool]) -> set[str]:
        """Runs not finished whose process still runs (or runs on another host: not ours to
        judge)."""
        host = socket.gethostname()
        return {
            run.id
            for run in self.unfinished()
            # A run from before runs recorded their process (no host) is not live.
            if run.host not in ("", host) or (run.pid is not None and alive(run.pid))
        }

    def unfinished(self) -> list[RunRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            return list(session.exec(select(RunRow).where(col(RunRow.finished_at).is_(None))))


Causes = Mapping[str, Sequence[str]]  # per invariant, the invariants it is a consequence of


def cause_first(members: Sequence[TicketRow], causes: Causes | None = None) -> list[TicketRow]:
    """One incident's tickets, its cause first: a ticket whose invariant is not a consequence of
    another member's (the first such, as they opened), then the rest as they opened."""
    ordered = sorted(members, key=lambda t: t.id or 0)
    present = {t.invariant for t in ordered}
    causes = causes or {}

    def consequence(ticket: TicketRow) -> bool:
        return any(
            cause in present and cause != ticket.invariant
            for cause in causes.get(ticket.invariant, ())
        )

    return sorted(ordered, key=consequence)  # stable: as they opened within each kind


def incident_groups(
    rows: Sequence[TicketRow], causes: Causes | None = None
) -> list[list[TicketRow]]:
    """Tickets grouped by incident, the newest incident first, each with its cause first."""
    groups: dict[int, list[TicketRow]] = {}
    for row in rows:
        groups.setdefault(row.incident_id or row.id or 0, []).append(row)
    return [cause_first(groups[key], causes) for key in sorted(groups, reverse=True)]


class TicketRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def by_incident(
        self, *, run_id: str | None = None, causes: Causes | None = None, limit: int = 200
    ) -> list[list[TicketRow]]:
        """The newest tickets grouped by incident (newest incident first, its cause first)."""
        return incident_groups(self.list(run_id=run_id, limit=limit), causes)

    def unresolved(self, run_id: str | None = None) -> list[TicketRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(TicketRow).where(col(TicketRow.state).in_(UNRESOLVED))
            if run_id is not None:
                query = query.where(TicketRow.run_id == run_id)
            return list(session.exec(query.order_by(col(TicketRow.id))))

    def open(
        self,
        violation: Violation,
        *,
        subject: str,
        run_id: str | None,
        observation: dict[str, Any],
        first_seen: datetime,
        incident_id: int | None = None,
    ) -> TicketRow:
        now = utcnow()
        row = TicketRow(
            run_id=run_id,
            subject=subject,
            dedup_key=violation.dedup_key,
            invariant=violation.invariant,
            target=violation.target,
            severity=violation.severity.value,
            state=TicketState.OPEN.value,
            message=violation.message,
            occurrences=1,
            first_seen=first_seen,
            last_seen=now,
            details=violation.details,
            opened_observation=observation,
            incident_id=incident_id,
        )
        with Session(self._engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
            if row.incident_id is None:  # the first ticket of its incident names it
                row.incident_id = row.id
                session.add(row)
                session.commit()
                session.refresh(row)
        return row

    def incident(self, incident_id: int) -> list[TicketRow]:
        """The tickets of one incident, in the order they opened."""
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(TicketRow).where(TicketRow.incident_id == incident_id)
            return list(session.exec(query.order_by(col(TicketRow.id))))

    def record_occurrence(self, ticket_id: int, violation: Violation) -> TicketRow:
        with Session(self._engine, expire_on_commit=False) as session:
            row = session.get(TicketRow, ticket_id)
            if row is None:
                raise LookupError(f"ticket {ticket_id} not found")
            row.occurrences += 1
            row.last_seen = utcnow()
            row.message = violation.message
            row.severity = violation.severity.value
            row.details = violation.details
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def set_state(
        self, ticket_id: int, state: TicketState, *, reason: str | None = None
    ) -> TicketRow:
        with Session(self._engine, expire_on_commit=False) as session:
            row = session.get(TicketRow, ticket_id)
            if row is None:
                raise LookupError(f"ticket {ticket_id} not found")
            row.state = state.value
            if state is TicketState.RESOLVED:
                row.resolved_at = utcnow()
            if state is TicketState.ESCALATED and reason:
                row.escalation_reason = reason
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def get(self, ticket_id: int) -> TicketRow | None:
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(TicketRow, ticket_id)

    def _update(self, ticket_id: int, *conditions: Any, **values: Any) -> bool:
        with Session(self._engine) as session:
            result = session.execute(
                update(TicketRow)
                .where(col(TicketRow.id) == ticket_id, *conditions)
                .values(**values)
            )
            session.commit()
            return bool(getattr(result, "rowcount", 0) == 1)

    def hold(self, ticket_id: int, *, by: str) -> bool:
        """Take an open ticket for investigation; False if someone holds it or it is closed.

        Several agents (consoles, processes) may try at once: exactly one gets True. The row
        lock waits rather than skips, since the monitor briefly locks a ticket to count an
        occurrence, and a ticket skipped then would be investigated by nobody."""
        with claiming(self._engine) as session:
            row = lock_row(session, TicketRow, ticket_id, skip_locked=False)
            if row is None or row.held_by is not None or row.state != TicketState.OPEN.value:
                return False
            row.held_by = by
            row.brain = by
            row.state = TicketState.INVESTIGATING.value
            session.add(row)
            session.commit()
            return True

    def release(self, ticket_id: int) -> TicketRow | None:
        """Hand the ticket back to the monitor (it may auto-resolve again); the row if it moved."""
        if self._update(
            ticket_id,
            col(TicketRow.state).in_(UNRESOLVED),
            col(TicketRow.state) != TicketState.MITIGATED.value,
            held_by=None,
            state=TicketState.OPEN.value,
        ):
            return self.get(ticket_id)
        return None

    def mark_after_action(self, ticket_id: int, action_id: int) -> None:
        self._update(ticket_id, after_action_id=action_id)

    def mitigate(
        self, ticket_id: int, *, action_id: int, cause: str | None, remains: str
    ) -> TicketRow | None:
        """The symptom is gone through a mitigation; the ticket stays open on its cause."""
        if self._update(
            ticket_id,
            col(TicketRow.state).in_(UNRESOLVED),
            state=TicketState.MITIGATED.value,
            held_by=None,
            mitigation_action_id=action_id,
            cause=cause,
            remains=remains,
        ):
            return self.get(ticket_id)
        return None

    def mitigated(self, run_id: str | None) -> list[TicketRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(TicketRow).where(TicketRow.state == TicketState.MITIGATED.value)
            if run_id is not None:
                query = query.where(TicketRow.run_id == run_id)
            return list(session.exec(query.order_by(col(TicketRow.id))))

    def abandon_run(self, run_id: str, reason: str) -> list[TicketRow]:
        """Every unresolved ticket of a run that ended: abandoned, with the reason."""
        abandoned = []
        for ticket in self.unresolved(run_id):
            assert ticket.id is not None
            if self._update(
                ticket.id,
                col(TicketRow.state).in_(UNRESOLVED),
                state=TicketState.ABANDONED.value,
                held_by=None,
                closed_reason=reason,
            ):
                row = self.get(ticket.id)
                if row is not None:
                    abandoned.append(row)
        return abandoned

    def set_diagnosis(self, ticket_id: int, diagnosis: dict[str, Any]) -> None:
        self._update(ticket_id, diagnosis=diagnosis)

    def resolve_by_agent(self, ticket_id: int) -> TicketRow | None:
        if self._update(
            ticket_id,
            col(TicketRow.state).in_(UNRESOLVED),
            state=TicketState.RESOLVED.value,
            held_by=None,
            resolved_at=utcnow(),
        ):
            return self.get(ticket_id)
        return None

    def escalate(self, ticket_id: int, reason: str) -> TicketRow:
        """A person must look; the monitor may still resolve it if the condition clears."""
        self._update(
            ticket_id,
            col(TicketRow.state).in_(UNRESOLVED),
            state=TicketState.ESCALATED.value,
            escalation_reason=reason,
            held_by=None,
        )
        row = self.get(ticket_id)
        assert row is not None
        return row

    def list(
        self,
        *,
        run_id: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 50,
    ) -> list[TicketRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(TicketRow)
            if run_id is not None:
                query = query.where(TicketRow.run_id == run_id)
            if states:
                query = query.where(col(TicketRow.state).in_(list(states)))
            query = query.order_by(col(TicketRow.id).desc()).limit(limit)
            return list(session.exec(query))


class TranscriptRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def append(self, row: TranscriptRow) -> None:
        with Session(self._engine) as session:
            session.add(row)
            session.commit()

    def for_ticket(self, ticket_id: int) -> list[TranscriptRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            query = (
                select(TranscriptRow)
                .where(TranscriptRow.ticket_id == ticket_id)
                .order_by(col(TranscriptRow.id))
            )
            return list(session.exec(query))
