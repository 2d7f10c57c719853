"""Claims: a row one process takes for itself, so that two processes never both work on it.

A claim reads the row, checks it may be taken, and changes it, all in one transaction that
holds the row: on PostgreSQL through `SELECT ... FOR UPDATE` (optionally `SKIP LOCKED`), on
SQLite through `BEGIN IMMEDIATE`, which takes the database's write lock before the read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

RowT = TypeVar("RowT", bound=SQLModel)


@contextmanager
def claiming(engine: Engine) -> Iterator[Session]:
    """A session whose transaction is a claim: commit to take, leave without committing to
    let go."""
    with Session(engine, expire_on_commit=False) as session:
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield session


def lock_row(
    session: Session, model: type[RowT], row_id: object, *, skip_locked: bool
) -> RowT | None:
    """The row with this primary key, locked until the claim ends; None if there is none, or
    (with `skip_locked`, on PostgreSQL) another transaction holds it."""
    (key,) = inspect(model).primary_key
    query = select(model).where(key == row_id).with_for_update(skip_locked=skip_locked)
    return session.exec(query).first()
