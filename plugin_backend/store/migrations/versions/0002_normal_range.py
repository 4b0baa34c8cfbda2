"""Incidents remember the symptom's normal range before they began (recovery check).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("normal_low", sa.Float, nullable=True))
        batch.add_column(sa.Column("normal_high", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("normal_high")
        batch.drop_column("normal_low")
