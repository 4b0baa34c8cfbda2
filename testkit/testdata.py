"""The deterministic dataset the integration tests and benchmarks backfill.

Two days at 15 s (``DATA_START_S`` .. ``DATA_END_S`` inclusive, 11,521 samples
per full series) ending at 2026-01-01T00:00:00Z. Pure numpy; the noise comes
from the raw ``PCG64`` bit stream (stable across numpy versions), so every
build gives byte-identical data. Families and what they are for:

``http_requests_total{job="api", service, instance, code}`` (counters)
    ``service`` in checkout/payments, two instances each
    (``checkout-0:8080`` ...), ``code`` in 200/500: 8 series. Monotonic
    integer counters whose rate follows a daily sine (peak around 14:00 UTC)
    with a little noise; 500s are ~2 % of 200s and always > 0. For
    ``rate()``/``increase()`` queries, per-service aggregation and the
    error-ratio style queries root-cause analysis runs.

``node_cpu_usage_ratio{job="node", node}`` (gauges)
    ``node`` in node-a/node-b: a daily sine in [0, 1] plus noise. An ordinary
    gauge for anomaly scoring over a seasonal signal.

``bench_gauge{series="0".."9"}`` (gauges)
    Ten seasonal gauges with different levels and phases. The benchmark asks
    24 h at 15 s of these (10 series x 5,761 points per query_range).

``weird_values{case}`` (gauges)
    ``case`` in nan/posinf/neginf/normal: 1.0 everywhere, except that the first
    three hold NaN, +Inf and -Inf from ``WEIRD_FROM_S`` (the last 6 hours) on.
    Prometheus returns these as the strings "NaN", "+Inf" and "-Inf"; clients
    and models must survive them.

``app_build_info{job="api", service="checkout", version}`` (gauges, value 1)
    An info-style metric whose label changes at a deploy: ``version="v1"``
    before ``DEPLOY_S`` (12 h before the end), ``version="v2"`` from then on.
    There are no staleness markers in backfilled data, so within the 5 min
    lookback after ``DEPLOY_S`` instant queries see both versions.
"""

from __future__ import annotations

import numpy as np

from testkit.promserver import FloatArray, SyntheticSeries

__all__ = [
    "BENCH_SERIES",
    "DATA_END_S",
    "DATA_START_S",
    "DAY_S",
    "DEPLOY_S",
    "HTTP_INSTANCES",
    "NODES",
    "STEP_S",
    "WEIRD_CASES",
    "WEIRD_FROM_S",
    "build_test_series",
    "timestamps",
]

DAY_S = 86_400
DATA_END_S = 1_767_225_600  # 2026-01-01T00:00:00Z
DATA_START_S = DATA_END_S - 2 * DAY_S
STEP_S = 15
DEPLOY_S = DATA_END_S - 12 * 3600  # app_build_info switches v1 -> v2 here
WEIRD_FROM_S = DATA_END_S - 6 * 3600  # weird_values turn NaN/+Inf/-Inf here
BENCH_SERIES = 10
NODES = ("node-a", "node-b")
HTTP_INSTANCES: dict[str, tuple[str, ...]] = {
    "checkout": ("checkout-0:8080", "checkout-1:8080"),
    "payments": ("payments-0:8080", "payments-1:8080"),
}
WEIRD_CASES = ("nan", "posinf", "neginf", "normal")


def timestamps() -> FloatArray:
    """All sample times, ``DATA_START_S`` .. ``DATA_END_S`` inclusive, every ``STEP_S``."""
    return np.arange(DATA_START_S, DATA_END_S + STEP_S, STEP_S, dtype=np.float64)


def _uniform(seed: int, n: int) -> FloatArray:
    """``n`` uniforms in [0, 1) from PCG64's raw stream (fixed across numpy versions)."""
    raw = np.random.PCG64(seed).random_raw(n)
    assert isinstance(raw, np.ndarray)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _noise(seed: int, n: int) -> FloatArray:
    """Roughly standard-normal noise (Irwin-Hall: sum of 12 uniforms - 6)."""
    u = _uniform(seed, 12 * n).reshape(n, 12)
    out: FloatArray = u.sum(axis=1) - 6.0
    return out


