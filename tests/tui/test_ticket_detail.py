"""A ticket chosen in the tickets table opens in full: header, diagnosis, transcript with its tool
results folded away, actions and audit rows, as the database has them, and again after a reload."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine
from textual.widgets import Collapsible, DataTable, Static

from operator_console.actions.store import ActionRepository
from operator_console.audit import AuditLog
from operator_console.db import TranscriptRepository
from operator_console.db.models import TranscriptRow
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.records import TicketsScreen, TicketTable
from operator_console.tui.screens.ticket_detail import TicketDetailScreen
from tests.dossier_data import BRAIN, ROOT_CAUSE, RUN_ID, TOOL_RESULT_TEXT, seed_ticket
from tests.tui.pilot_helpers import wait_for


def _text(widget: Static) -> str:
    return str(widget.render())


def _cells(table: DataTable[Any], key: str) -> list[str]:
    return [str(cell) for cell in table.get_row(key)]


def _loaded(app: OperatorApp) -> bool:
    screen = app.screen
    return isinstance(screen, TicketDetailScreen) and screen.dossier is not None


@pytest.mark.parametrize("how", ["enter", "click"])
async def test_selecting_a_ticket_opens_everything_on_record_about_it(
    console_settings: Settings, console_engine: Engine, how: str
) -> None:
    ticket_id = seed_ticket(console_engine)
    approved, rejected = sorted(
        a.id for a in ActionRepository(console_engine).find(ticket_id=ticket_id) if a.id
    )
    app = OperatorApp(settings=console_settings, engine=console_engine)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        await app.push_screen(TicketsScreen(console_engine, RUN_ID))
        await wait_for(pilot, lambda: app.screen.query(TicketTable), "the tickets screen")
        table = app.screen.query_one(TicketTable)
        await wait_for(pilot, lambda: str(ticket_id) in table.rows, "the ticket's row")
        footer = {key: b.binding.description for key, b in app.screen.active_bindings.items()}
        assert footer.get("enter") == "Detail"

        if how == "enter":
            await pilot.press("enter")
        else:
            await pilot.click(TicketTable, offset=(2, 1))  # the highlighted first row
        await wait_for(pilot, lambda: _loaded(app), "the ticket's dossier on screen")
        await pilot.pause()  # the mounted steps compose
        screen = app.screen
        assert isinstance(screen, TicketDetailScreen) and screen.ticket_id == ticket_id

        header = _text(screen.query_one("#detail-ticket", Static))
        assert "node_down" in header and "node-2 does not answer /health" in header
        diagnosis = _text(screen.query_one("#detail-diagnosis", Static))
        assert f"root cause        {ROOT_CAUSE}" in diagnosis
        assert "node-2 refuses connections  [toolu_1]" in diagnosis
        assert "store unreachable  because the other nodes answer" in diagnosis
        assert 'restart_node {"node": "node-2"}' in diagnosis

        steps = screen.query("#detail-transcript > .detail-step")
        assert [_text(s).split()[:2] for s in steps] == [
            ["1", "reasoning"],
            ["2", "tool_call"],
            ["4", "tool_call"],
        ]
        assert 'observe({"node": "node-2"})' in _text(steps[1])
        results = list(screen.query("#detail-transcript > Collapsible").results(Collapsible))
        assert [r.collapsed for r in results] == [True, True]
        assert [r.has_class("-error") for r in results] == [False, True]
        assert "ERROR read_logs" in results[1].title
        assert _text(results[0].query_one(".detail-result-text", Static)) == TOOL_RESULT_TEXT

        actions: DataTable[Any] = screen.query_one("#detail-actions", DataTable)
        assert list(actions.rows) == [str(approved), str(rejected)]
        assert _cells(actions, str(approved))[1:5] == [
            "restart_node",
            '{"node": "node-2"}',
            "approved",
            "medium",
        ]
        audit: DataTable[Any] = screen.query_one("#detail-audit", DataTable)
        kinds = [_cells(audit, str(key.value))[2] for key in audit.rows]
        assert kinds == [
            "ticket_opened",
            "diagnosis_ready",
            "action_proposed",
            "action_approved",
            "action_proposed",
            "action_rejected",
        ]
        approval = next(
            key.value for key in audit.rows if _cells(audit, str(key.value))[2] == "action_approved"
        )
        assert _cells(audit, str(approval))[3:5] == ["person:test", str(approved)]

        # What happened since is there after `g`; what was open stays open.
        results[0].collapsed = False
        TranscriptRepository(console_engine).append(
            TranscriptRow(ticket_id=ticket_id, seq=6, brain=BRAIN, kind="reasoning", text="done")
        )
        AuditLog(console_engine).append(
            "ticket_resolved", actor="monitor", run_id=RUN_ID, ticket_id=ticket_id
        )
        await pilot.press("g")
        await wait_for(pilot, lambda: len(audit.rows) == 7, "the new audit row")
        await wait_for(
            pilot, lambda: len(screen.query("#detail-transcript > .detail-step")) == 4, "step 6"
        )
        await pilot.pause()
        assert results[0].is_attached and not results[0].collapsed
        assert "Transcript (6 steps" in _text(screen.query_one("#detail-transcript-title", Static))

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, TicketsScreen)


async def test_a_ticket_that_is_not_there_says_so(
    console_settings: Settings, console_engine: Engine
) -> None:
    app = OperatorApp(settings=console_settings, engine=console_engine)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        await app.push_screen(TicketDetailScreen(console_engine, 999))
        await wait_for(
            pilot,
            lambda: "no ticket 999" in _text(app.screen.query_one("#detail-ticket", Static)),
            "the missing ticket's message",
        )
