"""Snapshot tests of the console's screens, with clocks and live numbers frozen.

The data is one real run of ratelimiter-node-kill, recorded by `replay/record.py`: its events
are replayed into the real dashboard instead of starting a cluster, and its database rows are
loaded into a fresh SQLite file. So every render is the same on every machine and every run,
and the live app is covered by the pilot tests. After an intended change to a screen:

    python -m pytest tests/tui/test_snapshots.py --snapshot-update

and look at the new SVGs under `__snapshots__/` before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from textual.pilot import Pilot

from operator_console.db import TicketRepository
from operator_console.domain import Severity, Violation
from operator_console.tui.screens.records import TicketsScreen
from operator_console.tui.screens.ticket_detail import TicketDetailScreen
from operator_console.tui.widgets.approval import ApprovalModal
from tests.tui.replaying import events, make_app, replay

SIZE = (160, 45)
SMALL = (100, 30)

Snap = Callable[..., bool]


async def _settled(pilot: Pilot[None]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_picker(snap_compare: Snap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the recorded campaign's figures, and the etcd binary named (so it reads the same
    wherever the suite runs)."""
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", "/usr/bin/etcd")
    assert snap_compare(make_app(tmp_path, evals=True), terminal_size=SIZE, run_before=_settled)


def test_picker_small(snap_compare: Snap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", "/usr/bin/etcd")
    assert snap_compare(make_app(tmp_path, evals=True), terminal_size=SMALL, run_before=_settled)


def test_dashboard_healthy(snap_compare: Snap, tmp_path: Path) -> None:
    recorded = events("fault_countdown")
    assert sum(e.name == "workload_sample" for e in recorded) >= 5
    assert snap_compare(make_app(tmp_path), terminal_size=SIZE, run_before=replay(recorded))


def test_dashboard_mid_incident(snap_compare: Snap, tmp_path: Path) -> None:
    """Node down, its ticket open and diagnosed, before the agent proposes the fix."""
    recorded = events("action_proposed")
    assert any(e.name == "diagnosis_ready" for e in recorded)
    assert snap_compare(make_app(tmp_path), terminal_size=SIZE, run_before=replay(recorded))


def test_dashboard_fixed_small(snap_compare: Snap, tmp_path: Path) -> None:
    """At 100x30, after the fix was verified: the scoreboard says detected, diagnosed, fixed."""
    recorded = events("ticket_resolved", including=True)
    assert snap_compare(make_app(tmp_path), terminal_size=SMALL, run_before=replay(recorded))


def test_approval_modal(snap_compare: Snap, tmp_path: Path) -> None:
    recorded = events("action_proposed", including=True)

    async def run_before(pilot: Pilot[None]) -> None:
        await replay(recorded)(pilot)
        assert isinstance(pilot.app.screen, ApprovalModal)

    assert snap_compare(make_app(tmp_path), terminal_size=SIZE, run_before=run_before)


def test_ticket_detail(snap_compare: Snap, tmp_path: Path) -> None:
    """Opened from the dashboard after the fix was verified: its incident's times come from the
    run's own scoreboard."""
    recorded = events("ticket_resolved", including=True)

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        await replay(recorded)(pilot)
        await pilot.press("t")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, TicketsScreen)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, TicketDetailScreen)

    assert snap_compare(make_app(tmp_path, rows=True), terminal_size=SIZE, run_before=run_before)


def test_tickets_by_incident(snap_compare: Snap, tmp_path: Path) -> None:
    """Tickets grouped by incident, the cause on top: the store's ticket leads the incident its
    symptom opened; an unrelated ticket is its own incident."""
    app = make_app(tmp_path)
    repo = TicketRepository(app.engine)
    causes = {"key_over_limit": ("store_dead",), "slow_answers": ("store_dead",)}

    def open_ticket(invariant: str, target: str, incident: int | None = None) -> int:
        violation = Violation(invariant, target, Severity.CRITICAL, f"{invariant} on {target}")
        first_seen = datetime(2026, 1, 1, tzinfo=UTC)
        row = repo.open(
            violation,
            subject="scripted",
            run_id="run-1",
            observation={},
            first_seen=first_seen,
            incident_id=incident,
        )
        assert row.id is not None
        return row.id

    symptom = open_ticket("key_over_limit", "user:hot")
    open_ticket("store_dead", "store", incident=symptom)
    open_ticket("slow_answers", "node-1", incident=symptom)
    open_ticket("disk_full", "node-3")

    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.app.push_screen(TicketsScreen(app.engine, "run-1", causes=causes))
        await _settled(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def _evals(pilot: Pilot[None]) -> None:
    await pilot.press("e")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_evals_list(snap_compare: Snap, tmp_path: Path) -> None:
    """The stored campaigns, newest first, reached with `e` from the picker."""
    assert snap_compare(make_app(tmp_path, evals=True), terminal_size=SIZE, run_before=_evals)


def test_evals_empty(snap_compare: Snap, tmp_path: Path) -> None:
    """No campaign yet: the screen says how to make one."""
    assert snap_compare(make_app(tmp_path), terminal_size=SIZE, run_before=_evals)


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["160x45", "100x30"])
def test_eval_campaign(snap_compare: Snap, tmp_path: Path, size: tuple[int, int]) -> None:
    """One campaign opened: its table per scenario and brain, and its TTD and TTM charts."""

    async def run_before(pilot: Pilot[None]) -> None:
        await _evals(pilot)
        await pilot.press("enter")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(make_app(tmp_path, evals=True), terminal_size=size, run_before=run_before)


@pytest.fixture(autouse=True)
def _no_claude(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPERATOR_CONSOLE_MODE"):
        monkeypatch.delenv(name, raising=False)
