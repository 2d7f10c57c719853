"""chains keep their steps, approvals for later, audit rows have a summary

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("steps", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
    # Rows written before summaries keep an empty one: their hashes stay valid.
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("summary", sa.String(), nullable=False, server_default=""))
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.alter_column("summary", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_column("summary")
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("scheduled_for")
        batch_op.drop_column("steps")