def _daily(ts: FloatArray, phase: float = 0.0) -> FloatArray:
    """Daily sine in [-1, 1], peaking around 14:00 UTC when ``phase`` is 0."""
    out: FloatArray = np.sin(2.0 * np.pi * ((ts - 8 * 3600) % DAY_S) / DAY_S + phase)
    return out


def _http_requests(ts: FloatArray) -> list[SyntheticSeries]:
    out: list[SyntheticSeries] = []
    seed = 100
    for s_idx, (service, instances) in enumerate(HTTP_INSTANCES.items()):
        base = 40.0 if service == "checkout" else 25.0
        for i_idx, instance in enumerate(instances):
            for code, share in (("200", 1.0), ("500", 0.02)):
                seed += 1
                scale = base * share * (1.0 + 0.1 * i_idx)
                rate = (
                    scale
                    * (1.0 + 0.5 * _daily(ts, 0.3 * s_idx))
                    * (1.0 + 0.05 * _noise(seed, ts.size))
                )
                rate = np.maximum(rate, 0.1 * scale)  # per-second rate, always > 0
                start = 1_000.0 * (seed - 100)
                counter = np.floor(start + np.concatenate(([0.0], np.cumsum(rate[1:] * STEP_S))))
                out.append(
                    SyntheticSeries(
                        labels={
                            "__name__": "http_requests_total",
                            "job": "api",
                            "service": service,
                            "instance": instance,
                            "code": code,
                        },
                        timestamps_s=ts,
                        values=counter,
                        kind="counter",
                    )
                )
    return out


def _node_cpu(ts: FloatArray) -> list[SyntheticSeries]:
    out: list[SyntheticSeries] = []
    for idx, node in enumerate(NODES):
        values = 0.45 + 0.25 * _daily(ts, 0.5 * idx) + 0.02 * _noise(200 + idx, ts.size)
        out.append(
            SyntheticSeries(
                labels={"__name__": "node_cpu_usage_ratio", "job": "node", "node": node},
                timestamps_s=ts,
                values=np.clip(values, 0.0, 1.0),
            )
        )
    return out


def _bench(ts: FloatArray) -> list[SyntheticSeries]:
    return [
        SyntheticSeries(
            labels={"__name__": "bench_gauge", "series": str(i)},
            timestamps_s=ts,
            values=100.0 + 10.0 * i + 20.0 * _daily(ts, 0.6 * i) + 2.0 * _noise(300 + i, ts.size),
        )
        for i in range(BENCH_SERIES)
    ]


def _weird(ts: FloatArray) -> list[SyntheticSeries]:
    special = {"nan": np.nan, "posinf": np.inf, "neginf": -np.inf, "normal": 1.0}
    late = ts >= WEIRD_FROM_S
    return [
        SyntheticSeries(
            labels={"__name__": "weird_values", "case": case},
            timestamps_s=ts,
            values=np.where(late, special[case], 1.0),
        )
        for case in WEIRD_CASES
    ]


def _build_info(ts: FloatArray) -> list[SyntheticSeries]:
    before = ts < DEPLOY_S
    out: list[SyntheticSeries] = []
    for version, mask in (("v1", before), ("v2", ~before)):
        sel = ts[mask]
        out.append(
            SyntheticSeries(
                labels={
                    "__name__": "app_build_info",
                    "job": "api",
                    "service": "checkout",
                    "version": version,
                },
                timestamps_s=sel,
                values=np.ones_like(sel),
            )
        )
    return out


def build_test_series() -> list[SyntheticSeries]:
    """The whole integration-test dataset (see the module docstring)."""
    ts = timestamps()
    return [
        *_http_requests(ts),
        *_node_cpu(ts),
        *_bench(ts),
        *_weird(ts),
        *_build_info(ts),
    ]
