"""A running rule tick holds a lease its task renews, so a tick whose worker died is
queued again (``Store.reclaim_ticks``); ``attempts`` bounds how often, and
``lookback_s`` keeps a replay tick a replay when it is sent again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rule_ticks") as batch:
        batch.add_column(sa.Column("lease_until_s", sa.Float, nullable=True))
        batch.add_column(
            sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("lookback_s", sa.Float, nullable=True))
    op.create_index("ix_rule_ticks_lease", "rule_ticks", ["state", "lease_until_s"])


def downgrade() -> None:
    op.drop_index("ix_rule_ticks_lease", table_name="rule_ticks")
    with op.batch_alter_table("rule_ticks") as batch:
        batch.drop_column("lookback_s")
        batch.drop_column("attempts")
        batch.drop_column("lease_until_s")
