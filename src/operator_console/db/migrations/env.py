"""Alembic's entry point: migrates the connection `operator_console.db.schema` hands it."""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from operator_console.db import models

config = context.config


def render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write the models' own column types as plain SQLAlchemy ones, so that a revision never
    imports the models it was generated from (they change; the revision must not)."""
    if kind != "type":
        return False
    if isinstance(item, models.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(item, AutoString):
        return f"sa.String(length={item.length})" if item.length else "sa.String()"
    return False


def configure(connection: sa.Connection, **options: Any) -> None:
    """The options every use shares: migrating, generating a revision, checking one."""
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite alters a table by copying it
        compare_type=True,
        compare_server_default=True,
        render_item=render_item,
        **options,
    )


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "the migrations run on a connection given by operator_console.db.schema; "
            "see docs/database.md"
        )
    configure(connection)
    with context.begin_transaction():
        context.run_migrations()


run()
