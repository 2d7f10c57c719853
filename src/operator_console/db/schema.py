"""Schema migrations through Alembic's API: every database is upgraded in place, never rebuilt.

The revisions live in `migrations/versions/` inside the package, so an installed console needs
no `alembic.ini`. `docs/database.md` says how to add one.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from operator_console.db import models  # noqa: F401  (registers the tables)
from operator_console.db.engine import DatabaseError, create_db_engine, describe, no_database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# What operator-console 0.1.0 made with `create_all`, before there were revisions.
BASELINE_REVISION = "0001"
BASELINE_TABLES = frozenset(
    {"actions", "approvals", "audit", "controls", "runs", "tickets", "transcript"}
)

# Key of the PostgreSQL advisory lock that lets one process at a time migrate (b"oc-schem").
PG_MIGRATE_LOCK_KEY = 0x6F632D736368656D

COMPARE_OPTIONS: dict[str, Any] = {"compare_type": True, "compare_server_default": True}


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's settings, made in code: the packaged migrations, run on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = script_directory().get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in script_directory().walk_revisions()}


def database_revisions(connection: Connection) -> set[str]:
    """The revisions stamped in the database (none before its first migration)."""
    return set(MigrationContext.configure(connection).get_current_heads())


def model_differences(connection: Connection) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the models (empty: agree)."""
    context = MigrationContext.configure(connection, opts=COMPARE_OPTIONS)
    ours = set(SQLModel.metadata.tables)
    return [
        diff
        for diff in compare_metadata(context, SQLModel.metadata)
        # Tables that are not the console's may share the database.
        if not (isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name not in ours)
    ]


def init_db(engine: Engine, *, must_exist: bool = False) -> None:
    """Upgrade the database to the head revision in place; with `must_exist`, a database the
    console never wrote to is refused rather than created."""
    try:
        _upgrade(engine, must_exist=must_exist)
    except DBAPIError as exc:
        raise DatabaseError(
            f"cannot open database {describe(engine.url)}: {_reason(exc)}; "
            "check --db / OPERATOR_CONSOLE_DB"
        ) from None


def _upgrade(engine: Engine, *, must_exist: bool) -> None:
    where = describe(engine.url)
    head = head_revision()
    with engine.connect() as connection:
        current = database_revisions(connection)
        tables = set(inspect(connection).get_table_names())
    _refuse_newer(current, where)
    if must_exist and not current and not tables & BASELINE_TABLES:
        raise no_database(where)
    if current == {head}:
        return
    with engine.connect() as connection, _migration_lock(connection):
        # Read again under the lock: another process may have migrated in the meantime.
        current = database_revisions(connection)
        _refuse_newer(current, where)
        config = alembic_config(connection)
        if not current:
            ours = set(inspect(connection).get_table_names()) & BASELINE_TABLES
            if ours and ours != BASELINE_TABLES:
                missing = ", ".join(sorted(BASELINE_TABLES - ours))
                raise DatabaseError(
                    f"the database at {where} has some of the console's tables but not "
                    f"{missing}; it was not made by operator-console: check --db"
                )
            if ours:
                command.stamp(config, _unversioned_revision(connection))
        command.upgrade(config, "head")


@contextmanager
def _migration_lock(connection: Connection) -> Iterator[None]:
    """One transaction for the whole migration, holding a lock no other migrator can share."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATE_LOCK_KEY})
    else:
        connection.begin()
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def _unversioned_revision(connection: Connection) -> str:
    """A database without `alembic_version` is 0.1.0's, unless it already matches the models
    (a `create_all` of this code's own models): then it is the head."""
    return head_revision() if not model_differences(connection) else BASELINE_REVISION


def _refuse_newer(current: set[str], where: str) -> None:
    unknown = sorted(current - known_revisions())
    if unknown:
        raise DatabaseError(
            f"the database at {where} was written by a newer operator-console "
            f"(revision {', '.join(unknown)}); upgrade the console"
        )


def _reason(exc: DBAPIError) -> str:
    """The driver's message on one line."""
    message = str(exc.orig) if exc.orig is not None else str(exc)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines) or type(exc.orig or exc).__name__


# --- for the people who change the models ----------------------------------------------------


@contextmanager
def _head_database() -> Iterator[Connection]:
    """A scratch SQLite database at the head revision, to compare the models against."""
    with tempfile.TemporaryDirectory() as folder:
        engine = create_db_engine(f"sqlite:///{Path(folder) / 'head.db'}")
        try:
            init_db(engine)
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()


def next_revision_id() -> str:
    numbers = [int(r) for r in known_revisions() if r.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def new_revision(message: str) -> Path:
    """Write the next revision: what autogenerate finds between the head and the models."""
    with _head_database() as connection:
        config = alembic_config(connection)
        ruff = shutil.which("ruff")
        if ruff is not None:  # the project's formatter, when it is installed
            config.set_section_option("post_write_hooks", "hooks", "ruff")
            config.set_section_option("post_write_hooks", "ruff.type", "exec")
            config.set_section_option("post_write_hooks", "ruff.executable", ruff)
            config.set_section_option(
                "post_write_hooks", "ruff.options", "format REVISION_SCRIPT_FILENAME"
            )
        script = command.revision(
            config, message=message, autogenerate=True, rev_id=next_revision_id()
        )
    script_directory.cache_clear()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def differences_from_head() -> list[Any]:
    """What a new revision would have to contain (empty: the models and the head agree)."""
    with _head_database() as connection:
        return model_differences(connection)
