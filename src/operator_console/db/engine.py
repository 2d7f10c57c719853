"""Engine creation: SQLite gets WAL and a busy timeout; any SQLAlchemy URL works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import SQLModel, create_engine

from operator_console.db import models  # noqa: F401  (registers the tables)

BUSY_TIMEOUT_MS = 5000


class DatabaseError(RuntimeError):
    """The database URL is wrong or the database cannot be reached."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """Build an engine for `url`, creating the SQLite file's folder when needed."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(
            f"database URL {url!r} is not valid: {exc}; "
            "give an SQLAlchemy URL such as sqlite:///path/to/file.db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except NoSuchModuleError:
        raise DatabaseError(
            f"database URL {url!r}: unknown database kind {parsed.drivername!r}; "
            "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"no driver for {parsed.get_backend_name()!r} ({exc.name}); "
            "install it, e.g. pip install 'psycopg[binary]' for PostgreSQL"
        ) from None


def init_db(engine: Engine) -> None:
    """Create the tables if they are missing."""
    try:
        SQLModel.metadata.create_all(engine)
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot open database {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}; check --db / OPERATOR_CONSOLE_DB"
        ) from None
