"""Per-request deadlines: a budget set once per HTTP request (or CLI call) that every
outbound call draws its timeout from, so a slow upstream cannot hold a worker thread
longer than the budget however many calls the request makes.

A ``ContextVar`` carries it: each gunicorn thread (and each asyncio task) sees its
own request's deadline; code outside any scope has no deadline. The clock the budget
is measured on is chosen when it begins (``time.monotonic`` unless a test passes its own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from plugin_backend.errors import DeadlineExceeded

__all__ = ["MIN_USEFUL_S", "begin", "bounded_timeout", "deadline", "end", "remaining_s"]

MIN_USEFUL_S = 0.05  # less left than this: no outbound call can usefully start

Clock = Callable[[], float]
# (expires at, budget, the clock both are read on)
_Budget = tuple[float, float, Clock]
_DEADLINE: ContextVar[_Budget | None] = ContextVar("plugin_backend_deadline", default=None)


def begin(budget_s: float, clock: Clock = time.monotonic) -> Token[_Budget | None]:
    """Start a budget of ``budget_s`` from now (web hooks: pair with ``end``)."""
    return _DEADLINE.set((clock() + budget_s, budget_s, clock))


def end(token: Token[_Budget | None]) -> None:
    _DEADLINE.reset(token)


@contextmanager
def deadline(budget_s: float | None, clock: Clock = time.monotonic) -> Iterator[None]:
    """Within this block, outbound calls must finish ``budget_s`` from now (None: no limit)."""
    if budget_s is None:
        yield
        return
    token = begin(budget_s, clock)
    try:
        yield
    finally:
        end(token)


def remaining_s() -> float | None:
    """Seconds left in the current deadline, ``None`` outside any."""
    current = _DEADLINE.get()
    if current is None:
        return None
    expires_at, _, clock = current
    return expires_at - clock()


def bounded_timeout(timeout_s: float, what: str) -> float:
    """``timeout_s``, cut to what the deadline leaves; ``DeadlineExceeded`` if nothing."""
    current = _DEADLINE.get()
    if current is None:
        return timeout_s
    expires_at, budget_s, clock = current
    left = expires_at - clock()
    if left <= MIN_USEFUL_S:
        raise DeadlineExceeded(
            f"the request used its whole {budget_s:g} s budget "
            f"(PLUGIN_BACKEND_REQUEST_DEADLINE_S) before {what} could answer: "
            "narrow the range or the query"
        )
    return min(timeout_s, left)
