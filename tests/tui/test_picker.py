"""The picker lists every scenario and says, before anything starts, which brain will speak and
in which mode the agent will act."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine
from textual.widgets import DataTable, Static

from operator_console.actions.store import Controls, Mode
from operator_console.scenarios import list_scenarios
from operator_console.settings import Settings
from operator_console.tui.app import OperatorApp
from operator_console.tui.screens.picker import PickerScreen, brain_preview


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
