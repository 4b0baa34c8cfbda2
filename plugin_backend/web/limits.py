"""Per-request limits that protect a gunicorn worker: a time budget for every
request's outbound calls (``deadline``), and a cap on heavy requests (anomaly
scoring, root cause) running at once, so light panel queries always find a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, g

from plugin_backend import deadline
from plugin_backend.config import Settings
from plugin_backend.errors import LimitExceeded

__all__ = ["HeavyRequestGate", "heavy_request", "install_request_limits"]


class HeavyRequestGate:
    """At most ``capacity`` heavy requests at once in this process; a request waits up
    to ``wait_s`` for a slot, then gets a 429 naming the limit."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(capacity)

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise LimitExceeded(
                f"{self.capacity} anomaly/root-cause requests are already running in this "
                f"worker (PLUGIN_BACKEND_MAX_CONCURRENT_HEAVY) and none finished within "
                f"{self.wait_s:g} s: retry shortly, or raise the limit",
                limit="max_concurrent_heavy",
                http_status=429,
            )
        try:
            yield
        finally:
            self._slots.release()


@contextmanager
def heavy_request() -> Iterator[None]:
    """Hold a heavy-request slot of the current app for the block."""
    gate: HeavyRequestGate = current_app.extensions["plugin_backend.heavy_gate"]
    with gate.hold():
        yield


def install_request_limits(app: Flask, settings: Settings) -> None:
    app.extensions["plugin_backend.heavy_gate"] = HeavyRequestGate(
        settings.max_concurrent_heavy, settings.heavy_wait_s
    )

    @app.before_request
    def _start_deadline() -> None:
        g.deadline_token = deadline.begin(settings.request_deadline_s)

    @app.teardown_request
    def _end_deadline(_exc: BaseException | None) -> None:
        token = g.pop("deadline_token", None)
        if token is not None:
            deadline.end(token)
