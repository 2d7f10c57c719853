"""The Evals screen: `e` from the picker or the dashboard lists the stored campaigns newest first;
Enter opens one with its table per scenario and brain and its TTD and TTM charts, all as the
campaign stored them; an empty database says how to make a campaign."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session
from textual.widgets import DataTable, Static

from operator_console.db.evals import EvalRepository
from operator_console.db.models import EvalCampaignRow
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.evals import EvalCampaignScreen, EvalsScreen
from operator_console.tui.screens.picker import PickerScreen
from operator_console.tui.widgets.eval_chart import EvalChart
from tests.tui.pilot_helpers import wait_for
from tests.tui.replaying import campaign, events, make_app, replay


def _text(widget: Static) -> str:
    return str(widget.render())


def _row(table: DataTable[Any], key: str) -> dict[str, str]:
    return {
        str(column.key.value): str(cell)
        for column, cell in zip(table.ordered_columns, table.get_row(key), strict=True)
    }


def _later_campaign(app: OperatorApp, recorded_id: str) -> str:
    """A second campaign, begun after the recorded one, that is still running: one of the
    recorded campaign's runs scored so far, a loss."""
    repo = EvalRepository(app.engine)
    recorded = repo.get(recorded_id)
    assert recorded is not None
    repo.create("later-1", "later", {**recorded.spec, "name": "later", "trials": 3})
    with Session(app.engine) as session:
        row = session.get(EvalCampaignRow, "later-1")
        assert row is not None
        row.started_at = recorded.started_at + timedelta(hours=1)
        session.add(row)
        session.commit()
    first = repo.runs(recorded_id)[0]
    repo.add_run("later-1", {**first.score, "win": False})
    return "later-1"


async def test_the_picker_opens_the_campaigns_and_enter_opens_one(tmp_path: Path) -> None:
    app = make_app(tmp_path, evals=True)
    recorded_id = str(campaign()["campaign_id"])
    later = _later_campaign(app, recorded_id)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PickerScreen)
        footer = {key: b.binding.description for key, b in app.screen.active_bindings.items()}
        assert footer.get("e") == "Evals"
        await pilot.press("e")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, EvalsScreen) and app.screen.summaries is not None,
            "the campaigns",
        )
        screen = app.screen
        assert isinstance(screen, EvalsScreen)
        table: DataTable[Any] = screen.query_one("#evals-table", DataTable)
        assert [str(k.value) for k in table.rows] == [later, recorded_id]  # newest first
        assert not screen.query_one("#evals-empty", Static).display
        running = _row(table, later)
        assert running["state"] == "running"
        assert (running["runs"], running["win rate"]) == ("1", "0% (0/1)")
        assert running["trials"] == "3"
        done = _row(table, recorded_id)
        assert done["state"] == "finished" and done["brains"] == "rules,none"
        assert (done["runs"], done["win rate"]) == ("12", "100% (12/12)")
        assert done["scenarios"].startswith("3: ratelimiter-node-kill, ratelimiter-link-cut")

        await pilot.press("down", "enter")  # the recorded campaign
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, EvalCampaignScreen) and app.screen.cells is not None,
            "the campaign's table",
        )
        detail = app.screen
        assert isinstance(detail, EvalCampaignScreen) and detail.campaign_id == recorded_id
        stored = campaign()["tables"]["eval_campaigns"][0]["cells"]
        cells: DataTable[Any] = detail.query_one("#eval-cells", DataTable)
        assert [str(k.value) for k in cells.rows] == [
            f"{c['scenario']}|{c['brain']}" for c in stored
        ]
        link_cut_none = next(
            c for c in stored if (c["scenario"], c["brain"]) == ("ratelimiter-link-cut", "none")
        )
        row = _row(cells, "ratelimiter-link-cut|none")
        assert row["TTM med"] == f"{link_cut_none['ttm_median']:.2f}"
        assert row["TTD p90"] == f"{link_cut_none['ttd_p90']:.2f}"
        assert row["tickets"] == f"{link_cut_none['tickets']:g}"
        assert _row(cells, "ratelimiter-healthy-burst|rules")["TTD med"] == "-"
        summary = _text(detail.query_one("#eval-summary", Static))
        assert "12 scored, 100% (12/12) won" in summary and "mode auto, seed 7" in summary

        ttd = detail.query_one("#eval-ttd", EvalChart)
        assert ttd.brains == ["rules", "none"]
        assert ttd.values[("ratelimiter-link-cut", "none")] == link_cut_none["ttd_median"]
        assert ttd.values[("ratelimiter-healthy-burst", "rules")] is None
        ttm = detail.query_one("#eval-ttm", EvalChart)
        assert ttm.values[("ratelimiter-node-kill", "rules")] == stored[0]["ttm_median"]
        legend = _text(detail.query_one("#eval-legend", Static))
        assert "━━ rules" in legend and "━━ none" in legend

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, EvalsScreen)
        await pilot.press("up", "enter")  # the running campaign: no table yet, and it says so
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, EvalCampaignScreen) and app.screen.cells is not None,
            "the running campaign",
        )
        running_detail = app.screen
        assert isinstance(running_detail, EvalCampaignScreen)
        assert "running: its table appears when it finishes" in _text(
            running_detail.query_one("#eval-summary", Static)
        )
        assert not running_detail.query_one("#eval-cells", DataTable).row_count
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert isinstance(app.screen, PickerScreen)


async def test_an_empty_database_says_how_to_make_a_campaign(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("e")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, EvalsScreen) and app.screen.summaries == [],
            "the empty list",
        )
        empty = app.screen.query_one("#evals-empty", Static)
        assert empty.display and empty.region.height > 0
        assert "operator-console eval --scenarios" in _text(empty)
        assert not app.screen.query_one("#evals-table", DataTable).display
        assert "enter" not in app.screen.active_bindings  # nothing to open

        # A campaign made meanwhile (by `operator-console eval` elsewhere) shows after `g`.
        EvalRepository(app.engine).create("new-1", "new", {"scenarios": ["x"], "brains": ["none"]})
        await pilot.press("g")
        await wait_for(pilot, lambda: app.screen.query_one("#evals-table", DataTable).display, "g")
        assert not app.screen.query_one("#evals-empty", Static).display


async def test_the_dashboard_opens_the_campaigns_and_goes_back_to_the_run(tmp_path: Path) -> None:
    app = make_app(tmp_path, evals=True)
    async with app.run_test(size=(160, 45)) as pilot:
        await replay(events("fault_countdown"))(pilot)
        dashboard = app.screen
        assert isinstance(dashboard, DashboardScreen)
        footer = {key: b.binding.description for key, b in dashboard.active_bindings.items()}
        assert footer.get("e") == "Evals"
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalsScreen), "the evals screen")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is dashboard
