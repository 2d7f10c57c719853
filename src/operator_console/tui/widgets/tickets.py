"""The tickets panel: one keyed row per ticket, from ticket_* events."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

COLUMNS = ("id", "state", "invariant", "target", "age", "seen")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


class TicketsPanel(Vertical):
    """Tickets of this run; ages tick once a second."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Tickets"
        self._opened: dict[str, float] = {}
        self._resolved: set[str] = set()

    def compose(self) -> ComposeResult:
        yield DataTable(id="tickets-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table: DataTable[Any] = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.set_interval(1.0, self._tick_ages)

    def show(self, fields: dict[str, Any]) -> None:
        """Apply a ticket_opened/updated/resolved/escalated event."""
        key = str(fields.get("ticket_id"))
        table: DataTable[Any] = self.query_one(DataTable)
        state = str(fields.get("state", "?"))
        if state == "resolved":
            self._resolved.add(key)
        values = {
            "id": f"#{key}",
            "state": state,
            "invariant": str(fields.get("invariant", "")),
            "target": str(fields.get("target", "")),
            "age": _age(time.monotonic() - self._opened.get(key, time.monotonic())),
            "seen": str(fields.get("occurrences", "")),
        }
        if key not in table.rows:
            self._opened[key] = time.monotonic()
            table.add_row(*(values[c] for c in COLUMNS), key=key)
            return
        for column in COLUMNS[1:]:
            table.update_cell(key, column, values[column], update_width=True)

    def _tick_ages(self) -> None:
        if not self.screen.is_active:
            return  # covered by a dialog: ages catch up on the next tick after it closes
        table: DataTable[Any] = self.query_one(DataTable)
        now = time.monotonic()
        for key, opened in self._opened.items():
            if key not in self._resolved and key in table.rows:
                table.update_cell(key, "age", _age(now - opened), update_width=True)
