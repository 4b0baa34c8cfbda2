"""A small open-loop HTTP load generator (threads + requests), for the load benchmark
and its CI smoke test: requests are started at a fixed rate whatever the latency, so
a slow server shows up as latency and errors, not as a lower offered rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

__all__ = ["LoadResult", "children_of", "rss_bytes", "run_load"]


@dataclass
class LoadResult:
    sent: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def achieved_rps(self) -> float:
        return len(self.latencies_s) / self.duration_s if self.duration_s else 0.0


def run_load(
    url: str,
    body: dict,
    *,
    rate_per_s: float,
    duration_s: float,
    threads: int = 32,
    check: Callable[[requests.Response], bool] | None = None,
) -> LoadResult:
    """POST ``body`` to ``url`` at ``rate_per_s`` for ``duration_s``; every answer that
    is not 200 (or fails ``check``) counts as an error, by kind."""
    result = LoadResult()
    lock = threading.Lock()
    local = threading.local()

    def one() -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        started = time.perf_counter()
        try:
            response = session.post(url, json=body, timeout=10)
            ok = response.status_code == 200 and (check is None or check(response))
            kind = None if ok else f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            kind = exc.__class__.__name__
        elapsed = time.perf_counter() - started
        with lock:
            if kind is None:
                result.latencies_s.append(elapsed)
            else:
                result.errors[kind] = result.errors.get(kind, 0) + 1

    interval = 1.0 / rate_per_s
    begin = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        n = 0
        while True:
            due = begin + n * interval
            if due - begin >= duration_s:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one)
            n += 1
        result.sent = n
    result.duration_s = time.perf_counter() - begin
    return result


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
