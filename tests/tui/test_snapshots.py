"""Snapshot tests of the console's screens, with clocks and live numbers frozen.

The data is one real run of ratelimiter-node-kill, recorded by `replay/record.py`: its events
are replayed into the real dashboard instead of starting a cluster, and its database rows are
loaded into a fresh SQLite file. So every render is the same on every machine and every run,
and the live app is covered by the pilot tests. After an intended change to a screen:

    python -m pytest tests/tui/test_snapshots.py --snapshot-update

and look at the new SVGs under `__snapshots__/` before committing them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from textual.pilot import Pilot

from operator_console.db import create_db_engine, init_db
from operator_console.domain.events import Event, event_from_dict
from operator_console.scenarios.catalog import find_scenario
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.ticket_detail import TicketDetailScreen
from operator_console.tui.widgets.approval import ApprovalModal

SIZE = (160, 45)
RECORDING = Path(__file__).resolve().parent / "replay" / "node-kill.json"

Snap = Callable[..., bool]


@cache
def _recording() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDING.read_text())
    return data


def _events(until: str, *, including: bool = False) -> list[Event]:
    """The recorded events before the first `until` event (or up to and including it)."""
    events: list[Event] = []
    for raw in _recording()["events"]:
        event = event_from_dict(raw)
        name = event.name
        if name == until and not including:
            return events
        events.append(event)
        if name == until:
            return events
    raise AssertionError(f"the recording has no {until} event")


def _load_rows(engine: Engine) -> None:
    """Every row of the recorded run, with its stored times, into an empty database."""
    tables = _recording()["tables"]
    with engine.begin() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = tables.get(table.name) or []
            times = {
                c.name
                for c in table.columns
                if isinstance(getattr(c.type, "impl", c.type), DateTime)
            }
            for row in rows:
                for name in times & row.keys():
                    if row[name] is not None:
                        row[name] = datetime.fromisoformat(row[name])
            if rows:
                conn.execute(table.delete())
                conn.execute(table.insert(), rows)


def _app(tmp_path: Path, *, rows: bool = False) -> OperatorApp:
    """The real app on its own database; no key, so the offline brain whatever the env says."""
    settings = Settings(
        data_dir=tmp_path / "data",
        anthropic_api_key=None,
        anthropic_base_url=None,
        brain="auto",
        mode="approve",
    )
    engine = create_db_engine(f"sqlite:///{tmp_path}/console.db")
    init_db(engine)
    if rows:
        _load_rows(engine)
    return OperatorApp(settings=settings, engine=engine)


class ReplayedDashboard(DashboardScreen):
    """The real dashboard, fed a recorded run instead of starting a cluster."""

    def run_scenario(self) -> None:  # type: ignore[override]
        return None


def _replay(events: list[Event]) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, OperatorApp)
        screen = ReplayedDashboard(
            find_scenario(_recording()["scenario"]), app.settings, app.engine
        )
        await app.switch_screen(screen)
        await pilot.pause()
        for event in events:
            screen._relay(event)
            await pilot.pause()  # one event at a time, in order, as the bus delivers them
        await pilot.pause()

    return run_before


def test_picker(snap_compare: Snap, tmp_path: Path) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=SIZE)


def test_dashboard_healthy(snap_compare: Snap, tmp_path: Path) -> None:
    events = _events("fault_countdown")
    assert sum(e.name == "workload_sample" for e in events) >= 5
    assert snap_compare(_app(tmp_path), terminal_size=SIZE, run_before=_replay(events))


def test_dashboard_mid_incident(snap_compare: Snap, tmp_path: Path) -> None:
    """Node down, its ticket open and diagnosed, before the agent proposes the fix."""
    events = _events("action_proposed")
    assert any(e.name == "diagnosis_ready" for e in events)
    assert snap_compare(_app(tmp_path), terminal_size=SIZE, run_before=_replay(events))


def test_approval_modal(snap_compare: Snap, tmp_path: Path) -> None:
    events = _events("action_proposed", including=True)

    async def run_before(pilot: Pilot[None]) -> None:
        await _replay(events)(pilot)
        assert isinstance(pilot.app.screen, ApprovalModal)

    assert snap_compare(_app(tmp_path), terminal_size=SIZE, run_before=run_before)


def test_ticket_detail(snap_compare: Snap, tmp_path: Path) -> None:
    (ticket,) = _recording()["tables"]["tickets"]

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, OperatorApp)
        await app.push_screen(TicketDetailScreen(app.engine, int(ticket["id"])))
        await app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(_app(tmp_path, rows=True), terminal_size=SIZE, run_before=run_before)


@pytest.fixture(autouse=True)
def _no_claude(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPERATOR_CONSOLE_MODE"):
        monkeypatch.delenv(name, raising=False)
