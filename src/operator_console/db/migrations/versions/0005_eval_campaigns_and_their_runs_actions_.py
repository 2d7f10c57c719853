"""eval campaigns and their runs; actions know their system

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:01:31.363936
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_campaigns",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=True),
        sa.Column("cells", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("eval_campaigns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_campaigns_name"), ["name"], unique=False)

    op.create_table(
        "eval_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("scenario", sa.String(), nullable=False),
        sa.Column("brain", sa.String(), nullable=False),
        sa.Column("trial", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("win", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("score", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_runs_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_eval_runs_scenario"), ["scenario"], unique=False)

    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("system", sa.String(), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_actions_system"), ["system"], unique=False)
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.alter_column("system", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_actions_system"))
        batch_op.drop_column("system")

    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_runs_scenario"))
        batch_op.drop_index(batch_op.f("ix_eval_runs_campaign_id"))

    op.drop_table("eval_runs")
    with op.batch_alter_table("eval_campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_campaigns_name"))

    op.drop_table("eval_campaigns")
