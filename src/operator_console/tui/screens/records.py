"""Read-only screens over the database: this run's tickets and the audit log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.text import Text
from sqlalchemy.engine import Engine
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from operator_console.audit import AuditLog
from operator_console.db import TicketRepository
from operator_console.db.tickets import Causes
from operator_console.scenarios.scoreboard import Scoreboard
from operator_console.tui.rows import sync_rows
from operator_console.tui.screens.ticket_detail import TicketDetailScreen

ROW_LIMIT = 200


class RecordsScreen(Screen[None]):
    """A table loaded once in a thread; escape goes back to the dashboard."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("g", "reload", "Reload"),
    ]
    TITLE_TEXT = ""
    COLUMNS: tuple[str, ...] = ()

    def __init__(self, engine: Engine, run_id: str | None) -> None:
        super().__init__()
        self.engine = engine
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self.TITLE_TEXT, classes="records-title")
        yield self.make_table()
        yield Footer()

    def make_table(self) -> DataTable[Any]:
        return DataTable(cursor_type="row", zebra_stripes=True, classes="records-table")

    def on_mount(self) -> None:
        table: DataTable[Any] = self.query_one(DataTable)
        for column in self.COLUMNS:
            table.add_column(column, key=column)
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    ORDER_BY: str | None = None  # a column of unique cells that keeps the rows as fetched

    @work(exclusive=True, group="records", exit_on_error=False)
    async def _load(self) -> None:
        rows = await asyncio.to_thread(self.fetch)
        cells = [(key, tuple(Text(value) for value in values)) for key, values in rows]
        sync_rows(self.query_one(DataTable), self.COLUMNS, cells, order_by=self.ORDER_BY)

    def fetch(self) -> list[tuple[str, tuple[str, ...]]]:
        raise NotImplementedError


class TicketTable(DataTable[Any]):
    """The tickets table; Enter (or a click on the highlighted row) opens the ticket."""

    BINDINGS = [Binding("enter", "select_cursor", "Detail")]


class TicketsScreen(RecordsScreen):
    """Every ticket of this run grouped by incident (the newest first, its cause on top), with
    its diagnosis; a selected row opens the ticket in full."""

    TITLE_TEXT = (
        "Tickets of this run by incident (newest first; its cause, else its first ticket, on top)"
    )
    COLUMNS = (
        "incident",
        "id",
        "state",
        "severity",
        "invariant",
        "target",
        "seen",
        "message",
        "root cause",
    )
    ORDER_BY = "id"

    def __init__(
        self,
        engine: Engine,
        run_id: str | None,
        *,
        scoreboard: Scoreboard | None = None,
        causes: Causes | None = None,
    ) -> None:
        super().__init__(engine, run_id)
        self.scoreboard = scoreboard
        self.causes = causes

    def make_table(self) -> DataTable[Any]:
        return TicketTable(cursor_type="row", zebra_stripes=True, classes="records-table")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            ticket_id = int(event.row_key.value)
            self.app.push_screen(
                TicketDetailScreen(
                    self.engine, ticket_id, scoreboard=self.scoreboard, causes=self.causes
                )
            )

    def fetch(self) -> list[tuple[str, tuple[str, ...]]]:
        groups = TicketRepository(self.engine).by_incident(
            run_id=self.run_id, causes=self.causes, limit=ROW_LIMIT
        )
        rows: list[tuple[str, tuple[str, ...]]] = []
        for members in groups:
            for index, row in enumerate(members):
                incident = row.incident_id or row.id
                if index == 0:
                    label = f"#{incident}" + (
                        f" ({len(members)} tickets)" if len(members) > 1 else ""
                    )
                else:
                    label = f" └ #{incident}"
                rows.append(
                    (
                        str(row.id),
                        (
                            label,
                            f"#{row.id}",
                            row.state,
                            row.severity,
                            row.invariant,
                            row.target,
                            str(row.occurrences),
                            row.message,
                            str((row.diagnosis or {}).get("root_cause", "")),
                        ),
                    )
                )
        return rows


class AuditScreen(RecordsScreen):
    """The audit log of this run: who did what, chained by hash."""

    TITLE_TEXT = "Audit log of this run (newest first)"
    COLUMNS = ("id", "at", "kind", "actor", "ticket", "action", "payload", "hash")

    def fetch(self) -> list[tuple[str, tuple[str, ...]]]:
        rows = AuditLog(self.engine).list(limit=ROW_LIMIT, run_id=self.run_id)
        return [
            (
                str(row.id),
                (
                    str(row.id),
                    f"{row.at:%H:%M:%S}",
                    row.kind,
                    row.actor,
                    f"#{row.ticket_id}" if row.ticket_id else "",
                    str(row.action_id or ""),
                    json.dumps(row.payload, default=str)[:80],
                    row.hash[:12],
                ),
            )
            for row in rows
        ]
