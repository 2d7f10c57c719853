"""The real console watching a TiKV cluster: its panel shows PD's members (the leader marked)
and every store with PD's state name, heartbeat age, leaders, regions and disk, and the open
ticket beside the store it names.

PD cannot run here: it is the wire-format double of tests/subjects/tikv/pd_server.py (PD
v8.5.7's store-down payloads); no Prometheus, so the workload panel draws PD's counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from textual.widgets import DataTable

from operator_console.actions.store import Controls, Mode
from operator_console.db import create_db_engine, init_db
from operator_console.runtime import RunOptions
from operator_console.scenarios.watch import watch_plan
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from tests.subjects.tikv.pd_server import PDDouble
from tests.tui.pilot_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "OPERATOR_CONSOLE_DB",
        "COLUMNS",
        "LINES",
    ):
        monkeypatch.delenv(name, raising=False)
    return Settings(data_dir=tmp_path / "data", interval=0.5)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    made = create_db_engine(settings.db_url)
    init_db(made)
    Controls(made).set_mode(Mode.OBSERVE, by="test")
    yield made
    made.dispose()


def cell(table: DataTable[Any], row: str, column: str) -> str:
    return str(table.get_cell(row, column)) if row in table.rows else ""


async def test_the_panel_shows_pd_members_and_stores_as_pd_names_them(
    settings: Settings, engine: Engine
) -> None:
    os.environ.pop("COLUMNS", None)
    with PDDouble("pd-0", situation="store-down") as pd:
        pd.advertise({"pd-0": pd.url})
        plan = watch_plan("tikv", {"pd": pd.url})
        app = OperatorApp(
            settings=settings,
            engine=engine,
            watch=(plan, None),
            options=RunOptions(brain="rules", mode=Mode.OBSERVE),
        )
        async with app.run_test(size=(200, 50)) as pilot:
            table: DataTable[Any] = app.screen.query_one("#cluster-table", DataTable)
            await wait_for(pilot, lambda: cell(table, "store-5", "ticket"), "store-5's ticket")
            assert [str(k.value) for k in table.rows] == [
                "pd-0",
                "pd-1",
                "pd-2",
                "store-1",
                "store-4",
                "store-5",
            ]
            assert cell(table, "pd-0", "role") == "pd leader"
            assert cell(table, "pd-1", "role") == "pd"
            assert cell(table, "pd-0", "state") == "healthy"
            assert cell(table, "store-5", "state") == "Down"
            assert cell(table, "store-5", "health") == "heartbeat 35 min ago"
            assert cell(table, "store-5", "leaders") == "0"
            assert cell(table, "store-1", "leaders") == "24"
            assert cell(table, "store-5", "regions") == "45"
            assert cell(table, "store-4", "disk") == "380 GiB / 1 TiB, 60% free"
            assert "45 down peers" in cell(table, "store-5", "notes")
            assert "store_down" in cell(table, "store-5", "ticket")
            await pilot.press("q")
