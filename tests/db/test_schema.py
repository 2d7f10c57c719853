"""Schema migrations on SQLite and the real PostgreSQL: a 0.1.0 database with rows is upgraded in
place and loses nothing, the head revision matches the models exactly, a newer database is
refused, and the documented way of writing the next revision works."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from pydantic import BaseModel
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from operator_console.actions.store import ActionRepository, ActionState, Controls, Mode
from operator_console.audit import AuditLog
from operator_console.audit.log import GENESIS_HASH, row_hash
from operator_console.contract import ActionSpec
from operator_console.db import DatabaseError, TicketRepository, create_db_engine, init_db, schema
from operator_console.db.schema import (
    alembic_config,
    database_revisions,
    head_revision,
    model_differences,
)

HERE = Path(__file__).parent


class NodeParams(BaseModel):
    node: str


async def _restart(params: NodeParams) -> str:
    return f"restarted {params.node}"


RESTART = ActionSpec(
    name="restart_node",
    description="restart a node",
    params=NodeParams,
    risk="medium",
    restores=("node_down",),
    timeout_s=5,
    run=_restart,
)
AT = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def url(shared_db_url: str) -> str:
    return shared_db_url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


def _old_schema(engine: Engine) -> None:
    """Make the tables exactly as 0.1.0's create_all did (its DDL, kept as it printed it)."""
    ddl = (HERE / f"schema_0_1_0.{engine.dialect.name}.sql").read_text()
    statements = [s.strip() for s in ddl.split(";")]
    with engine.begin() as conn:
        for statement in statements:
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
            if body.strip():
                conn.exec_driver_sql(body)


def _schema_of(engine: Engine) -> dict[str, Any]:
    """Every table's columns, key and indexes as the database itself reports them."""
    with engine.connect() as conn:
        found = inspect(conn)
        return {
            table: {
                "columns": {
                    c["name"]: (str(c["type"]), c["nullable"], c.get("default"))
                    for c in found.get_columns(table)
                },
                "key": found.get_pk_constraint(table)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in found.get_indexes(table)
                ),
            }
            for table in found.get_table_names()
            if table != "alembic_version"
        }


def _seed_0_1_0(engine: Engine) -> None:
    """Rows as 0.1.0 wrote them: a ticket, an action with its approval, a run, audit rows."""
    rows = [
        (
            "INSERT INTO runs (id, scenario, subject, run_dir, started_at, ok, summary) "
            "VALUES ('r1', 'node-kill', 'ratelimiter', '/tmp/r1', :at, true, '{\"ok\": 1}')"
        ),
        (
            "INSERT INTO tickets (id, run_id, subject, dedup_key, invariant, target, severity, "
            "state, message, occurrences, first_seen, last_seen, held_by, brain, details, "
            "opened_observation) VALUES (1, 'r1', 'ratelimiter', 'node_down:rl-2', 'node_down', "
            "'rl-2', 'critical', 'action_pending', 'rl-2 is down', 4, :at, :at, NULL, 'rules', "
            "'{}', '{}')"
        ),
        (
            "INSERT INTO actions (id, run_id, ticket_id, name, params, params_hash, risk, "
            "restores, reason, proposed_by, state, created_at, expires_at, attempts) VALUES "
            "(1, 'r1', 1, 'restart_node', '{\"node\": \"rl-2\"}', 'h', 'medium', "
            "'node_down:rl-2', 'rl-2 is down', 'agent:rules', 'succeeded', :at, :at, 1)"
        ),
        (
            "INSERT INTO approvals (id, action_id, params_hash, approved_by, reason, created_at, "
            "expires_at, used_at) VALUES (1, 1, 'h', 'person:cli', 'go', :at, :at, :at)"
        ),
        (
            "INSERT INTO controls (key, value, changed_by, changed_at) "
            "VALUES ('mode', 'approve', 'person:cli', :at)"
        ),
    ]
    with engine.begin() as conn:
        for sql in rows:
            conn.execute(text(sql), {"at": AT})
        prev = GENESIS_HASH
        for i in (1, 2):
            payload = {"step": i}
            digest = row_hash(
                id=i,
                at=AT,
                kind="agent_step",
                actor="agent:rules",
                run_id="r1",
                ticket_id=1,
                action_id=None,
                payload=payload,
                prev_hash=prev,
            )
            conn.execute(
                text(
                    "INSERT INTO audit (id, at, kind, actor, run_id, ticket_id, payload, "
                    "prev_hash, hash) VALUES (:id, :at, 'agent_step', 'agent:rules', 'r1', 1, "
                    ":payload, :prev, :hash)"
                ),
                {"id": i, "at": AT, "payload": f'{{"step": {i}}}', "prev": prev, "hash": digest},
            )
            prev = digest
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # explicit ids leave the sequences behind; 0.1.0 did not
            for table in ("tickets", "actions", "approvals", "audit"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 5)"))


def test_a_new_database_is_made_at_the_head_and_matches_the_models(engine: Engine) -> None:
    init_db(engine)
    with engine.connect() as conn:
        assert database_revisions(conn) == {head_revision()}
        assert model_differences(conn) == []
    init_db(engine)  # a second start changes nothing


def test_revision_0001_is_the_schema_0_1_0_made(url: str, tmp_path: Path) -> None:
    old = create_db_engine(url)
    _old_schema(old)
    expected = _schema_of(old)
    old.dispose()

    if url.startswith("sqlite"):
        fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        fresh_url = url.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1] + "_fresh"
        _create_pg_database(fresh_url)
    fresh = create_db_engine(fresh_url)
    try:
        with fresh.connect() as conn:
            command.upgrade(alembic_config(conn), "0001")
            conn.commit()
        assert _schema_of(fresh) == expected
    finally:
        fresh.dispose()
        if not url.startswith("sqlite"):
            _drop_pg_database(fresh_url)


