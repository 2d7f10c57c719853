"""Recorded real runs for the console's tests: a node-kill run (its events and rows) and an
eval campaign (its stored rows), replayed into the real app instead of started anew.

Both were recorded by the scripts in `replay/`; see their docstrings."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Table
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from textual.pilot import Pilot

from operator_console.db import create_db_engine, init_db
from operator_console.domain.events import Event, event_from_dict
from operator_console.scenarios.catalog import find_scenario
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen

HERE = Path(__file__).resolve().parent / "replay"
RECORDING = HERE / "node-kill.json"
CAMPAIGN = HERE / "campaign.json"


@cache
def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def recording() -> dict[str, Any]:
    return _read(RECORDING)


def campaign() -> dict[str, Any]:
    return _read(CAMPAIGN)


def events(until: str | None = None, *, including: bool = False) -> list[Event]:
    """The recorded events before the first `until` event (or up to and including it); every
    event without `until`."""
    out: list[Event] = []
    for raw in recording()["events"]:
        event = event_from_dict(raw)
        name = event.name
        if name == until and not including:
            return out
        out.append(event)
        if name == until:
            return out
    if until is not None:
        raise AssertionError(f"the recording has no {until} event")
    return out


def _insert(engine: Engine, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Rows with their stored times into the tables they came from (emptied first)."""
    with engine.begin() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = [dict(row) for row in tables.get(table.name) or []]
            for row in rows:
                for name in _times(table) & row.keys():
                    if row[name] is not None:
                        row[name] = datetime.fromisoformat(row[name])
            if rows:
                conn.execute(table.delete())
                conn.execute(table.insert(), rows)


def _times(table: Table) -> set[str]:
    return {c.name for c in table.columns if isinstance(getattr(c.type, "impl", c.type), DateTime)}


def load_rows(engine: Engine) -> None:
    """Every row of the recorded node-kill run into an empty database."""
    _insert(engine, recording()["tables"])


def load_campaign(engine: Engine) -> str:
    """The recorded campaign and its runs into the database; its id."""
    _insert(engine, campaign()["tables"])
    return str(campaign()["campaign_id"])


def make_app(tmp_path: Path, *, rows: bool = False, evals: bool = False) -> OperatorApp:
    """The real app on its own fresh SQLite database; no key, so the offline brain whatever
    the environment says."""
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
        load_rows(engine)
    if evals:
        load_campaign(engine)
    return OperatorApp(settings=settings, engine=engine)


class ReplayedDashboard(DashboardScreen):
    """The real dashboard, fed a recorded run instead of starting a cluster; its run is the
    recorded one, so its tickets screen lists the recorded rows when they are loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime.run_id = str(recording()["tables"]["runs"][0]["id"])

    def run_scenario(self) -> None:  # type: ignore[override]
        return None


def replay(recorded: list[Event]) -> Callable[[Pilot[None]], Awaitable[None]]:
    """A `run_before` that shows the dashboard and feeds it the events, one at a time."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, OperatorApp)
        screen = ReplayedDashboard(find_scenario(recording()["scenario"]), app.settings, app.engine)
        await app.switch_screen(screen)
        await pilot.pause()
        for event in recorded:
            screen._relay(event)
            await pilot.pause()  # one event at a time, in order, as the bus delivers them
        await pilot.pause()

    return run_before
