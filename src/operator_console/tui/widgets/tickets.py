"""The tickets panel: one keyed row per ticket, from ticket_* events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

COLUMNS = ("id", "state", "invariant", "target", "age", "seen")
CLOSED = frozenset({"resolved", "abandoned"})
# Theme variables per state; a state not named here is drawn dim.
STATE_TONES = {
    "open": "error",
    "investigating": "warning",
    "action_pending": "warning",
    "escalated": "error",
    "mitigated": "warning",
    "resolved": "success",
}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


class TicketsPanel(Vertical):
    """Tickets of this run; ages run on the run's own clock (the time of its latest event)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Tickets"
        self._opened: dict[str, datetime] = {}
        self._resolved: set[str] = set()
        self._now: datetime | None = None

    def compose(self) -> ComposeResult:
        yield DataTable(
            id="tickets-table", cursor_type="none", zebra_stripes=True, show_cursor=False
        )

    def on_mount(self) -> None:
        table: DataTable[Any] = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)

    def _age(self, key: str) -> str:
        opened = self._opened.get(key)
        if opened is None or self._now is None:
            return "-"
        return _age(max(0.0, (self._now - opened).total_seconds()))

    def show(self, fields: dict[str, Any], at: datetime) -> None:
        """Apply a ticket_opened/updated/resolved/escalated event that happened at `at`."""
        key = str(fields.get("ticket_id"))
        self._now = max(self._now, at) if self._now else at
        if key not in self._opened:
            self._opened[key] = _when(fields.get("first_seen")) or at
        table: DataTable[Any] = self.query_one(DataTable)
        state = str(fields.get("state", "?"))
        if state in CLOSED:
            self._resolved.add(key)
        variable = STATE_TONES.get(state)
        colour = self.app.get_css_variables().get(variable, "") if variable else ""
        values: dict[str, str | Text] = {
            "id": f"#{key}",
            "state": Text(state, style=f"bold {colour}".strip() if colour else "dim"),
            "invariant": str(fields.get("invariant", "")),
            "target": str(fields.get("target", "")),
            "age": self._age(key),
            "seen": str(fields.get("occurrences", "")),
        }
        if key not in table.rows:
            table.add_row(*(values[c] for c in COLUMNS), key=key)
            return
        for column in COLUMNS[1:]:
            if str(table.get_cell(key, column)) != str(values[column]):
                table.update_cell(key, column, values[column], update_width=True)

    def tick(self, at: datetime) -> None:
        """Age the open tickets to `at` (the dashboard calls this once a second)."""
        self._now = at
        table: DataTable[Any] = self.query_one(DataTable)
        for key in self._opened:
            if key not in self._resolved and key in table.rows:
                age = self._age(key)
                if str(table.get_cell(key, "age")) != age:
                    table.update_cell(key, "age", age, update_width=True)
