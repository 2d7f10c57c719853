"""The audit chain: it verifies when untouched, names the row that was edited or removed, and
stays one chain when several processes append at once."""

from __future__ import annotations

import itertools
import multiprocessing
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from operator_console.audit import AuditLog, AuditRow, register_secret
from operator_console.audit import log as audit_log
from operator_console.audit.log import GENESIS_HASH, row_hash
from operator_console.audit.redact import REDACTED, clear_registered_secrets
from operator_console.db import create_db_engine, init_db

WORKERS = 4
ROWS_PER_WORKER = 25


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    clear_registered_secrets()
    yield
    clear_registered_secrets()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{db_path}")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine: Engine) -> AuditLog:
    return AuditLog(engine)


def _fill(log: AuditLog, n: int) -> list[AuditRow]:
    return [
        log.append(
            "agent_step" if i % 3 else "action_proposed",
            actor="agent:rules",
            payload={"step": i, "text": f"looked at node rl-{i % 4}", "nested": {"n": [i, i + 1]}},
            run_id="run-1",
            ticket_id=i % 5 or None,
            action_id=i if i % 7 == 0 else None,
        )
        for i in range(n)
    ]


def _raw(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


# --- a chain that nobody touched -------------------------------------------------------------


def test_empty_log_verifies() -> None:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    result = AuditLog(engine).verify()
    assert result.ok
    assert result.rows == 0
    assert result.first_bad_id is None


def test_fresh_log_with_many_rows_verifies(log: AuditLog) -> None:
    rows = _fill(log, 300)
    result = log.verify()
    assert result.ok, result.reason
    assert result.rows == 300
    assert result.reason == "audit chain ok: 300 rows"
    assert [r.id for r in rows] == list(range(1, 301))


def test_each_row_points_at_the_one_before(log: AuditLog) -> None:
    rows = _fill(log, 5)
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    assert len({r.hash for r in rows}) == 5


def test_stored_times_are_aware_utc(log: AuditLog) -> None:
    row = _fill(log, 1)[0]
    stored = log.get(row.id or 0)
    assert stored is not None
    assert stored.at.tzinfo is not None
    assert stored.at.utcoffset() == timedelta(0)
    assert stored.at == row.at


class _Colour(Enum):
    RED = "red"


def test_payload_with_non_json_types_is_stored_as_hashed(log: AuditLog) -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    payload: dict[Any, Any] = {
        "at": when,
        "colour": _Colour.RED,
        "pair": (1, 2),
        "path": Path("/x"),
        3: "n",
    }
    row = log.append("mode_changed", actor="person:cli", payload=payload)
    assert row.payload == {
        "at": when.isoformat(),
        "colour": "red",
        "pair": [1, 2],
        "path": "/x",
        "3": "n",
    }
    assert log.verify().ok


def test_row_hash_covers_every_field() -> None:
    base: dict[str, Any] = {
        "id": 1,
        "at": datetime(2024, 1, 1, tzinfo=UTC),
        "kind": "approval",
        "actor": "person:cli",
        "run_id": "r",
        "ticket_id": 1,
        "action_id": 2,
        "payload": {"a": 1},
        "prev_hash": GENESIS_HASH,
    }
    changed: dict[str, Any] = {
        "id": 2,
        "at": datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "kind": "approval2",
        "actor": "person:other",
        "run_id": None,
        "ticket_id": None,
        "action_id": 3,
        "payload": {"a": 2},
        "prev_hash": "1" * 64,
    }
    reference = row_hash(**base)
    for field, value in changed.items():
        assert row_hash(**{**base, field: value}) != reference, field


# --- tampering -------------------------------------------------------------------------------

TAMPER = {
    "payload": ("UPDATE audit SET payload = :v WHERE id = :id", '{"step": 6, "text": "nothing"}'),
    "kind": ("UPDATE audit SET kind = :v WHERE id = :id", "approval"),
    "actor": ("UPDATE audit SET actor = :v WHERE id = :id", "person:mallory"),
    "at": ("UPDATE audit SET at = :v WHERE id = :id", "2001-01-01 00:00:00.000000"),
    "ticket_id": ("UPDATE audit SET ticket_id = :v WHERE id = :id", 999),
    "run_id": ("UPDATE audit SET run_id = :v WHERE id = :id", "run-other"),
    "hash": ("UPDATE audit SET hash = :v WHERE id = :id", "f" * 64),
    "prev_hash": ("UPDATE audit SET prev_hash = :v WHERE id = :id", "f" * 64),
}


@pytest.mark.parametrize("field", sorted(TAMPER))
@pytest.mark.parametrize("target", [1, 7, 20])
def test_editing_one_field_of_one_row_names_that_row(
    log: AuditLog, engine: Engine, field: str, target: int
) -> None:
    _fill(log, 20)
    sql, value = TAMPER[field]
    _raw(engine, sql, v=value, id=target)
    result = log.verify()
    assert not result.ok
    assert result.first_bad_id == target
    assert result.reason.startswith(f"row {target}: ")
    assert result.rows == target - 1
    if field == "prev_hash":
        expected = (
            "prev_hash is not the genesis hash"
            if target == 1
            else f"prev_hash does not match row {target - 1}"
        )
        assert result.reason == f"row {target}: {expected}"
    else:
        assert result.reason == f"row {target}: hash mismatch (contents changed)"


def test_rehashed_edit_breaks_the_link_to_the_next_row(log: AuditLog, engine: Engine) -> None:
    rows = _fill(log, 10)
    victim = rows[4]
    forged = row_hash(
        id=5,
        at=victim.at,
        kind=victim.kind,
        actor=victim.actor,
        run_id=victim.run_id,
        ticket_id=victim.ticket_id,
        action_id=victim.action_id,
        payload={"forged": True},
        prev_hash=victim.prev_hash,
        summary=victim.summary,
    )
    _raw(
        engine,
        "UPDATE audit SET payload = :p, hash = :h WHERE id = 5",
        p='{"forged": true}',
        h=forged,
    )
    result = log.verify()
    assert result.first_bad_id == 6
    assert result.reason == "row 6: prev_hash does not match row 5"


def test_every_row_has_a_summary_and_the_hash_seals_it(log: AuditLog, engine: Engine) -> None:
    row = log.append(
        "action_proposed",
        actor="agent:rules",
        payload={"action": "restart_node", "params": {"node": "node-2"}, "risk": "medium"},
    )
    assert row.summary == 'proposed restart_node {"node":"node-2"} (medium risk)'
    assert log.verify().ok
    _raw(engine, "UPDATE audit SET summary = 'approved nothing' WHERE id = :i", i=row.id)
    result = log.verify()
    assert not result.ok
    assert result.reason == f"row {row.id}: hash mismatch (contents changed)"


def test_rows_sealed_before_summaries_still_verify(log: AuditLog, engine: Engine) -> None:
    """A row written before the summary column existed has an empty one; its hash was made
    without it and still checks."""
    rows = _fill(log, 3)
    previous = GENESIS_HASH
    for row in rows:
        old = row_hash(
            id=row.id,
            at=row.at,
            kind=row.kind,
            actor=row.actor,
            run_id=row.run_id,
            ticket_id=row.ticket_id,
            action_id=row.action_id,
            payload=row.payload,
            prev_hash=previous,
        )
        _raw(
            engine,
            "UPDATE audit SET summary = '', prev_hash = :p, hash = :h WHERE id = :i",
            p=previous,
            h=old,
            i=row.id,
        )
        previous = old
    assert log.verify().ok


def test_deleting_a_middle_row_is_detected(log: AuditLog, engine: Engine) -> None:
    _fill(log, 10)
    _raw(engine, "DELETE FROM audit WHERE id = 5")
    result = log.verify()
    assert not result.ok
    assert result.first_bad_id == 5
    assert result.reason == "row 5 missing (ids jump from 4 to 6)"


def test_deleting_the_first_row_is_detected(log: AuditLog, engine: Engine) -> None:
    _fill(log, 3)
    _raw(engine, "DELETE FROM audit WHERE id = 1")
    result = log.verify()
    assert result.first_bad_id == 1
    assert result.reason == "row 1 missing (the log starts at row 2)"


def test_renumbering_rows_to_hide_a_deletion_is_detected(log: AuditLog, engine: Engine) -> None:
    _fill(log, 6)
    _raw(engine, "DELETE FROM audit WHERE id = 3")
    for row_id in (4, 5, 6):
        _raw(engine, "UPDATE audit SET id = :new WHERE id = :old", new=row_id - 1, old=row_id)
    result = log.verify()
    assert result.first_bad_id == 3
    assert not result.ok


def test_payload_that_is_no_longer_json_is_a_finding_not_a_crash(
    log: AuditLog, engine: Engine
) -> None:
    _fill(log, 4)
    _raw(engine, "UPDATE audit SET payload = '{not json' WHERE id = 3")
    result = log.verify()
    assert result.first_bad_id == 3
    assert result.reason.startswith("row 3: payload is not JSON")


def test_unreadable_time_is_a_finding_not_a_crash(
    log: AuditLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "_VERIFY_CHUNK", 10)
    _fill(log, 40)  # past one verify chunk, so the bad row is found inside a later chunk
    _raw(engine, "UPDATE audit SET at = 'yesterday' WHERE id = 27")
    result = log.verify()
    assert result.first_bad_id == 27
    assert result.rows == 26
    assert result.reason.startswith("row 27: unreadable")


# --- reading ---------------------------------------------------------------------------------


def test_list_is_newest_first_and_filters(log: AuditLog) -> None:
    _fill(log, 12)
    log.append("kill_switch", actor="person:cli", payload={}, run_id="run-2", ticket_id=42)
    newest = log.list(limit=3)
    assert [r.id for r in newest] == [13, 12, 11]
    assert [r.id for r in log.list(kind="kill_switch")] == [13]
    assert [r.id for r in log.list(ticket_id=42)] == [13]
    assert [r.id for r in log.list(run_id="run-2")] == [13]
    assert all(r.kind == "action_proposed" for r in log.list(kind="action_proposed"))
    assert len(log.list(limit=100)) == 13


def test_get_returns_the_row_or_none(log: AuditLog) -> None:
    rows = _fill(log, 2)
    got = log.get(2)
    assert got is not None
    assert got.hash == rows[1].hash
    assert got.payload == rows[1].payload
    assert log.get(99) is None


# --- secrets ---------------------------------------------------------------------------------


def _stored_bytes(db_path: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in (db_path, db_path.with_name(db_path.name + "-wal")) if p.exists()
    )


def test_planted_secrets_never_reach_the_database(
    log: AuditLog, engine: Engine, db_path: Path
) -> None:
    anthropic = "sk-ant-api03-" + secrets.token_urlsafe(30)[:40]
    bearer = "tok" + secrets.token_hex(16)
    url_password = "pw" + secrets.token_hex(8)
    registered = "reg" + secrets.token_hex(12)
    register_secret(registered)
    marker = "visible-marker-" + secrets.token_hex(4)
    row = log.append(
        "agent_step",
        actor="agent:claude",
        payload={
            "text": f"{marker} using {anthropic}",
            "headers": {"Authorization": f"Bearer {bearer}", "x-api-key": anthropic},
            "log": [f"connected to postgresql://ops:{url_password}@db:5432/x", registered],
            "api_key": registered,
        },
    )
    engine.dispose()
    stored = _stored_bytes(db_path)
    assert marker.encode() in stored  # the row is really in these bytes
    for secret in (anthropic, bearer, url_password, registered):
        assert secret.encode() not in stored
        assert secret not in repr(row.payload)
    assert REDACTED in row.payload["text"]
    assert log.verify().ok


def test_secret_from_the_environment_is_redacted(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "configured" + secrets.token_hex(16)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    row = AuditLog(engine).append("agent_step", actor="agent:claude", payload={"echo": key})
    assert row.payload == {"echo": REDACTED}


# --- several writers -------------------------------------------------------------------------


def _append_worker(url: str, worker: int, count: int, start: Any) -> None:
    engine = create_db_engine(url)
    log = AuditLog(engine)
    start.wait(30)
    for i in range(count):
        log.append("agent_step", actor=f"agent:w{worker}", payload={"worker": worker, "i": i})
    engine.dispose()


def _append_from_processes(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_append_worker, args=(url, w, ROWS_PER_WORKER, start))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * WORKERS


def _assert_one_chain(log: AuditLog) -> None:
    total = WORKERS * ROWS_PER_WORKER
    result = log.verify()
    assert result.ok, result.reason
    assert result.rows == total
    rows = log.list(limit=total + 10)
    assert len(rows) == total
    assert len({r.prev_hash for r in rows}) == total  # no two rows claim the same parent
    per_worker = {
        w: sorted(r.payload["i"] for r in rows if r.payload["worker"] == w) for w in range(WORKERS)
    }
    assert per_worker == {w: list(range(ROWS_PER_WORKER)) for w in range(WORKERS)}


def test_appends_from_several_processes_form_one_chain_sqlite(
    engine: Engine, db_path: Path
) -> None:
    _append_from_processes(f"sqlite:///{db_path}")
    _assert_one_chain(AuditLog(engine))


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_db_engine(pg_url)
    init_db(engine)
    yield engine
    engine.dispose()


def test_appends_from_several_processes_form_one_chain_postgres(
    pg_url: str, pg_engine: Engine
) -> None:
    _append_from_processes(pg_url)
    _assert_one_chain(AuditLog(pg_engine))


def test_edit_is_detected_on_postgres(pg_engine: Engine) -> None:
    log = AuditLog(pg_engine)
    _fill(log, 8)
    assert log.verify().ok
    _raw(pg_engine, "UPDATE audit SET payload = CAST(:v AS json) WHERE id = 4", v='{"x": 1}')
    result = log.verify()
    assert result.first_bad_id == 4
    assert result.reason == "row 4: hash mismatch (contents changed)"
