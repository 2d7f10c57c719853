"""The cluster panel: one keyed row per target the subject draws, updated in place."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from operator_console.contract import ClusterView, PanelRow

BASE_COLUMNS = (("target", "target"), ("role", "role"), ("state", "state"), ("health", "health"))
TONE_VARIABLE = {"ok": "success", "warning": "warning", "error": "error"}


class ClusterPanel(Vertical):
    """Targets as the last observation saw them; a row an open ticket names is flagged."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Cluster"
        self._tickets: dict[str, str] = {}
        self._columns: tuple[str, ...] = ()
        self._view: ClusterView | None = None
        self._shown: dict[str, dict[str, Text]] = {}

    def compose(self) -> ComposeResult:
        yield DataTable(
            id="cluster-table", cursor_type="none", zebra_stripes=True, show_cursor=False
        )
        yield Static("waiting for the cluster to start...", id="cluster-note")

    def _colour(self, tone: str) -> str:
        variable = TONE_VARIABLE.get(tone)
        return self.app.get_css_variables().get(variable, "") if variable else ""

    def _state_cell(self, row: PanelRow) -> Text:
        if row.tone == "muted":
            return Text(row.state, style="dim")
        return Text(row.state, style=f"bold {self._colour(row.tone)}".strip())

    def _ticket_cell(self, target: str) -> Text:
        label = self._tickets.get(target)
        if not label:
            return Text("")
        return Text(label, style=f"bold {self._colour('warning')}".strip())

    def _ensure_columns(self, view: ClusterView) -> DataTable[Any]:
        table: DataTable[Any] = self.query_one(DataTable)
        columns = (
            *(key for key, _ in BASE_COLUMNS),
            *(c.key for c in view.columns),
            "ticket",
        )
        if columns != self._columns:
            table.clear(columns=True)
            self._shown.clear()
            for key, label in (*BASE_COLUMNS, *((c.key, c.label) for c in view.columns)):
                table.add_column(label, key=key)
            table.add_column("ticket", key="ticket")
            self._columns = columns
        return table

    def _cells(self, row: PanelRow) -> dict[str, Text]:
        cells = {
            "target": Text(row.target),
            "role": Text(row.role),
            "state": self._state_cell(row),
            "health": Text(row.health or "-"),
            "ticket": self._ticket_cell(row.target),
        }
        for key in self._columns:
            if key not in cells:
                cells[key] = Text(row.cells.get(key, ""))
        return cells

    def show_view(self, view: ClusterView) -> None:
        """Apply one observation's panel: keyed rows, updated cell by cell."""
        self._view = view
        table = self._ensure_columns(view)
        keys = {row.target for row in view.rows}
        for row_key in list(table.rows):
            if row_key.value not in keys:
                table.remove_row(row_key)
                self._shown.pop(str(row_key.value), None)
        for row in view.rows:
            cells = self._cells(row)
            if row.target not in table.rows:
                table.add_row(*(cells[c] for c in self._columns), key=row.target)
                self._shown[row.target] = cells
                continue
            shown = self._shown.setdefault(row.target, {})
            for column in self._columns[1:]:
                # Only what changed: each update re-renders the table.
                if shown.get(column) != cells[column]:
                    wider = len(cells[column]) > len(shown.get(column) or "")
                    table.update_cell(row.target, column, cells[column], update_width=wider)
                    shown[column] = cells[column]
        tones = {row.tone for row in view.rows}
        self.set_class("error" in tones, "-down")
        self.set_class("warning" in tones and "error" not in tones, "-paused")
        self.query_one("#cluster-note", Static).update(Text(view.note))

    def flag(self, target: str, label: str | None) -> None:
        """Mark (or clear, with None) the open ticket that names `target`."""
        if label is None:
            self._tickets.pop(target, None)
        else:
            self._tickets[target] = label
        table: DataTable[Any] = self.query_one(DataTable)
        if target in table.rows and "ticket" in self._columns:
            cell = self._ticket_cell(target)
            table.update_cell(target, "ticket", cell, update_width=True)
            self._shown.setdefault(target, {})["ticket"] = cell
