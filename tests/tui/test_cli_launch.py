"""`operator-console` with no arguments opens the full-screen app with the CLI's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from operator_console.cli import main
from operator_console.tui.app import OperatorApp


def test_no_arguments_launches_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_CONSOLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPERATOR_CONSOLE_DB", raising=False)
    launched: list[OperatorApp] = []

    def fake_run(self: OperatorApp, *args: Any, **kwargs: Any) -> None:
        launched.append(self)

    monkeypatch.setattr(OperatorApp, "run", fake_run)
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0, result.output
    assert len(launched) == 1
    app = launched[0]
    assert app.settings.data_dir == tmp_path / "data"
    assert str(app.engine.url).endswith("operator-console.db")
    assert (tmp_path / "data" / "logs" / "operator-console.log").exists()


async def test_run_without_headless_opens_the_console_on_that_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run SCENARIO` hands the scenario and its options to the app, which opens its dashboard
    (and quitting at once, mid-start, still stops everything)."""
    from operator_console.actions.store import Mode
    from operator_console.tui.screens.dashboard import DashboardScreen

    monkeypatch.setenv("OPERATOR_CONSOLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPERATOR_CONSOLE_DB", raising=False)
    launched: list[OperatorApp] = []
    monkeypatch.setattr(OperatorApp, "run", lambda self, *a, **k: launched.append(self))
    result = CliRunner().invoke(
        main,
        ["run", "ratelimiter-node-kill", "--mode", "auto", "--brain", "rules", "--pace", "0.5"],
    )
    assert result.exit_code == 0, result.output
    (app,) = launched
    assert app.scenario is not None and app.scenario.name == "ratelimiter-node-kill"
    assert app.options is not None
    assert (app.options.mode, app.options.brain, app.options.agent) == (Mode.AUTO, "rules", True)
    assert app.pace == 0.5
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        assert screen.scenario.name == "ratelimiter-node-kill"
        assert screen.runtime.requested_mode is Mode.AUTO
        await pilot.press("q")
    assert not screen.runtime.deployment
