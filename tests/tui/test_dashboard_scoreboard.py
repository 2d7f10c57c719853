"""The recorded node-kill run replayed into the dashboard: the scoreboard appears with the ticket
and says detected, diagnosed, then fixed and verified after as many seconds as the run's own
timeline; the ticket's detail says the same for its incident."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import Static

from operator_console.domain.events import event_from_dict
from operator_console.scenarios.catalog import find_scenario
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.records import TicketsScreen, TicketTable
from operator_console.tui.screens.ticket_detail import TicketDetailScreen
from operator_console.tui.widgets.scoreboard import ScoreboardPanel
from tests.tui.pilot_helpers import wait_for
from tests.tui.replaying import ReplayedDashboard, make_app, recording


def _raw(name: str) -> dict[str, Any]:
    return next(e for e in recording()["events"] if e["event"] == name)


def _after_fault(name: str) -> str:
    """Seconds from the fault to the first `name` event, as the recorded timeline has them."""
    return f"{_raw(name)['t'] - _raw('fault_injected')['t']:.2f} s"


def _text(widget: Static) -> str:
    return str(widget.render())


def _board(app: OperatorApp) -> str:
    panel = app.screen.query_one(ScoreboardPanel)
    return "\n".join(_text(s) for s in panel.query(Static))


async def test_the_scoreboard_follows_the_incident_and_the_detail_says_the_same(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path, rows=True)
    raw = recording()["events"]
    async with app.run_test(size=(160, 45)) as pilot:
        screen = ReplayedDashboard(find_scenario(recording()["scenario"]), app.settings, app.engine)
        await app.switch_screen(screen)
        await pilot.pause()
        panel = screen.query_one(ScoreboardPanel)
        seen: dict[str, str] = {}
        for item in raw:
            if item["event"] == "run_finished":
                break  # its notification would cover the screen; the run is over anyway
            screen._relay(event_from_dict(item))
            await pilot.pause()
            if item["event"] == "fault_injected":
                assert not panel.display, "no incident yet, no scoreboard"
            elif item["event"] in ("ticket_opened", "diagnosis_ready", "ticket_resolved"):
                seen[item["event"]] = _board(app)
        assert panel.display

        opened = seen["ticket_opened"]
        assert "#1 node_down on node-2" in opened and "fault: node_kill on node-2" in opened
        assert f"detected {_after_fault('ticket_opened')}" in opened
        assert "diagnosing…" in opened and "not fixed yet" in opened
        assert f"diagnosed {_after_fault('diagnosis_ready')}" in seen["diagnosis_ready"]
        verified = _raw("action_verified")
        assert (
            f"fixed and verified after {_after_fault('action_verified')} ({verified['action']})"
            in seen["ticket_resolved"]
        )
        assert "tokens" not in seen["ticket_resolved"]  # the offline brain costs nothing
        assert panel.border_subtitle == "seconds since the fault"

        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TicketsScreen), "the tickets")
        table = app.screen.query_one(TicketTable)
        await wait_for(pilot, lambda: table.row_count == 1, "the ticket's row")
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, TicketDetailScreen) and app.screen.incident is not None,
            "the ticket's incident",
        )
        incident = _text(app.screen.query_one("#detail-incident", Static))
        assert "#1: node_down on node-2" in incident
        assert "the fault: node_kill on node-2" in incident
        assert f"after {_after_fault('ticket_opened')}" in incident
        assert f"after {_after_fault('diagnosis_ready')} by rules" in incident
        assert f"fixed and verified after {_after_fault('action_verified')}" in incident
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)
