"""Persistence: SQLModel tables, engine creation, schema migrations and repositories."""

from operator_console.db.engine import DatabaseError, create_db_engine
from operator_console.db.models import RunRow, TicketRow
from operator_console.db.schema import init_db
from operator_console.db.tickets import RunRepository, TicketRepository, TranscriptRepository

__all__ = [
    "DatabaseError",
    "RunRepository",
    "RunRow",
    "TicketRepository",
    "TicketRow",
    "TranscriptRepository",
    "create_db_engine",
    "init_db",
]
