"""The command line: help, listings, and one clear line for every mistake a user can make."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from operator_console.cli import main
from operator_console.db import create_db_engine, init_db
from operator_console.lab.ports import free_ports
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
    ],
)
def test_user_mistakes_end_in_one_clear_line(cli: CliRunner, args: list[str], needle: str) -> None:
    result = cli.invoke(main, args)
    assert result.exit_code != 0
    assert needle in result.output
    assert "Traceback" not in result.output


def test_lab_up_without_its_binary_is_one_line(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subject's own start error (here: no etcd binary) reaches the user as one line that
    names both ways to get one, and no lab state is left behind."""
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", str(tmp_path / "no-etcd"))
    result = cli.invoke(main, ["lab", "up", "--subject", "etcd"])
    assert result.exit_code == 1
    assert "the etcd lab did not start" in result.output
    assert "apt-get install etcd-server" in result.output
    assert "Traceback" not in result.output
    assert not list((tmp_path / "data").glob("**/lab.json"))


def _default_database(tmp_path: Path) -> Path:
    """The console's own database in the test's data folder, as a first run leaves it."""
    path = tmp_path / "data" / "operator-console.db"
    engine = create_db_engine(f"sqlite:///{path}")
    init_db(engine)
    engine.dispose()
    return path


def test_tickets_list_on_empty_database(cli: CliRunner, tmp_path: Path) -> None:
    _default_database(tmp_path)
    result = cli.invoke(main, ["tickets", "list"])
    assert result.exit_code == 0
    assert "no tickets" in result.output


def test_unknown_ticket_is_one_clear_line(cli: CliRunner, tmp_path: Path) -> None:
    _default_database(tmp_path)
    result = cli.invoke(main, ["tickets", "show", "999"])
    assert result.exit_code == 1
    assert result.output == "Error: no ticket 999; see `operator-console tickets list`\n"


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _one_line_and_nothing_written(
    cli: CliRunner, tmp_path: Path, args: list[str], expected: str
) -> None:
    before = _files(tmp_path)
    result = cli.invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: "), result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert _files(tmp_path) == before


READ_COMMANDS = [
    ["tickets", "list"],
    ["tickets", "show", "1"],
    ["actions", "list"],
    ["actions", "show", "1"],
    ["actions", "approve", "1"],
    ["actions", "reject", "1", "--reason", "no"],
    ["audit", "list"],
    ["audit", "show", "1"],
    ["audit", "verify"],
    ["kill-switch", "status"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_reading_a_database_that_does_not_exist_says_so(
    cli: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    path = tmp_path / "nowhere" / "console.db"
    _one_line_and_nothing_written(
        cli,
        tmp_path,
        [*args, "--db", f"sqlite:///{path}"],
        f"no database at {path}; run the console once, or check --db",
    )
    assert not path.parent.exists()


def test_reading_an_empty_postgresql_database_says_there_is_none(
    cli: CliRunner, tmp_path: Path, pg_url: str
) -> None:
    _one_line_and_nothing_written(
        cli, tmp_path, ["tickets", "list", "--db", pg_url], "no database at postgresql+psycopg://"
    )
    engine = create_db_engine(pg_url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []  # nothing was made there
    engine.dispose()


def _bad_urls(tmp_path: Path) -> list[tuple[str, str]]:
    regular = tmp_path / "a-file"
    regular.write_text("not a folder")
    (port,) = free_ports(1)
    return [
        ("sqlite:////proc/x/y.db", "cannot make the folder /proc/x for the database"),
        (f"sqlite:///{regular}/sub/y.db", f"cannot make the folder {regular}/sub"),
        ("nodb://x", "unknown kind of database 'nodb'"),
        ("not a url", "is not a URL; give one like sqlite:///"),
        ("postgresql://ops:hunter2@db:port/x", "is not a URL"),
        (
            f"postgresql://postgres@127.0.0.1:{port}/console",
            f"cannot open database postgresql+psycopg://postgres@127.0.0.1:{port}/console:",
        ),
        ("postgresql+pg8000://postgres@127.0.0.1/console", "driver 'pg8000', which is not"),
    ]


@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("command", [["kill-switch", "on"], ["tickets", "list"]])
def test_a_bad_database_url_is_one_line_and_writes_nothing(
    cli: CliRunner, tmp_path: Path, case: int, command: list[str]
) -> None:
    url, expected = _bad_urls(tmp_path)[case]
    if command[0] == "tickets" and url.startswith("sqlite"):
        expected = "no database at"  # a read never makes a folder, so it never gets that far
    _one_line_and_nothing_written(cli, tmp_path, [*command, "--db", url], expected)
    assert not (tmp_path / "data").exists()


def test_a_password_in_a_bad_url_is_never_shown(cli: CliRunner, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    for url in (
        "postgresql://ops:hunter2@db:port/x",
        f"postgresql://ops:hunter2@127.0.0.1:{port}/x",
    ):
        result = cli.invoke(main, ["kill-switch", "on", "--db", url])
        assert result.exit_code == 1
        assert "hunter2" not in result.output
        assert "ops:***@" in result.output


def test_postgresql_without_its_driver_names_the_extra(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra has
    _one_line_and_nothing_written(
        cli,
        tmp_path,
        ["kill-switch", "on", "--db", "postgresql://postgres@127.0.0.1/console"],
        "PostgreSQL needs the psycopg driver, which cannot be imported here: "
        "pip install 'operator-console[postgres]'",
    )


def test_a_database_from_a_newer_console_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    path = _default_database(tmp_path)
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    for args in (["tickets", "list"], ["kill-switch", "on"]):
        result = cli.invoke(main, args)
        assert result.exit_code == 1
        assert result.output == (
            f"Error: the database at {path} was written by a newer operator-console "
            "(revision 0099); upgrade the console\n"
        )


def test_unreachable_database_is_one_clear_line(cli: CliRunner, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    url = f"postgresql+psycopg://nobody@127.0.0.1:{port}/none"
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


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("OPERATOR_CONSOLE_INTERVAL", "abc", "OPERATOR_CONSOLE_INTERVAL: Input should be a valid"),
        ("OPERATOR_CONSOLE_MODE", "fast", "OPERATOR_CONSOLE_MODE: Input should be 'observe'"),
        (
            "OPERATOR_CONSOLE_MAINTENANCE_WINDOWS",
            "Sunday at noon",
            "is not a maintenance window; write e.g. 'Sat 02:00-04:00 UTC'",
        ),
    ],
)
def test_a_bad_setting_in_the_environment_is_one_line_naming_the_variable(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = cli.invoke(main, ["tickets", "list"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert needle in result.output and "fix or unset it" in result.output
    assert len(result.output.strip().splitlines()) == 1
