"""A small open-loop HTTP load generator (threads + requests), for the load benchmark
and its CI smoke test.

Requests are due at a fixed rate whatever the latency (open loop), and each one's
latency runs from the time it was DUE, not from when a thread got round to sending
it: when the server (or the client's thread pool) falls behind, the wait shows up as
latency instead of silently lowering the offered rate (no coordinated omission). The
achieved rate is reported beside the offered one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests

__all__ = [
    "Clock",
    "LoadResult",
    "children_of",
    "due_offsets",
    "rss_bytes",
    "run_load",
    "run_open_loop",
]


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# One request: None when it was answered as expected, else the kind of error.
Send = Callable[[], str | None]


@dataclass
class LoadResult:
    offered_rps: float
    window_s: float  # requests were due over [0, window_s)
    sent: int = 0
    latencies_s: list[float] = field(default_factory=list)  # OK answers, from due time
    errors: dict[str, int] = field(default_factory=dict)
    max_start_delay_s: float = 0.0  # longest wait between due time and leaving the client
    last_answer_s: float = 0.0  # after the first due time

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def achieved_rps(self) -> float:
        """OK answers per second, over the offered window or until the last answer if
        that came later (a server that keeps up answers at the offered rate)."""
        span = max(self.window_s, self.last_answer_s)
        return len(self.latencies_s) / span if span > 0 else 0.0


def due_offsets(rate_per_s: float, duration_s: float) -> list[float]:
    """When each request is due, in seconds after the first: every ``1/rate`` s, all
    before ``duration_s``."""
    if rate_per_s <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    interval = 1.0 / rate_per_s
    return [n * interval for n in range(math.ceil(duration_s * rate_per_s - 1e-9))]


def run_open_loop(
    send: Send,
    *,
    rate_per_s: float,
    duration_s: float,
    threads: int = 32,
    clock: Clock | None = None,
    executor: Executor | None = None,
) -> LoadResult:
    """Call ``send`` at ``rate_per_s`` for ``duration_s`` on ``threads`` threads (or
    ``executor``); each latency is measured from the request's due time."""
    clock = clock or SystemClock()
    result = LoadResult(offered_rps=rate_per_s, window_s=duration_s)
    lock = threading.Lock()
    begin = clock.now()

    def one(due: float) -> None:
        started = clock.now()
        try:
            kind = send()
        except Exception as exc:  # a failed check is an error, never a lost request
            kind = exc.__class__.__name__
        answered = clock.now()
        with lock:
            result.max_start_delay_s = max(result.max_start_delay_s, started - due)
            result.last_answer_s = max(result.last_answer_s, answered - begin)
            if kind is None:
                result.latencies_s.append(answered - due)
            else:
                result.errors[kind] = result.errors.get(kind, 0) + 1

    with executor or ThreadPoolExecutor(max_workers=threads) as pool:
        for offset in due_offsets(rate_per_s, duration_s):
            due = begin + offset
            delay = due - clock.now()
            if delay > 0:
                clock.sleep(delay)
            pool.submit(one, due)
            result.sent += 1
    return result


def run_load(
    url: str,
    body: dict,
    *,
    rate_per_s: float,
    duration_s: float,
    threads: int = 32,
    check: Callable[[requests.Response], bool] | None = None,
) -> LoadResult:
    """POST ``body`` to ``url`` at ``rate_per_s`` for ``duration_s`` (open loop); every
    answer that is not 200 (or fails ``check``) counts as an error, by kind."""
    local = threading.local()

    def send() -> str | None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        try:
            response = session.post(url, json=body, timeout=10)
        except requests.RequestException as exc:
            return exc.__class__.__name__
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        return None if check is None or check(response) else "failed check"

    return run_open_loop(send, rate_per_s=rate_per_s, duration_s=duration_s, threads=threads)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers), from /proc."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                found.append(int(status.parent.name))
    return sorted(found)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
