"""tickets keep scope, mitigation and closing; runs know their process

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:45:30.057074
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Old runs get an empty host: a console never takes them for its own dead runs.
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.alter_column("host", server_default=None)

    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("after_action_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("mitigation_action_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cause", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("remains", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("closed_reason", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("closed_reason")
        batch_op.drop_column("remains")
        batch_op.drop_column("cause")
        batch_op.drop_column("mitigation_action_id")
        batch_op.drop_column("after_action_id")

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("pid")
        batch_op.drop_column("host")
