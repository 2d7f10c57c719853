"""The tickets screen groups a run's tickets by incident: an incident column, the newest incident
first, each incident's cause on top (by the subject's invariants) and its symptoms under it, kept
so when a reload brings a new symptom; the ticket detail lists the other tickets of its incident."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from textual.widgets import DataTable, Static

from operator_console.db import TicketRepository
from operator_console.domain import Severity, Violation, utcnow
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.records import TicketsScreen, TicketTable
from operator_console.tui.screens.ticket_detail import TicketDetailScreen
from tests.tui.pilot_helpers import wait_for

RUN_ID = "run-incidents"
CAUSES = {"key_over_limit": ("store_dead",), "slow_answers": ("store_dead",)}


def _open(engine: Engine, invariant: str, target: str, incident: int | None = None) -> int:
    row = TicketRepository(engine).open(
        Violation(invariant, target, Severity.CRITICAL, f"{invariant} on {target}"),
        subject="scripted",
        run_id=RUN_ID,
        observation={},
        first_seen=utcnow() - timedelta(seconds=5),
        incident_id=incident,
    )
    assert row.id is not None
    return row.id


def _column(table: DataTable[Any], column: str) -> list[str]:
    return [str(table.get_cell(row.key, column)) for row in table.ordered_rows]


async def test_tickets_are_grouped_by_incident_with_the_cause_on_top(
    console_settings: Settings, console_engine: Engine
) -> None:
    # The symptom showed first; the store's ticket (its cause) joined the incident it named.
    symptom = _open(console_engine, "key_over_limit", "user:hot")
    cause = _open(console_engine, "store_dead", "store", incident=symptom)
    other = _open(console_engine, "disk_full", "node-3")
    app = OperatorApp(settings=console_settings, engine=console_engine)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        await app.push_screen(TicketsScreen(console_engine, RUN_ID, causes=CAUSES))
        await wait_for(pilot, lambda: app.screen.query(TicketTable), "the tickets screen")
        table = app.screen.query_one(TicketTable)
        await wait_for(pilot, lambda: table.row_count == 3, "three tickets")
        assert _column(table, "id") == [f"#{other}", f"#{cause}", f"#{symptom}"]
        assert _column(table, "incident") == [
            f"#{other}",
            f"#{symptom} (2 tickets)",
            f" └ #{symptom}",
        ]

        # Another symptom of the same fault: after a reload it sits in its incident, not last.
        late = _open(console_engine, "slow_answers", "node-1", incident=symptom)
        newest = _open(console_engine, "disk_full", "node-1")
        await pilot.press("g")
        await wait_for(pilot, lambda: table.row_count == 5, "the new tickets")
        assert _column(table, "id") == [f"#{n}" for n in (newest, other, cause, symptom, late)]
        assert _column(table, "incident")[2:] == [
            f"#{symptom} (3 tickets)",
            f" └ #{symptom}",
            f" └ #{symptom}",
        ]

        await pilot.press("down", "down", "down", "enter")  # the first symptom
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, TicketDetailScreen) and app.screen.incident is not None,
            "the ticket's incident",
        )
        screen = app.screen
        assert isinstance(screen, TicketDetailScreen) and screen.ticket_id == symptom
        assert [t.id for t in screen.incident_tickets] == [cause, symptom, late]
        text = str(screen.query_one("#detail-incident", Static).render())
        assert f"tickets (3)       #{cause} store_dead on store open  (the cause)" in text
        assert f"#{symptom} key_over_limit on user:hot open  (this ticket)" in text
        assert f"#{late} slow_answers on node-1 open" in text
        assert "disk_full" not in text  # another incident's tickets are not this one's


async def test_without_the_subjects_invariants_the_first_ticket_leads(
    console_settings: Settings, console_engine: Engine
) -> None:
    symptom = _open(console_engine, "key_over_limit", "user:hot")
    cause = _open(console_engine, "store_dead", "store", incident=symptom)
    app = OperatorApp(settings=console_settings, engine=console_engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await app.push_screen(TicketsScreen(console_engine, RUN_ID))
        await wait_for(pilot, lambda: app.screen.query(TicketTable), "the tickets screen")
        table = app.screen.query_one(TicketTable)
        await wait_for(pilot, lambda: table.row_count == 2, "two tickets")
        assert _column(table, "id") == [f"#{symptom}", f"#{cause}"]
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, TicketDetailScreen) and app.screen.incident is not None,
            "the ticket's incident",
        )
        text = str(app.screen.query_one("#detail-incident", Static).render())
        assert f"#{symptom} key_over_limit on user:hot open  (first seen, this ticket)" in text