def _admin(url: str) -> Engine:
    return sa.create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")


def _create_pg_database(url: str) -> None:
    admin = _admin(url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
    admin.dispose()


def _drop_pg_database(url: str) -> None:
    admin = _admin(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def test_a_0_1_0_database_with_rows_is_upgraded_in_place(engine: Engine) -> None:
    _old_schema(engine)
    _seed_0_1_0(engine)

    init_db(engine)

    with engine.connect() as conn:
        assert database_revisions(conn) == {head_revision()}
        assert model_differences(conn) == []
    action = ActionRepository(engine).get(1)
    assert action is not None
    assert (action.name, action.params, action.state, action.attempts) == (
        "restart_node",
        {"node": "rl-2"},
        "succeeded",
        1,
    )
    assert action.created_at == AT
    assert (action.targets, action.decision, action.policy_reason) == ([], "", "")
    ticket = TicketRepository(engine).get(1)
    assert ticket is not None
    assert (ticket.state, ticket.occurrences, ticket.first_seen) == ("action_pending", 4, AT)
    assert Controls(engine).mode() is Mode.APPROVE
    log = AuditLog(engine)
    assert log.verify().ok and log.verify().rows == 2
    with engine.connect() as conn:
        counts = {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("runs", "tickets", "actions", "approvals", "controls", "audit")
        }
    assert counts == dict.fromkeys(counts, 1) | {"audit": 2}

    # The upgraded database takes new rows with the new columns.
    log.append("agent_step", actor="agent:rules", payload={"step": 3})
    assert log.verify().ok
    Controls(engine).set_mode(Mode.AUTO, by="test")
    row = ActionRepository(engine).propose(
        RESTART,
        {"node": "rl-3"},
        proposed_by="agent:rules",
        reason="down",
        run_id="r1",
        ticket_id=1,
        targets=["rl-3"],
        decision="execute",
        policy_reason="medium risk in auto",
    )
    assert row.id is not None
    ActionRepository(engine).approve(row.id, by="policy")
    claimed = ActionRepository(engine).claim(row.id, Controls(engine))
    assert claimed.state == ActionState.EXECUTING.value
    again = ActionRepository(engine).get(row.id)
    assert again is not None and again.targets == ["rl-3"] and again.decision == "execute"


def test_a_database_from_a_newer_console_is_refused_and_left_alone(engine: Engine) -> None:
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042'"))
    before = _schema_of(engine)
    with pytest.raises(DatabaseError) as caught:
        init_db(engine)
    where = schema.describe(engine.url)
    assert str(caught.value) == (
        f"the database at {where} was written by a newer operator-console (revision 0042); "
        "upgrade the console"
    )
    assert _schema_of(engine) == before


def test_tables_of_this_code_without_a_revision_are_taken_as_the_head(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
    init_db(engine)
    with engine.connect() as conn:
        assert database_revisions(conn) == {head_revision()}


def test_some_but_not_all_tables_is_not_a_console_database(engine: Engine) -> None:
    SQLModel.metadata.tables["audit"].create(engine)
    with pytest.raises(DatabaseError, match="has some of the console's tables but not actions"):
        init_db(engine)


def test_the_agreement_check_sees_a_column_the_models_have_and_the_database_lacks(
    engine: Engine,
) -> None:
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_tickets_state"))
        conn.execute(text("ALTER TABLE actions DROP COLUMN policy_reason"))
    with engine.connect() as conn:
        found = model_differences(conn)
    assert ("add_column", None, "actions") in [d[:3] for d in found if isinstance(d, tuple)]
    assert ("add_index",) in [d[:1] for d in found if isinstance(d, tuple)]


def _migrate(url: str, start: Any) -> None:
    engine = create_db_engine(url)
    start.wait(30)
    init_db(engine)
    engine.dispose()


def test_two_processes_starting_on_a_new_database_migrate_it_once(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_migrate, args=(url, start)) for _ in range(2)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    engine = create_db_engine(url)
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [v[0] for v in versions] == [head_revision()]
        assert model_differences(conn) == []
    engine.dispose()


def test_the_check_command_says_the_models_and_the_head_agree() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "operator_console.db.migrations", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"the models and revision {head_revision()} agree\n"


def test_a_new_revision_is_generated_from_a_model_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented workflow, on a copy of the migrations: change a model, generate, upgrade,
    check."""
    copy = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", copy)
    schema.script_directory.cache_clear()
    added = sa.Table(
        "scratch_notes",
        SQLModel.metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("note", sa.String(), nullable=False),
    )
    before = head_revision()
    after = f"{int(before) + 1:04d}"
    try:
        assert [d[0] for d in schema.differences_from_head()] == ["add_table"]
        path = schema.new_revision("scratch notes")
        assert path.parent == copy / "versions"
        assert path.name == f"{after}_scratch_notes.py"
        source = path.read_text()
        assert "op.create_table(" in source and '"scratch_notes"' in source
        assert f'down_revision = "{before}"' in source
        assert "operator_console" not in source  # a revision never imports the models
        assert head_revision() == after
        assert schema.differences_from_head() == []
    finally:
        SQLModel.metadata.remove(added)
        schema.script_directory.cache_clear()
