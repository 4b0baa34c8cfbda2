"""Millisecond times and Grafana ids are 64-bit; incident keys have no length limit.

On PostgreSQL ``INTEGER`` is 32-bit: an annotation's epoch milliseconds overflowed it
(``integer out of range``) and every incident with a panel was rolled back; and a
series with many labels made a key longer than ``VARCHAR(512)``. SQLite stores 64-bit
integers and ignores lengths, so there only the outbox is rebuilt (nothing references
it); the incidents table is left as it is, because rebuilding it would cascade-delete
the outbox (``ON DELETE CASCADE`` fires on SQLite's ``DROP TABLE``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OUTBOX_COLUMNS = (("time_ms", False), ("time_end_ms", False), ("grafana_id", True))


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        for name, nullable in _OUTBOX_COLUMNS:
            batch.alter_column(
                name, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=nullable
            )
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "incidents",
            "key",
            type_=sa.Text(),
            existing_type=sa.String(512),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "incidents",
            "key",
            type_=sa.String(512),
            existing_type=sa.Text(),
            existing_nullable=False,
        )
    with op.batch_alter_table("outbox") as batch:
        for name, nullable in _OUTBOX_COLUMNS:
            batch.alter_column(
                name, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=nullable
            )
