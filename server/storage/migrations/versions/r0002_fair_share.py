"""Fair share: GPU quotas set through the API, and each user's and project's GPU usage.

Both tables are new and start empty: with no quota anywhere the queues stay plain FIFO, and usage
is counted from the first quota on (server/fairshare/usage.py).

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fair_quotas",
        sa.Column("entity", sa.String(200), primary_key=True),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("borrow", sa.Boolean, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "fair_usage",
        sa.Column("entity", sa.String(200), primary_key=True),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("as_of", sa.Float, nullable=False),
        sa.Column("running_gpus", sa.Integer, nullable=False),
        sa.Column("running_start", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fair_usage")
    op.drop_table("fair_quotas")
