"""The Celery engine's queues, by name (importable without Celery)."""

from __future__ import annotations

from plugin_backend.errors import ConfigError

__all__ = ["DELIVERY_QUEUE", "NOTES_QUEUE", "QUEUES", "RULES_QUEUE", "parse_queues"]

RULES_QUEUE = "rules"  # rule ticks, alert webhooks
DELIVERY_QUEUE = "delivery"  # annotation delivery, retention
NOTES_QUEUE = "notes"  # LLM notes (slow): workers of their own
QUEUES = (RULES_QUEUE, DELIVERY_QUEUE, NOTES_QUEUE)


def parse_queues(text: str) -> tuple[str, ...]:
    """``--queues rules,delivery`` as a tuple in a fixed order; unknown names refused."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = names - set(QUEUES)
    if unknown or not names:
        raise ConfigError(f"worker: --queues {text!r}: each must be one of {', '.join(QUEUES)}")
    return tuple(q for q in QUEUES if q in names)
