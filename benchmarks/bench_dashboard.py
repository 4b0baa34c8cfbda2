"""A dashboard of 5 anomaly panels opened cold: how long each panel takes.

A real Prometheus backfilled with two weeks at 15 s of 5 seasonal gauges (about
what a default Prometheus keeps, so a detector gets the history it asks for) and a
real ``plugin-backend serve`` (gunicorn, 2 workers, as users deploy it). Each round
starts a fresh server (nothing cached: no scores, no forecasts; the model is loaded,
as after the server's warm-up) and requests the 5 panels at once, as Grafana does
when a dashboard opens: 6 h range, 20 s step, the default detector. Two dashboards:

* ``5 series``: one anomaly-score panel for each of 5 series (nothing to share);
* ``1 series``: the anomaly overview of one series -- band, score, windows table,
  the annotation query (another width) and an upward-only score panel.

Target (issue 18): the whole dashboard (its last panel answered) <= 2 s p50.

``BENCH_DETECTOR=transformer`` (any registered name) asks every panel for that
detector instead, and has the servers load it at start (their warm-up).

``BENCH_BASELINE=/path/to/other/checkout`` also runs every round on that checkout's
code (a server started there), alternating with this one's, so a loaded machine
weighs on both alike: compare the two only within one run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmarks.common import gunicorn_backend, percentile, print_table
from testkit.promserver import PrometheusServer, SyntheticSeries, start_backfilled

DATA_END_S = 1_767_225_600  # 2026-01-01T00:00:00Z
HISTORY_DAYS = 14

ROUNDS = 5
DETECTOR = os.environ.get("BENCH_DETECTOR") or None  # None: the default
RANGE_S = 6 * 3600
STEP_S = 20
ONE = 'dash_gauge{series="0"}'
DASHBOARDS: dict[str, list[tuple[str, dict[str, Any], int]]] = {
    # (kind, payload, maxDataPoints)
    "5 series": [
        ("anomaly_score", {"expr": f'dash_gauge{{series="{i}"}}'}, RANGE_S // STEP_S + 1)
        for i in range(5)
    ],
    "1 series": [
        ("band", {"expr": ONE}, RANGE_S // STEP_S + 1),
        ("anomaly_score", {"expr": ONE}, RANGE_S // STEP_S + 1),
        ("anomalies", {"expr": ONE}, RANGE_S // STEP_S + 1),
        ("anomalies", {"expr": ONE}, 300),  # the annotation query
        ("anomaly_score", {"expr": ONE, "direction": "up"}, 700),
    ],
}


def _gauges() -> list[SyntheticSeries]:
    ts = np.arange(DATA_END_S - HISTORY_DAYS * 86_400, DATA_END_S + 15, 15, dtype=np.float64)
    day = 2 * np.pi * ts / 86_400
    return [
        SyntheticSeries(
            labels={"__name__": "dash_gauge", "series": str(i)},
            timestamps_s=ts,
            values=100.0
            + 10.0 * i
            + 20.0 * np.sin(day + 0.6 * i)
            + 2.0 * np.random.default_rng(300 + i).standard_normal(ts.size),
        )
        for i in range(5)
    ]


@contextmanager
def _prometheus() -> Iterator[PrometheusServer]:
    with tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:
        server = start_backfilled(_gauges(), Path(tmp), timeout_s=120)
        try:
            yield server
        finally:
            server.stop()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _panel(backend: str, kind: str, payload: dict[str, Any], max_points: int) -> float | None:
    """Seconds until the panel's answer was read; None when it was refused (HTTP 429:
    the per-worker limit on concurrent anomaly requests ran out of patience)."""
    if DETECTOR is not None:
        payload = {**payload, "detector": DETECTOR}
    body = {
        "range": {"from": _iso(DATA_END_S - RANGE_S), "to": _iso(DATA_END_S)},
        "intervalMs": STEP_S * 1000,
        "maxDataPoints": max_points,
        "targets": [{"refId": "A", "target": kind, "payload": payload}],
    }
    session = requests.Session()
    session.trust_env = False
    started = time.perf_counter()
    response = session.post(backend + "/datasource/query", json=body, timeout=120)
    elapsed = time.perf_counter() - started
    if response.status_code == 429:
        return None
    if response.status_code != 200:
        raise RuntimeError(f"{kind} {payload}: HTTP {response.status_code}: {response.text}")
    response.json()
    return elapsed


@contextmanager
def _backend(prom_url: str, code: str | None) -> Iterator[str]:
    """A fresh server running this checkout's code, or ``code``'s (another checkout)."""
    with ExitStack() as stack:
        if code is None:
            yield stack.enter_context(gunicorn_backend(prom_url))
            return
        here, path = os.getcwd(), os.environ.get("PYTHONPATH")
        os.chdir(code)  # ``python -m`` imports from the working directory first
        os.environ["PYTHONPATH"] = code
        try:
            url = stack.enter_context(gunicorn_backend(prom_url))
        finally:
            os.chdir(here)
            if path is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = path
        yield url


def _round(
    prom_url: str, panels: list[tuple[str, dict[str, Any], int]], code: str | None = None
) -> tuple[list[float | None], float]:
    with _backend(prom_url, code) as backend:
        started = time.perf_counter()
        with ThreadPoolExecutor(len(panels)) as pool:
            times = list(pool.map(lambda p: _panel(backend, *p), panels))
        return times, time.perf_counter() - started


def main() -> None:
    baseline = os.environ.get("BENCH_BASELINE") or None
    if DETECTOR is not None:  # read by the servers started below
        os.environ["PLUGIN_BACKEND_WARM_DETECTORS"] = DETECTOR
    codes: list[tuple[str, str | None]] = [("", None)]
    if baseline is not None:
        codes = [(" (baseline)", baseline), ("", None)]
    rows = []
    with _prometheus() as prom:
        for name, panels in DASHBOARDS.items():
            per_panel: dict[str, list[float]] = {label: [] for label, _ in codes}
            whole: dict[str, list[float]] = {label: [] for label, _ in codes}
            refused = dict.fromkeys(per_panel, 0)
            for _ in range(ROUNDS):
                for label, code in codes:  # alternating: the same load on both
                    times, wall = _round(prom.url, panels, code)
                    per_panel[label] += [t for t in times if t is not None]
                    refused[label] += sum(t is None for t in times)
                    whole[label].append(wall)
            for label, _ in codes:
                done = per_panel[label]
                rows.append(
                    [
                        name + label,
                        f"{percentile(done, 50):.2f}",
                        f"{percentile(done, 95):.2f}",
                        f"{max(done):.2f}",
                        f"{percentile(whole[label], 50):.2f}",
                        str(refused[label]),
                    ]
                )
    print_table(
        f"dashboard of 5 anomaly panels, cold (fresh server each round, {ROUNDS} rounds), "
        f"6 h at {STEP_S} s, {DETECTOR or 'default'} detector, gunicorn 2 workers; target: "
        "whole dashboard <= 2 s p50",
        [
            "dashboard",
            "panel p50 s",
            "panel p95 s",
            "panel max s",
            "whole dashboard p50 s",
            "panels refused (429)",
        ],
        rows,
    )
