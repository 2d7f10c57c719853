"""Driving the real console through the node-kill scenario in approve mode: the person sees the
countdown, the dead node, the ticket and the agent's proposal, approves it, and sees the node come
back and the ticket resolve, on screen and in the database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine
from textual.widgets import DataTable, Static
from textual.worker import WorkerState

from operator_console.actions.store import ActionRepository
from operator_console.db import TicketRepository
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.picker import PickerScreen
from operator_console.tui.widgets.approval import ApprovalModal
from tests.tui.pilot_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _cell(table: DataTable[Any], row: str, column: str) -> str:
    if row not in table.rows:
        return ""
    return str(table.get_cell(row, column))


def _node_down_ticket(table: DataTable[Any]) -> str | None:
    for key in table.rows:
        assert key.value is not None
        if _cell(table, key.value, "invariant") == "node_down":
            if _cell(table, key.value, "target") == "node-2":
                return key.value
    return None


def _select_row(table: DataTable[Any], key: str) -> None:
    table.move_cursor(row=table.get_row_index(key))


async def test_person_approves_the_restart_and_sees_the_node_recover(
    console_settings: Settings, console_engine: Engine
) -> None:
    app = OperatorApp(settings=console_settings, engine=console_engine, pace=0.3)
    async with app.run_test(size=(160, 45)) as pilot:
        picker = app.screen
        assert isinstance(picker, PickerScreen)
        status = str(picker.query_one("#picker-status", Static).render())
        assert "offline rules brain" in status and "approve" in status
        scenarios: DataTable[Any] = picker.query_one("#scenario-table", DataTable)
        _select_row(scenarios, "ratelimiter-node-kill")
        await pilot.press("enter")

        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        dashboard = app.screen
        assert isinstance(dashboard, DashboardScreen)
        cluster: DataTable[Any] = dashboard.query_one("#cluster-table", DataTable)
        tickets: DataTable[Any] = dashboard.query_one("#tickets-table", DataTable)
        countdown = dashboard.query_one("#countdown", Static)
        title = dashboard.query_one("#chapter-title", Static)
        await wait_for(
            pilot, lambda: _cell(cluster, "node-2", "state") == "up", "node-2 up", timeout=60
        )
        assert "Chapter 1/3" in str(title.render())
        running = {w.group for w in app.workers if w.state is WorkerState.RUNNING}
        assert {"scenario", "monitor", "agent", "executor"} <= running, running

        await pilot.press("space")
        await wait_for(
            pilot, lambda: "Injecting" in str(countdown.render()), "the countdown", timeout=30
        )
        assert "node-2" in str(countdown.render())
        await wait_for(
            pilot, lambda: _cell(cluster, "node-2", "state") == "down", "node-2 down", timeout=30
        )
        assert dashboard.query_one("#cluster").has_class("-down")
        await wait_for(
            pilot, lambda: _node_down_ticket(tickets), "a node_down ticket row", timeout=30
        )
        ticket_key = _node_down_ticket(tickets)
        assert ticket_key is not None
        assert "node_down" in _cell(cluster, "node-2", "ticket")

        await wait_for(
            pilot, lambda: isinstance(app.screen, ApprovalModal), "the approval dialog", timeout=30
        )
        modal = app.screen
        assert isinstance(modal, ApprovalModal)
        await wait_for(
            pilot,
            lambda: any(button.region.width for button in modal.query("#approve")),
            "the Approve button laid out",
        )
        await pilot.pause()
        assert modal.action["action"] == "restart_node"
        body = str(modal.query_one("#approval-body", Static).render())
        assert "node-2" in body and "the node's process was killed" in body
        assert await pilot.click("#approve")

        await wait_for(
            pilot, lambda: _cell(cluster, "node-2", "state") == "up", "node-2 back", timeout=60
        )
        await wait_for(
            pilot,
            lambda: _cell(tickets, ticket_key, "state") == "resolved",
            "the ticket resolved",
            timeout=60,
        )
        assert "node_down" not in _cell(cluster, "node-2", "ticket")

        run_id = dashboard.runtime.run_id
        actions = ActionRepository(console_engine).find(run_id=run_id)
        restarts = [a for a in actions if a.name == "restart_node"]
        assert [a.state for a in restarts] == ["verified"]
        assert restarts[0].decided_by == "person:console"
        ticket = TicketRepository(console_engine).get(int(ticket_key))
        assert ticket is not None and ticket.state == "resolved"

        await pilot.press("space")
        await pilot.press("space")
        await wait_for(
            pilot, lambda: "Run finished: OK" in str(countdown.render()), "the verdict", timeout=60
        )
        await pilot.press("q")
