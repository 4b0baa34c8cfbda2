"""``/datasource/query`` raw passthrough vs a direct Prometheus ``query_range``.

Same data (10 series, 24 h at 15 s = 5,761 points each), same real Prometheus,
measured side by side (interleaved) in one run, no response caching. The
backend runs under gunicorn with 2 workers, as users deploy it. Then the
backend's own time is broken down in-process to show where it goes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import requests

from benchmarks.common import (
    backfilled_prometheus,
    gunicorn_backend,
    percentile,
    print_table,
)
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.datasource.render import legend_name, timeseries_frame
from plugin_backend.types import TimeRange
from testkit.testdata import DATA_END_S

EXPR = "bench_gauge"
STEP_S = 15
START_S = DATA_END_S - 86_400
ITERATIONS = 40
WARMUP = 5


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _direct(session: requests.Session, prom: str, encoding: str) -> float:
    started = time.perf_counter()
    response = session.post(
        prom + "/api/v1/query_range",
        data={"query": EXPR, "start": START_S, "end": DATA_END_S, "step": STEP_S},
        headers={"Accept-Encoding": encoding},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    elapsed = time.perf_counter() - started
    assert len(body["data"]["result"]) == 10
    return elapsed


def _backend(session: requests.Session, backend: str) -> float:
    body = {
        "range": {"from": _iso(START_S), "to": _iso(DATA_END_S)},
        "intervalMs": STEP_S * 1000,
        "maxDataPoints": 5_761,
        "targets": [{"refId": "A", "target": "promql", "payload": {"expr": EXPR}}],
    }
    started = time.perf_counter()
    response = session.post(backend + "/datasource/query", json=body, timeout=30)
    response.raise_for_status()
    frames = response.json()
    elapsed = time.perf_counter() - started
    assert len(frames) == 10
    assert len(frames[0]["datapoints"]) == 5_761
    return elapsed


def _breakdown(prom: str) -> list[list[str]]:
    client = PrometheusClient(base_url=prom)
    fetch, render, dump = [], [], []
    for _ in range(20):
        t0 = time.perf_counter()
        series = client.query_range(EXPR, TimeRange(START_S, DATA_END_S), STEP_S)
        t1 = time.perf_counter()
        frames = [timeseries_frame(legend_name(s.labels), s) for s in series]
        t2 = time.perf_counter()
        orjson.dumps(frames, option=orjson.OPT_SERIALIZE_NUMPY)
        t3 = time.perf_counter()
        fetch.append(t1 - t0)
        render.append(t2 - t1)
        dump.append(t3 - t2)
    return [
        [name, f"{percentile(v, 50) * 1000:.2f}"]
        for name, v in (
            ("Prometheus fetch + parse (client)", fetch),
            ("render frames", render),
            ("orjson serialise", dump),
        )
    ]


def main() -> None:
    with backfilled_prometheus() as prom, gunicorn_backend(prom.url) as backend:
        gzip, plain, backend_session = (requests.Session() for _ in range(3))
        for session in (gzip, plain, backend_session):
            session.trust_env = False
        for _ in range(WARMUP):
            _direct(gzip, prom.url, "gzip, deflate")
            _direct(plain, prom.url, "identity")
            _backend(backend_session, backend)
        direct_gzip: list[float] = []
        direct_plain: list[float] = []
        ours: list[float] = []
        for _ in range(ITERATIONS):
            direct_gzip.append(_direct(gzip, prom.url, "gzip, deflate"))
            direct_plain.append(_direct(plain, prom.url, "identity"))
            ours.append(_backend(backend_session, backend))
        breakdown = _breakdown(prom.url)

    def row(name: str, values: list[float]) -> list[str]:
        return [
            name,
            f"{percentile(values, 50) * 1000:.1f}",
            f"{percentile(values, 95) * 1000:.1f}",
        ]

    def ratio(name: str, base: list[float]) -> list[str]:
        p50 = percentile(ours, 50) / percentile(base, 50)
        p95 = percentile(ours, 95) / percentile(base, 95)
        return [name, f"{p50:.2f}", f"{p95:.2f}"]

    print_table(
        f"/query passthrough: {EXPR}, 10 series x 5,761 points (24 h at 15 s), "
        f"{ITERATIONS} interleaved requests each, the client decodes the JSON",
        ["path", "p50 ms", "p95 ms"],
        [
            row("direct query_range, gzip (HTTP clients' default)", direct_gzip),
            row("direct query_range, uncompressed", direct_plain),
            row("backend /datasource/query (gunicorn, 2 workers)", ours),
            ratio("ratio backend / direct gzip", direct_gzip),
            ratio("ratio backend / direct uncompressed", direct_plain),
        ],
    )
    print_table("where the backend's time goes (in-process, p50)", ["stage", "ms"], breakdown)
