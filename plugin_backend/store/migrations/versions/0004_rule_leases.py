"""Leases for many workers: one worker at a time runs a rule's cycle and writes its
incidents (``rule_leases``), and handles a queued alert (``alert_jobs.lease_until_s``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_leases",
        sa.Column("rule", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("until_s", sa.Float, nullable=False),
    )
    with op.batch_alter_table("alert_jobs") as batch:
        batch.add_column(sa.Column("lease_until_s", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_jobs") as batch:
        batch.drop_column("lease_until_s")
    op.drop_table("rule_leases")
