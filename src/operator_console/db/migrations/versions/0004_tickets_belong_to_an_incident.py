"""tickets belong to an incident

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:53:44.770223
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_tickets_incident_id"), ["incident_id"], unique=False)
    # Every earlier ticket was an incident of its own.
    op.execute("UPDATE tickets SET incident_id = id")


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tickets_incident_id"))
        batch_op.drop_column("incident_id")
