"""Actions record the targets they touch and the policy's decision with its reason.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Rows written before this revision get an empty target list and empty decision texts. The
columns are added with those server defaults, which are then dropped again: the models give
the values, as in every other column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch_op:
        batch_op.add_column(sa.Column("targets", sa.JSON(), nullable=True, server_default="[]"))
        batch_op.add_column(sa.Column("decision", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("policy_reason", sa.String(), nullable=False, server_default="")
        )
    with op.batch_alter_table("actions") as batch_op:
        for column in ("targets", "decision", "policy_reason"):
            batch_op.alter_column(column, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("actions") as batch_op:
        for column in ("policy_reason", "decision", "targets"):
            batch_op.drop_column(column)
