"""`operator-console` with no arguments opens the full-screen app with the CLI's settings."""

from __future__ import annotations

import re
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


def test_nothing_outside_the_tui_imports_textual() -> None:
    package = Path(__file__).resolve().parents[2] / "src" / "operator_console"
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "tui" not in path.relative_to(package).parts
        and any(
            re.match(r"(from|import) textual(\s|\.|$)", line.lstrip())
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []
