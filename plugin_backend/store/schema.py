"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/versions`` create
exactly these; a test compares them so the two never drift."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = ["alert_jobs", "incidents", "metadata", "outbox", "rule_leases", "rule_ticks"]

metadata = MetaData()

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    # the series name is part of the key: no length limit (SQLite ignores the 512)
    Column("key", Text().with_variant(String(512), "sqlite"), nullable=False, unique=True),
    Column("origin", String(16), nullable=False),
    Column("rule", String(128), nullable=True),
    Column("title", Text, nullable=False),
    Column("query", Text, nullable=False),
    Column("series", Text, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("status", String(8), nullable=False),
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("peak_score", Float, nullable=True),
    Column("direction", String(8), nullable=True),
    Column("dashboard_uid", String(128), nullable=True),
    Column("panel_id", Integer, nullable=True),
    Column("note", Text, nullable=False),
    Column("cause", Text, nullable=True),
    Column("report", JSON, nullable=True),
    Column("created_s", Float, nullable=False),
    Column("normal_low", Float, nullable=True),
    Column("normal_high", Float, nullable=True),
    Column("updated_s", Float, nullable=False),
    Index("ix_incidents_rule_status", "rule", "status"),
    Index("ix_incidents_start", "start_s"),
)

# One row per incident annotation: its desired state (version) and what Grafana holds
# (delivered_version, grafana_id). ``in_doubt``: an attempt was started whose outcome is
# unknown (timeout, crash): look the annotation up by tag before creating it again.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "incident_id",
        String(32),
        ForeignKey("incidents.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("dashboard_uid", String(128), nullable=True),
    Column("panel_id", Integer, nullable=True),
    # epoch milliseconds need 41 bits; Grafana's annotation ids are 64-bit
    Column("time_ms", BigInteger, nullable=False),
    Column("time_end_ms", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("delivered_version", Integer, nullable=False),
    Column("grafana_id", BigInteger, nullable=True),
    Column("in_doubt", Boolean, nullable=False),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_s", Float, nullable=False),
    Column("lease_until_s", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("updated_s", Float, nullable=False),
    Index("ix_outbox_due", "state", "next_attempt_s"),
)

# Alert webhooks are answered at once and processed by the worker from here.
alert_jobs = Table(
    "alert_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(512), nullable=False, unique=True),
    Column("source", String(16), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("received_s", Float, nullable=False),
    Column("updated_s", Float, nullable=False),
    Column("lease_until_s", Float, nullable=True),  # claimed by a worker until then
    Index("ix_alert_jobs_state", "state", "received_s"),
)

# A worker runs a rule's cycle only while it holds the rule's lease, and writes the
# rule's incidents only if no other worker took the lease over meanwhile: two workers
# scoring neighbouring ticks of one rule never both open its incident.
rule_leases = Table(
    "rule_leases",
    metadata,
    Column("rule", String(128), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("until_s", Float, nullable=False),
)

# The Celery engine's schedule: a scheduler enqueues a rule's tick only if it inserted
# its row, and a task runs it only if it moved the row from ``queued`` to ``running``,
# so two schedulers never double a tick and a message delivered twice runs once.
# ``state``: queued, running, done, failed, skipped (lease held elsewhere, superseded
# by a later tick, or an unknown rule). A running tick holds a lease (``lease_until_s``)
# its task renews: once it runs out (the worker died) the tick is queued again, at most
# ``attempts`` times in all; ``lookback_s``: a replay tick's history.
rule_ticks = Table(
    "rule_ticks",
    metadata,
    Column("rule", String(128), primary_key=True),
    Column("tick_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("state", String(12), nullable=False),
    Column("holder", String(256), nullable=True),
    Column("error", Text, nullable=True),
    Column("updated_s", Float, nullable=False),
    Column("lease_until_s", Float, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lookback_s", Float, nullable=True),
    Index("ix_rule_ticks_updated", "updated_s"),
    Index("ix_rule_ticks_lease", "state", "lease_until_s"),
)
