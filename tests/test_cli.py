"""The command line: help, listings, and one clear line for every mistake a user can make."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from operator_console.cli import main


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("OPERATOR_CONSOLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPERATOR_CONSOLE_DB", raising=False)
    return CliRunner()


def test_help_lists_the_commands(cli: CliRunner) -> None:
    result = cli.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "scenarios", "tickets", "lab"):
        assert command in result.output


def test_scenarios_list_shows_every_scenario(cli: CliRunner) -> None:
    result = cli.invoke(main, ["scenarios", "list"])
    assert result.exit_code == 0
    assert "ratelimiter-healthy-burst" in result.output
    assert "ratelimiter-node-kill" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nope", "--headless"], "no scenario by that name"),
        (["run", "missing.toml", "--headless"], "missing.toml: no such file"),
        (["run", "ratelimiter-node-kill", "--headless", "--interval", "0"], "--interval"),
        (["run", "ratelimiter-node-kill", "--headless", "--db", "nodb://x"], "database"),
        (["tickets", "show", "999"], "no ticket 999"),
    ],
)
def test_user_mistakes_end_in_one_clear_line(cli: CliRunner, args: list[str], needle: str) -> None:
    result = cli.invoke(main, args)
    assert result.exit_code != 0
    assert needle in result.output
    assert "Traceback" not in result.output


def test_tickets_list_on_empty_database(cli: CliRunner) -> None:
    result = cli.invoke(main, ["tickets", "list"])
    assert result.exit_code == 0
    assert "no tickets" in result.output


def test_unreachable_database_is_one_clear_line(cli: CliRunner, tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    result = cli.invoke(main, ["tickets", "list", "--db", url])
    assert result.exit_code == 1
    assert "cannot open database" in result.output
    assert "Traceback" not in result.output
