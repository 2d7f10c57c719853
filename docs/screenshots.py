"""Export SVG screenshots of the console's main screens into docs/ (a real run, real cluster).

    python docs/screenshots.py

Picker, dashboard before and during the node-kill incident, the approval dialog and the
resolved ticket's detail, at 160x45.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable

from operator_console.actions.store import Controls, Mode
from operator_console.db import create_db_engine, init_db
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.records import TicketsScreen
from operator_console.tui.screens.ticket_detail import TicketDetailScreen
from operator_console.tui.widgets.approval import ApprovalModal

DOCS = Path(__file__).resolve().parent


async def _wait(pilot: Pilot[None], condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the console did not reach the expected state in time")
        await pilot.pause(0.1)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        engine = create_db_engine(f"sqlite:///{tmp}/console.db")
        init_db(engine)
        Controls(engine).set_mode(Mode.APPROVE, by="docs")
        app = OperatorApp(settings=settings, engine=engine, pace=0.5)
        async with app.run_test(size=(160, 45)) as pilot:
            await pilot.pause(0.5)
            app.save_screenshot("picker.svg", path=str(DOCS))
            table: DataTable[object] = app.screen.query_one("#scenario-table", DataTable)
            table.move_cursor(row=table.get_row_index("ratelimiter-node-kill"))
            await pilot.press("enter")
            await _wait(pilot, lambda: isinstance(app.screen, DashboardScreen))
            await pilot.pause(6)
            app.save_screenshot("dashboard-healthy.svg", path=str(DOCS))
            await pilot.press("space")
            await _wait(pilot, lambda: isinstance(app.screen, ApprovalModal))
            await pilot.pause(1)
            app.save_screenshot("approval.svg", path=str(DOCS))
            await pilot.press("a")  # approve: the executor restarts node-2 and verifies it
            await pilot.pause(2)
            app.save_screenshot("dashboard-incident.svg", path=str(DOCS))
            dashboard = app.screen
            assert isinstance(dashboard, DashboardScreen)
            await _wait(pilot, lambda: not dashboard.open_tickets)  # verified and resolved
            await pilot.press("t")
            await _wait(pilot, lambda: isinstance(app.screen, TicketsScreen))
            await pilot.pause(1)
            await pilot.press("enter")
            await _wait(pilot, lambda: isinstance(app.screen, TicketDetailScreen))
            await pilot.pause(1)
            app.save_screenshot("ticket-detail.svg", path=str(DOCS))
            await pilot.press("q")
    print("wrote", ", ".join(p.name for p in sorted(DOCS.glob("*.svg"))))


if __name__ == "__main__":
    asyncio.run(main())
