"""Quitting the console mid-run stops every process the run started."""

from __future__ import annotations

import os
from typing import Any

import psutil
import pytest
from sqlalchemy.engine import Engine
from textual.widgets import DataTable

from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from tests.tui.pilot_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _children() -> set[int]:
    me = psutil.Process(os.getpid())
    return {
        p.pid
        for p in me.children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    }


async def test_q_during_a_run_leaves_no_child_process(
    console_settings: Settings, console_engine: Engine
) -> None:
    before = _children()
    app = OperatorApp(settings=console_settings, engine=console_engine, pace=0.3)
    async with app.run_test(size=(100, 30)) as pilot:
        scenarios: DataTable[Any] = app.screen.query_one("#scenario-table", DataTable)
        scenarios.move_cursor(row=scenarios.get_row_index("ratelimiter-node-kill"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        cluster: DataTable[Any] = app.screen.query_one("#cluster-table", DataTable)
        await wait_for(pilot, lambda: cluster.row_count >= 4, "the cluster rows", timeout=60)
        started = _children() - before
        assert started, "the run should have started the store and the nodes"
        await pilot.press("q")
    assert app.return_code == 0
    left = [p for p in _children() - before]
    survivors = []
    for pid in left:
        try:
            psutil.Process(pid).wait(timeout=5)
        except psutil.NoSuchProcess:
            continue
        except psutil.TimeoutExpired:
            survivors.append(pid)
    assert survivors == [], f"still running after quit: {survivors}"
    assert not any(psutil.pid_exists(pid) and _alive(pid) for pid in started)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
