"""Everything on record about one ticket, read once for `tickets show` and the console's detail
screen alike."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from operator_console.actions.store import ActionRepository
from operator_console.audit import AuditLog, AuditRow, redact
from operator_console.db import TicketRepository, TicketRow, TranscriptRepository
from operator_console.db.models import ActionRow, TranscriptRow

ACTION_LIMIT = 100
AUDIT_LIMIT = 500


@dataclass(frozen=True, slots=True)
class TicketDossier:
    """A ticket with its transcript, actions and audit rows, each oldest first."""

    ticket: TicketRow
    transcript: tuple[TranscriptRow, ...]
    actions: tuple[ActionRow, ...]
    audit: tuple[AuditRow, ...]

    @classmethod
    def load(cls, engine: Engine, ticket_id: int) -> TicketDossier | None:
        """None when there is no such ticket; blocking, so a UI calls it from a thread."""
        ticket = TicketRepository(engine).get(ticket_id)
        if ticket is None:
            return None
        transcript = TranscriptRepository(engine).for_ticket(ticket_id)
        # Both repositories list newest first; the newest rows are the ones kept past a limit.
        actions = ActionRepository(engine).find(ticket_id=ticket_id, limit=ACTION_LIMIT)
        audit = AuditLog(engine).list(limit=AUDIT_LIMIT, ticket_id=ticket_id)
        for row in audit:
            # Rows were redacted when written; this covers secrets registered since, as
            # `audit show` does. The rows are detached, so nothing is written back.
            row.payload = redact(row.payload)
        return cls(
            ticket=ticket,
            transcript=tuple(transcript),
            actions=tuple(reversed(actions)),
            audit=tuple(reversed(audit)),
        )
