"""The person rejects the agent's proposal with a reason, then throws the kill switch; the
tickets and audit screens show what happened, and the database agrees."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine
from textual.widgets import DataTable, Input

from operator_console.actions.store import ActionRepository, Controls, Mode
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.records import AuditScreen, TicketsScreen
from operator_console.tui.widgets.approval import ApprovalModal, ReasonModal
from tests.tui.pilot_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _words(lines: list[Any]) -> str:
    """The transcript's text with wrapping undone."""
    return " ".join(" ".join(line.text for line in lines).split())


def _column(table: DataTable[Any], column: str) -> list[str]:
    return [str(table.get_cell(key, column)) for key in table.rows]


async def test_reject_with_a_reason_then_kill_switch(
    console_settings: Settings, console_engine: Engine
) -> None:
    app = OperatorApp(settings=console_settings, engine=console_engine, pace=0.3)
    async with app.run_test(size=(160, 45)) as pilot:
        scenarios: DataTable[Any] = app.screen.query_one("#scenario-table", DataTable)
        scenarios.move_cursor(row=scenarios.get_row_index("ratelimiter-node-kill"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        dashboard = app.screen
        assert isinstance(dashboard, DashboardScreen)
        cluster: DataTable[Any] = dashboard.query_one("#cluster-table", DataTable)
        await wait_for(pilot, lambda: cluster.row_count >= 4, "the cluster rows", timeout=60)
        await pilot.press("right")

        await wait_for(
            pilot, lambda: isinstance(app.screen, ApprovalModal), "the approval dialog", timeout=60
        )
        modal = app.screen
        assert isinstance(modal, ApprovalModal)
        action_id = int(modal.action["action_id"])
        await wait_for(
            pilot,
            lambda: any(button.region.width for button in modal.query("#reject")),
            "the Reject button laid out",
        )
        assert await pilot.click("#reject")
        await wait_for(pilot, lambda: isinstance(app.screen, ReasonModal), "the reason dialog")
        await wait_for(pilot, lambda: bool(app.screen.query(Input)), "the reason input")
        await pilot.press(*"not during the demo")
        await pilot.press("enter")

        actions = ActionRepository(console_engine)
        await wait_for(
            pilot,
            lambda: (row := actions.get(action_id)) is not None and row.state == "rejected",
            "the rejection in the database",
        )
        row = actions.get(action_id)
        assert row is not None
        assert row.decided_by == "person:console"
        assert row.decision_reason == "not during the demo"
        transcript = dashboard.query_one("#transcript")
        await wait_for(
            pilot,
            lambda: "rejected by person:console" in _words(transcript.lines),
            "the rejection in the transcript",
        )

        assert app.screen is dashboard
        await pilot.press("k")
        controls = Controls(console_engine)
        await wait_for(pilot, controls.kill_switch, "the kill switch on")
        assert controls.mode() is Mode.OBSERVE

        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TicketsScreen), "the tickets screen")
        table: DataTable[Any] = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count > 0, "ticket rows")
        assert "node_down" in _column(table, "invariant")
        await pilot.press("escape")
        assert app.screen is dashboard

        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen), "the audit screen")
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count > 0, "audit rows")
        kinds = _column(table, "kind")
        assert "action_rejected" in kinds
        assert "person:console" in _column(table, "actor")
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_code == 0
