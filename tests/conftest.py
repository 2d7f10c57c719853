from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from operator_console.db import create_db_engine, init_db
from operator_console.settings import Settings

# The machine's PostgreSQL: trust authentication for the postgres user on the loopback address.
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@functools.cache
def postgres_unavailable() -> str | None:
    """Why the local PostgreSQL cannot be used (None when it answers); asked once per process."""
    admin = create_engine(f"{PG_SERVER}/postgres", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return f"no PostgreSQL answers at 127.0.0.1:5432 ({first}); .ci/run starts one"
    finally:
        admin.dispose()
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database with a random name, dropped after the test."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    name = f"oc_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database URL that several processes share: an SQLite file, then a PostgreSQL
    database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", interval=0.5)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'test.db'}")
    init_db(engine)
    return engine
