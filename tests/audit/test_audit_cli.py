"""`operator-console audit`: listing, showing without secrets, and verify's exit status."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from operator_console.audit import AuditLog, register_secret
from operator_console.audit.redact import REDACTED, clear_registered_secrets
from operator_console.cli.audit import audit
from operator_console.db import create_db_engine, init_db


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    clear_registered_secrets()
    yield
    clear_registered_secrets()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("OPERATOR_CONSOLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPERATOR_CONSOLE_DB", raising=False)
    return CliRunner()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def log(db_url: str) -> Iterator[AuditLog]:
    engine = create_db_engine(db_url)
    init_db(engine)
    yield AuditLog(engine)
    engine.dispose()


def _seed(log: AuditLog) -> None:
    log.append(
        "action_proposed", actor="agent:rules", payload={"action": "restart rl-2"}, ticket_id=3
    )
    log.append("approval", actor="person:cli", payload={"approved": True}, ticket_id=3, action_id=1)
    log.append("mode_changed", actor="person:cli", payload={"from": "observe", "to": "approve"})


def test_verify_without_a_database_says_so_and_makes_none(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(audit, ["verify"])
    path = tmp_path / "data" / "operator-console.db"
    assert result.exit_code == 1
    assert result.output == f"Error: no database at {path}; run the console once, or check --db\n"
    assert not (tmp_path / "data").exists()


def test_verify_on_a_fresh_database(cli: CliRunner, log: AuditLog, db_url: str) -> None:
    result = cli.invoke(audit, ["verify", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert result.output == "audit chain ok: 0 rows\n"


def test_verify_ok_counts_rows(cli: CliRunner, log: AuditLog, db_url: str) -> None:
    _seed(log)
    result = cli.invoke(audit, ["verify", "--db", db_url])
    assert result.exit_code == 0
    assert result.output == "audit chain ok: 3 rows\n"


def test_verify_fails_with_one_line_naming_the_row(
    cli: CliRunner, log: AuditLog, db_url: str
) -> None:
    _seed(log)
    with create_db_engine(db_url).begin() as conn:
        conn.execute(text("UPDATE audit SET actor = 'person:mallory' WHERE id = 2"))
    result = cli.invoke(audit, ["verify", "--db", db_url])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "audit chain broken: row 2: hash mismatch (contents changed)"
    ]


def test_list_newest_first_with_filters(cli: CliRunner, log: AuditLog, db_url: str) -> None:
    _seed(log)
    result = cli.invoke(audit, ["list", "--db", db_url])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["ID", "AT"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]

    result = cli.invoke(audit, ["list", "--db", db_url, "--ticket", "3", "--limit", "1", "--json"])
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["id"], r["kind"]) for r in rows] == [(2, "approval")]

    result = cli.invoke(audit, ["list", "--db", db_url, "--kind", "mode_changed", "--json"])
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in rows] == [3]
    assert rows[0]["payload"] == {"from": "observe", "to": "approve"}


def test_list_on_an_empty_log(cli: CliRunner, log: AuditLog, db_url: str) -> None:
    result = cli.invoke(audit, ["list", "--db", db_url])
    assert result.exit_code == 0
    assert result.output == "no audit rows\n"


def test_show_prints_the_row_and_its_hashes(cli: CliRunner, log: AuditLog, db_url: str) -> None:
    _seed(log)
    row = log.get(2)
    assert row is not None
    result = cli.invoke(audit, ["show", "2", "--db", db_url])
    assert result.exit_code == 0
    assert "approval" in result.output
    assert row.hash in result.output
    assert row.prev_hash in result.output
    data = json.loads(cli.invoke(audit, ["show", "2", "--db", db_url, "--json"]).output)
    assert data["hash"] == row.hash
    assert data["payload"] == {"approved": True}


def test_show_unknown_row_is_one_clear_line(cli: CliRunner, log: AuditLog, db_url: str) -> None:
    result = cli.invoke(audit, ["show", "99", "--db", db_url])
    assert result.exit_code == 1
    assert "no audit row 99" in result.output
    assert "Traceback" not in result.output


def test_show_never_prints_a_secret(cli: CliRunner, log: AuditLog, db_url: str) -> None:
    anthropic = "sk-ant-api03-" + secrets.token_urlsafe(30)[:40]
    bearer = "tok" + secrets.token_hex(16)
    url_password = "pw" + secrets.token_hex(8)
    log.append(
        "agent_step",
        actor="agent:claude",
        payload={
            "text": f"key {anthropic}",
            "headers": {"authorization": f"Bearer {bearer}"},
            "dsn": f"postgresql://ops:{url_password}@db/x",
        },
    )
    for args in (["show", "1"], ["show", "1", "--json"], ["list"], ["list", "--json"]):
        result = cli.invoke(audit, [*args, "--db", db_url])
        assert result.exit_code == 0
        for secret in (anthropic, bearer, url_password):
            assert secret not in result.output
    assert REDACTED in cli.invoke(audit, ["show", "1", "--db", db_url]).output


def test_show_redacts_a_secret_registered_after_the_row_was_written(
    cli: CliRunner, log: AuditLog, db_url: str
) -> None:
    later = "later" + secrets.token_hex(12)
    log.append("agent_step", actor="agent:claude", payload={"note": f"value {later}"})
    assert later in cli.invoke(audit, ["show", "1", "--db", db_url]).output
    register_secret(later)
    result = cli.invoke(audit, ["show", "1", "--db", db_url])
    assert later not in result.output
    assert f"value {REDACTED}" in result.output
