"""Per-request deadlines: a budget set once per HTTP request (or CLI call) that every
outbound call draws its timeout from, so a slow upstream cannot hold a worker thread
longer than the budget however many calls the request makes.

A ``ContextVar`` carries it: each gunicorn thread (and each asyncio task) sees its
own request's deadline; code outside any scope has no deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from plugin_backend.errors import DeadlineExceeded

__all__ = ["begin", "bounded_timeout", "deadline", "end", "remaining_s"]

_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar(
    "plugin_backend_deadline", default=None
)


def begin(budget_s: float) -> Token[tuple[float, float] | None]:
    """Start a budget of ``budget_s`` from now (web hooks: pair with ``end``)."""
    return _DEADLINE.set((time.monotonic() + budget_s, budget_s))


def end(token: Token[tuple[float, float] | None]) -> None:
    _DEADLINE.reset(token)


@contextmanager
def deadline(budget_s: float | None) -> Iterator[None]:
    """Within this block, outbound calls must finish ``budget_s`` from now (None: no limit)."""
    if budget_s is None:
        yield
        return
    token = begin(budget_s)
    try:
        yield
    finally:
        end(token)


def remaining_s() -> float | None:
    """Seconds left in the current deadline, ``None`` outside any."""
    current = _DEADLINE.get()
    return None if current is None else current[0] - time.monotonic()


def bounded_timeout(timeout_s: float, what: str) -> float:
    """``timeout_s``, cut to what the deadline leaves; ``DeadlineExceeded`` if nothing."""
    current = _DEADLINE.get()
    if current is None:
        return timeout_s
    left = current[0] - time.monotonic()
    if left <= 0.05:
        raise DeadlineExceeded(
            f"the request used its whole {current[1]:g} s budget "
            f"(PLUGIN_BACKEND_REQUEST_DEADLINE_S) before {what} could answer: "
            "narrow the range or the query"
        )
    return min(timeout_s, left)
