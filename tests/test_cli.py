"""The command line: help, listings, and one clear line for every mistake a user can make."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from operator_console.cli import main
from operator_console.db import create_db_engine, init_db
from tests.dossier_data import ROOT_CAUSE, seed_ticket


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


def test_tickets_show_prints_diagnosis_transcript_actions_and_audit_rows(
    cli: CliRunner, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'show.db'}"
    engine = create_db_engine(url)
    init_db(engine)
    ticket_id = seed_ticket(engine)

    result = cli.invoke(main, ["tickets", "show", str(ticket_id), "--db", url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "diagnosis (brain rules, confidence 0.9):" in lines
    assert f"  root cause   {ROOT_CAUSE}" in lines
    assert "    5 tool_result ERROR unknown node 'node-9'" in lines
    assert 'action 1: restart_node {"node": "node-2"} [approved] risk medium' in lines
    audit = lines[lines.index("audit (6 rows):") + 1 :]
    assert [line.split()[3:] for line in audit] == [
        ["ticket_opened", "monitor"],
        ["diagnosis_ready", "agent:rules"],
        ["action_proposed", "agent:rules", "action", "1"],
        ["action_approved", "person:test", "action", "1"],
        ["action_proposed", "agent:rules", "action", "2"],
        ["action_rejected", "person:test", "action", "2"],
    ]
    assert re.fullmatch(
        r" +4 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d action_approved +person:test +action 1", audit[3]
    )

    shown = cli.invoke(main, ["tickets", "show", str(ticket_id), "--db", url, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["diagnosis"]["root_cause"] == ROOT_CAUSE
    assert [s["seq"] for s in data["transcript"]] == [1, 2, 3, 4, 5]
    assert [a["state"] for a in data["actions"]] == ["rejected", "approved"]  # newest first
    assert [a["kind"] for a in data["audit"]][:2] == ["action_rejected", "action_proposed"]
    assert {a["ticket_id"] for a in data["audit"]} == {ticket_id}
    assert len(data["audit"]) == 6
