"""Engine creation: SQLite gets WAL and a busy timeout; PostgreSQL goes through psycopg (v3).

Every mistake in a database URL ends here or in `init_db` as one `DatabaseError` line that names
the database and the fix, before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlmodel import create_engine

from operator_console.db import models  # noqa: F401  (registers the tables)

BUSY_TIMEOUT_MS = 5000
PG_CONNECT_TIMEOUT_S = 10
POSTGRES_EXTRA = "pip install 'operator-console[postgres]'"
URL_EXAMPLES = "sqlite:///PATH/console.db or postgresql://USER@HOST/DB"


class DatabaseError(RuntimeError):
    """The database URL is wrong or the database cannot be reached."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def hide_password(url: str) -> str:
    """A URL as it may be shown: a password in it becomes ***."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def describe(url: URL) -> str:
    """Where a database is, in words a person recognises: the file, or the URL."""
    if url.get_backend_name() == "sqlite" and sqlite_path(url) is not None:
        return str(sqlite_path(url))
    return url.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The file an SQLite URL names; None for an in-memory database or a `file:` URI."""
    database = url.database or ""
    if not database or database == ":memory:" or str(url.query.get("uri", "")).lower() == "true":
        return None
    return Path(database).expanduser()


def parse_url(url: str) -> URL:
    """Parse `url`; a plain postgresql:// (or postgres://) URL means psycopg 3."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise DatabaseError(
            f"database URL {hide_password(url)!r} is not a URL; give one like {URL_EXAMPLES}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def no_database(where: str) -> DatabaseError:
    return DatabaseError(f"no database at {where}; run the console once, or check --db")


def create_db_engine(url: str, *, must_exist: bool = False) -> Engine:
    """Build an engine for `url`, creating the SQLite file's folder unless `must_exist`."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, must_exist=must_exist)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    try:
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except NoSuchModuleError:
        raise DatabaseError(
            f"database URL {describe(parsed)!r}: unknown kind of database "
            f"{parsed.drivername!r}; use {URL_EXAMPLES}"
        ) from None
    except ImportError as exc:
        raise _missing_driver(parsed, exc) from None


def _missing_driver(url: URL, exc: ImportError) -> DatabaseError:
    module = exc.name or url.get_driver_name()
    if url.get_backend_name() != "postgresql":
        return DatabaseError(
            f"database URL {describe(url)!r} needs the Python module {module!r}; install it"
        )
    if url.get_driver_name() == "psycopg":
        return DatabaseError(
            f"PostgreSQL needs the psycopg driver, which cannot be imported here: {POSTGRES_EXTRA}"
        )
    return DatabaseError(
        f"database URL {describe(url)!r} asks for the driver {url.get_driver_name()!r}, which "
        f"is not installed; use postgresql://... (psycopg, from {POSTGRES_EXTRA})"
    )


def _sqlite_engine(url: URL, *, must_exist: bool) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.is_file():
            raise no_database(str(path))
        if not must_exist:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot make the folder {path.parent} for the database {path}: "
                    f"{exc.strerror or exc}; check --db / OPERATOR_CONSOLE_DB"
                ) from None
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine
