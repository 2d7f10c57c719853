"""The console's own work is not the cluster's behaviour: a person opens every screen and dialog
during a healthy run, and no ticket opens (the clients measure from a process of their own)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from operator_console.db import TicketRepository
from operator_console.domain.events import Event, RunFinished, TicketOpened, WorkloadSampled
from operator_console.scenarios import find_scenario
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.records import AuditScreen, TicketsScreen
from operator_console.tui.widgets.approval import ReasonModal
from tests.tui.pilot_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_every_screen_and_dialog_during_a_healthy_run_opens_no_ticket(
    console_settings: Settings, console_engine: Engine
) -> None:
    app = OperatorApp(
        settings=console_settings,
        engine=console_engine,
        pace=0.5,
        scenario=find_scenario("ratelimiter-healthy-burst"),
    )
    events: list[Event] = []
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        dashboard = app.screen
        assert isinstance(dashboard, DashboardScreen)
        dashboard.runtime.bus.add_listener(events.append)
        await wait_for(
            pilot, lambda: sum(isinstance(e, WorkloadSampled) for e in events) >= 2, "traffic"
        )
        for _ in range(3):  # round after round of screen work, through the surge
            await pilot.press("t")
            await wait_for(pilot, lambda: isinstance(app.screen, TicketsScreen), "tickets")
            await pilot.pause(0.5)
            await pilot.press("escape")
            await pilot.press("l")
            await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen), "audit log")
            await pilot.pause(0.5)
            await pilot.press("escape")
            await pilot.press("question_mark")
            await pilot.pause(0.5)
            await pilot.press("question_mark")
            await pilot.press("ctrl+p")
            await pilot.pause(0.5)
            await pilot.press("escape")
            dashboard._ask_reason(0)  # the rejection dialog, as a person would see it
            await wait_for(pilot, lambda: isinstance(app.screen, ReasonModal), "reason dialog")
            await pilot.pause(0.5)
            await pilot.press("escape")
            await pilot.press("m")  # the mode, round the cycle
            await pilot.pause(0.3)
        for _ in range(3):
            await pilot.press("space")  # through the chapters to the end
            await pilot.pause(0.3)
        await wait_for(
            pilot, lambda: any(isinstance(e, RunFinished) for e in events), "run end", 90
        )
        finished = next(e for e in events if isinstance(e, RunFinished))
    assert [(e.invariant, e.target, e.message) for e in events if isinstance(e, TicketOpened)] == []
    assert TicketRepository(console_engine).list() == []
    assert finished.ok, finished.summary
