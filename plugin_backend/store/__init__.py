"""The store: incidents, the annotation outbox and the alert intake queue.

SQLAlchemy Core over an SQLite file (default) or PostgreSQL (by URL); the schema
is versioned with Alembic migrations shipped in ``migrations/``.
"""

from plugin_backend.store.store import (
    AlertJob,
    LeaseLost,
    OutboxRow,
    RuleTick,
    Store,
    incident_lease,
)

__all__ = ["AlertJob", "LeaseLost", "OutboxRow", "RuleTick", "Store", "incident_lease"]
