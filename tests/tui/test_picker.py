"""The picker lists every scenario and says, before anything starts, which brain will speak and
in which mode the agent will act."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from operator_console.actions.store import Controls, Mode
from operator_console.db.evals import EvalRepository
from operator_console.scenarios import list_scenarios
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.picker import PickerScreen, brain_preview
from tests.tui.replaying import campaign, make_app


async def test_picker_lists_scenarios_with_brain_and_mode(
    console_settings: Settings, console_engine: Engine
) -> None:
    Controls(console_engine).set_mode(Mode.AUTO, by="test")
    app = OperatorApp(settings=console_settings, engine=console_engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PickerScreen)
        table: DataTable[Any] = screen.query_one("#scenario-table", DataTable)
        good, _ = list_scenarios()
        assert {str(k.value) for k in table.rows} == {s.name for s in good}
        node_kill = next(s for s in good if s.name == "ratelimiter-node-kill")
        assert table.get_cell("ratelimiter-node-kill", "description") == node_kill.description
        status = str(screen.query_one("#picker-status", Static).render())
        assert "offline rules brain (no ANTHROPIC_API_KEY set)" in status
        assert "mode: auto" in status

        await pilot.press("question_mark")
        await pilot.pause()
        assert screen.query("HelpPanel")
        await pilot.press("question_mark")
        await pilot.pause()
        assert not screen.query("HelpPanel")
        await pilot.press("q")
    assert app.return_code == 0


def test_brain_preview_follows_the_same_rule_as_choose_brain(
    console_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert brain_preview(console_settings).startswith("offline rules brain")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    with_url = Settings(data_dir=console_settings.data_dir)
    assert brain_preview(with_url) == f"Claude {with_url.model} at http://127.0.0.1:9"
    forced = Settings(data_dir=console_settings.data_dir, brain="rules")
    assert brain_preview(forced).startswith("offline rules brain")


def _etcd_version() -> str:
    done = subprocess.run(["/usr/bin/etcd", "--version"], capture_output=True, text=True)
    match = re.search(r"etcd Version:\s*(\S+)", done.stdout)
    assert match is not None, done.stdout
    return match.group(1)


async def _settled(app: OperatorApp, pilot: Pilot[None]) -> PickerScreen:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, PickerScreen) and screen.extras is not None
    return screen


async def test_picker_shows_each_scenarios_last_rules_eval_and_what_its_lab_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", "/usr/bin/etcd")
    app = make_app(tmp_path, evals=True)
    # A newer campaign ran node-kill again: its figures are the ones shown; the recorded
    # campaign's stay for the scenarios the newer one did not run.
    repo = EvalRepository(app.engine)
    newer = {
        "scenario": "ratelimiter-node-kill",
        "brain": "rules",
        "runs": 3,
        "wins": 2,
        "ttd_median": 1.234,
        "ttm_median": 9.876,
    }
    repo.create("newer", "newer", {"scenarios": ["ratelimiter-node-kill"], "brains": ["rules"]})
    repo.finish("newer", [newer, {**newer, "brain": "none", "wins": 3}], interrupted=False)
    recorded = {
        (c["scenario"], c["brain"]): c for c in campaign()["tables"]["eval_campaigns"][0]["cells"]
    }
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await _settled(app, pilot)
        table: DataTable[Any] = screen.query_one("#scenario-table", DataTable)

        def figures(name: str) -> list[str]:
            return [str(table.get_cell(name, c)) for c in ("win", "TTD", "TTM")]

        assert figures("ratelimiter-node-kill") == ["2/3", "1.23", "9.88"]
        cut = recorded[("ratelimiter-link-cut", "rules")]
        assert figures("ratelimiter-link-cut") == [
            f"{cut['wins']}/{cut['runs']}",
            f"{cut['ttd_median']:.2f}",
            f"{cut['ttm_median']:.2f}",
        ]
        assert figures("ratelimiter-healthy-burst") == ["2/2", "-", "-"]  # no fault, no times
        assert figures("etcd-leader-kill") == ["-", "-", "-"]  # never evaluated

        # The highlighted scenario's lab: the etcd binary and the release it reports.
        about = screen.query_one("#picker-about", Static)
        assert table.cursor_row == 0 and str(table.get_row_at(0)[2]) == "etcd"
        assert f"etcd lab: etcd {_etcd_version()} (/usr/bin/etcd, from" in str(about.render())
        await pilot.press(*["down"] * table.get_row_index("ratelimiter-node-kill"))
        await pilot.pause()
        assert "ratelimiter lab:" in str(about.render())
        assert "valkey-server" in str(about.render())
        # A subject with no lab (it cannot deploy) is named with the command that watches it.
        status = str(screen.query_one("#picker-status", Static).render())
        watch_only = [n for n, r in screen.extras.runtimes.items() if not r.deploys]
        assert watch_only == ["tikv"]
        assert "watch only (no scenarios): tikv — operator-console watch tikv --endpoints FILE" in (
            status
        )


async def test_a_lab_that_cannot_start_here_says_why_in_the_picker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_binary = tmp_path / "etcd"
    not_a_binary.write_text("not etcd")  # not executable
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", str(not_a_binary))
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _settled(app, pilot)
        about = str(screen.query_one("#picker-about", Static).render())
        assert "etcd lab cannot start here:" in about
        assert f"OPERATOR_CONSOLE_ETCD_BIN={not_a_binary} is not an executable file" in about
