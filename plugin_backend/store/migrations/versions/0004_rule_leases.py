"""Rule leases: one worker at a time runs a rule's cycle and writes its incidents.

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


def downgrade() -> None:
    op.drop_table("rule_leases")
