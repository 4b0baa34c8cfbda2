"""Shared benchmark plumbing: a backfilled real Prometheus and a real gunicorn."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from testkit.promserver import PrometheusServer, find_free_port, start_backfilled
from testkit.testdata import build_test_series

#: A loaded 2-core machine can take over a minute to import and warm the model up.
START_TIMEOUT_S = 180.0


@contextmanager
def backfilled_prometheus() -> Iterator[PrometheusServer]:
    with tempfile.TemporaryDirectory(prefix="bench-prom-") as tmp:
        server = start_backfilled(build_test_series(), Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def gunicorn_backend(prometheus_url: str, workers: int = 2) -> Iterator[str]:
    with gunicorn_server(prometheus_url, workers) as (url, _proc):
        yield url


@contextmanager
def gunicorn_server(
    prometheus_url: str, workers: int = 2
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``plugin-backend serve``: its URL and the gunicorn master process. Its
    store is a throwaway SQLite file, never the user's own store."""
    port = find_free_port()
    store_dir = tempfile.TemporaryDirectory(prefix="bench-store-")
    env = {
        **os.environ,
        "PLUGIN_BACKEND_STORE_URL": f"sqlite:///{Path(store_dir.name) / 'store.db'}",
        "PLUGIN_BACKEND_PROMETHEUS_URL": prometheus_url,
        "PLUGIN_BACKEND_PORT": str(port),
        "PLUGIN_BACKEND_WORKERS": str(workers),
        "PLUGIN_BACKEND_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin_backend", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or warming up
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.terminate()  # else reading its stderr waits for it forever
                proc.wait(timeout=20)
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"backend did not start: {stderr[-2000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        store_dir.cleanup()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
