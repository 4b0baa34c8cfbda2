"""Scheduled rule ticks for the Celery engine: one row per (rule, tick), so two
schedulers never enqueue one tick twice and a tick delivered twice runs once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
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
        "rule_ticks",
        sa.Column("rule", sa.String(128), primary_key=True),
        sa.Column("tick_ms", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("holder", sa.String(256), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("updated_s", sa.Float, nullable=False),
    )
    op.create_index("ix_rule_ticks_updated", "rule_ticks", ["updated_s"])


def downgrade() -> None:
    op.drop_index("ix_rule_ticks_updated", table_name="rule_ticks")
    op.drop_table("rule_ticks")
