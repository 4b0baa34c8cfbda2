"""Incidents, annotation outbox, alert intake queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(128), nullable=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("series", sa.Text, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("peak_score", sa.Float, nullable=True),
        sa.Column("direction", sa.String(8), nullable=True),
        sa.Column("dashboard_uid", sa.String(128), nullable=True),
        sa.Column("panel_id", sa.Integer, nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("cause", sa.Text, nullable=True),
        sa.Column("report", sa.JSON, nullable=True),
        sa.Column("created_s", sa.Float, nullable=False),
        sa.Column("updated_s", sa.Float, nullable=False),
    )
    op.create_index("ix_incidents_rule_status", "incidents", ["rule", "status"])
    op.create_index("ix_incidents_start", "incidents", ["start_s"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "incident_id",
            sa.String(32),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("dashboard_uid", sa.String(128), nullable=True),
        sa.Column("panel_id", sa.Integer, nullable=True),
        sa.Column("time_ms", sa.Integer, nullable=False),
        sa.Column("time_end_ms", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("delivered_version", sa.Integer, nullable=False),
        sa.Column("grafana_id", sa.Integer, nullable=True),
        sa.Column("in_doubt", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_s", sa.Float, nullable=False),
        sa.Column("lease_until_s", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("updated_s", sa.Float, nullable=False),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_s"])
    op.create_table(
        "alert_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("received_s", sa.Float, nullable=False),
        sa.Column("updated_s", sa.Float, nullable=False),
    )
    op.create_index("ix_alert_jobs_state", "alert_jobs", ["state", "received_s"])


def downgrade() -> None:
    op.drop_table("alert_jobs")
    op.drop_table("outbox")
    op.drop_table("incidents")
