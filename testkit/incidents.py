"""Incident simulator: a small service estate with injected faults, for RCA benchmarks.

Pure numpy, deterministic per ``(fault, seed, start_s)`` (noise comes from the raw
``PCG64`` bit stream, like :mod:`testkit.testdata`).

The estate (:data:`SERVICES`, :func:`dependency_map`)::

    frontend -> checkout -> payments -> postgres
                         -> inventory
                         -> postgres
                         -> redis
             -> catalog
             -> auth
    reporting (batch jobs, huge natural variance), notifications (queue consumer)

on ``node-1`` .. ``node-3`` (postgres runs on node-3, redis on node-2). Every
service instance exports (labels ``service``, ``instance``):

* ``app_requests_total`` / ``app_errors_total`` (counters: take ``rate()``),
* ``app_request_latency_p99_seconds``, ``app_inflight_requests``,
* ``process_cpu_usage_ratio`` (of the CPU limit), ``process_resident_memory_bytes``,
  ``runtime_gc_pause_p99_seconds``,
* ``app_build_info{version}`` (value 1; a deploy ends one series and starts another),
* DB clients (checkout, payments): ``db_pool_connections_in_use`` / ``_max``,
* redis clients (checkout): ``cache_hit_ratio``,

plus ``redis_keyspace_hit_ratio``, ``redis_evicted_keys_total`` (redis),
``pg_stat_activity_connections`` (postgres) and node metrics (labels ``node``,
``instance``): ``node_cpu_usage_ratio``, ``node_memory_used_bytes``,
``node_disk_io_util_ratio``, ``node_network_receive_bytes_total``. About 160
series per case, sampled every 15 s. Load-driven metrics follow a daily sine
(peak around 14:00 UTC) with autocorrelated and white noise.

Faults (:data:`FAULTS`): each has one true root-cause series and entity; symptoms
follow downstream -> upstream with per-edge lags of 30 s to 2.5 min (plus a
15-45 s "queueing" lag between a saturated resource and its own latency). A slow
callee does not report errors itself: its callers time out on it, so errors
show up one tier above the slowness:

=====================  ==============================================  ====================
fault                  root cause series (entity)                      symptom series
=====================  ==============================================  ====================
cpu_hog                process_cpu_usage_ratio of one instance of      frontend-0 p99
                       checkout/payments/inventory (that service)
memory_leak            process_resident_memory_bytes, one instance     frontend-0 p99
                       (that service); GC trouble after 15-25 min
conn_pool_exhaustion   db_pool_connections_in_use, one instance of     frontend-0 errors
                       checkout/payments (that service)
slow_dependency        payments-0 p99 latency (payments)               frontend-0 p99
cache_failure          redis_keyspace_hit_ratio (redis)                checkout-0 p99
disk_saturation        node_disk_io_util_ratio{node-3} (node-3)        frontend-0 p99
bad_deploy             the new app_build_info series of instance 0     frontend-0 errors
                       of checkout/payments/inventory (that service)
traffic_surge          app_requests_total of frontend-0 (frontend)     checkout-0 p99
=====================  ==============================================  ====================

Every case also carries unrelated distractors in the hour before ``noticed_s``:
a level shift on a service outside the causal chain (often starting *before*
the real onset), a short big spike in an irrelevant series, a node that jumps,
sometimes a harmless deploy, and the always-bursty ``reporting`` service.

:func:`scenario_suite` puts many cases on one shared timeline (one per 12 h
slot) and :func:`merge_cases` joins them into one series per identity, so a
single backfill holds them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from plugin_backend.types import format_series_name
from testkit.promserver import FloatArray, SyntheticSeries

__all__ = [
    "AFTER_S",
    "DAY_S",
    "FAULTS",
    "HISTORY_S",
    "NODES",
    "SERVICES",
    "SLOT_S",
    "STEP_S",
    "SUITE_EPOCH_S",
    "IncidentCase",
    "ServiceSpec",
    "dependency_map",
    "merge_cases",
    "scenario_suite",
    "simulate",
]

STEP_S = 15
DAY_S = 86_400
HISTORY_S = 6 * 3600  # data before the onset
AFTER_S = 3600  # data after the onset
SLOT_S = 12 * 3600  # scenario_suite: one incident per slot
SUITE_EPOCH_S = 1_769_904_000  # 2026-02-01T00:00:00Z
NODES = ("node-1", "node-2", "node-3")
FAULTS: tuple[str, ...] = (
    "cpu_hog",
    "memory_leak",
    "conn_pool_exhaustion",
    "slow_dependency",
    "cache_failure",
    "disk_saturation",
    "bad_deploy",
    "traffic_surge",
)

_T = TypeVar("_T")
_Key = tuple[str, int]  # (service, instance index)
_GIB = float(2**30)


@dataclass(frozen=True)
class ServiceSpec:
    """One service: one instance per entry of ``nodes``."""

    name: str
    nodes: tuple[str, ...]
    depends_on: tuple[str, ...]
    rps: float  # total requests/s at average load
    latency_s: float  # p99 at average load
    error_ratio: float
    cpu: float  # per-instance CPU ratio (of its limit) at average load
    memory_gib: float
    memory_limit_gib: float
    port: int
    version: str
    db_client: bool = False
    cache_client: bool = False

    @property
    def instances(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-{i}:{self.port}" for i in range(len(self.nodes)))


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "frontend",
        ("node-1", "node-2", "node-3"),
        ("checkout", "catalog", "auth"),
        rps=300.0,
        latency_s=0.35,
        error_ratio=0.002,
        cpu=0.30,
        memory_gib=0.6,
        memory_limit_gib=1.0,
        port=8080,
        version="3.12.0",
    ),
    ServiceSpec(
        "checkout",
        ("node-1", "node-2"),
        ("payments", "inventory", "postgres", "redis"),
        rps=60.0,
        latency_s=0.22,
        error_ratio=0.003,
        cpu=0.32,
        memory_gib=0.9,
        memory_limit_gib=2.0,
        port=8080,
        version="1.41.2",
        db_client=True,
        cache_client=True,
    ),
    ServiceSpec(
        "payments",
        ("node-2", "node-3"),
        ("postgres",),
        rps=40.0,
        latency_s=0.15,
        error_ratio=0.002,
        cpu=0.28,
        memory_gib=0.7,
        memory_limit_gib=1.5,
        port=8080,
        version="2.7.1",
        db_client=True,
    ),
    ServiceSpec(
        "inventory",
        ("node-1", "node-3"),
        (),
        rps=80.0,
        latency_s=0.06,
        error_ratio=0.001,
        cpu=0.25,
        memory_gib=0.5,
        memory_limit_gib=1.0,
        port=8080,
        version="0.19.4",
    ),
    ServiceSpec(
        "postgres",
        ("node-3",),
        (),
        rps=400.0,
        latency_s=0.012,
        error_ratio=0.0005,
        cpu=0.30,
        memory_gib=6.0,
        memory_limit_gib=12.0,
        port=9187,
        version="15.6",
    ),
    ServiceSpec(
        "redis",
        ("node-2",),
        (),
        rps=900.0,
        latency_s=0.0015,
        error_ratio=0.0001,
        cpu=0.20,
        memory_gib=2.0,
        memory_limit_gib=4.0,
        port=9121,
        version="7.2.4",
    ),
    ServiceSpec(
        "catalog",
        ("node-1", "node-2"),
        (),
        rps=200.0,
        latency_s=0.08,
        error_ratio=0.001,
        cpu=0.27,
        memory_gib=0.8,
        memory_limit_gib=1.5,
        port=8080,
        version="5.3.0",
    ),
    ServiceSpec(
        "auth",
        ("node-3",),
        (),
        rps=250.0,
        latency_s=0.03,
        error_ratio=0.001,
        cpu=0.22,
        memory_gib=0.4,
        memory_limit_gib=1.0,
        port=8080,
        version="4.0.9",
    ),
    ServiceSpec(
        "reporting",
        ("node-1",),
        (),
        rps=2.0,
        latency_s=3.0,
        error_ratio=0.01,
        cpu=0.15,
        memory_gib=1.0,
        memory_limit_gib=4.0,
        port=8080,
        version="0.9.0",
    ),
    ServiceSpec(
        "notifications",
        ("node-2",),
        (),
        rps=10.0,
        latency_s=0.1,
        error_ratio=0.004,
        cpu=0.10,
        memory_gib=0.3,
        memory_limit_gib=0.5,
        port=8080,
        version="1.2.3",
    ),
)
_SPEC = {s.name: s for s in SERVICES}
# (caller, callee): (latency weight, error weight, share of the callee's traffic)
_EDGES: dict[tuple[str, str], tuple[float, float, float]] = {
    ("frontend", "checkout"): (0.9, 0.9, 1.0),
    ("frontend", "catalog"): (0.5, 0.5, 1.0),
    ("frontend", "auth"): (0.6, 0.8, 1.0),
    ("checkout", "payments"): (1.0, 0.9, 1.0),
    ("checkout", "inventory"): (0.8, 0.8, 1.0),
    ("checkout", "postgres"): (4.0, 0.6, 0.5),
    ("checkout", "redis"): (3.0, 0.3, 1.0),
    ("payments", "postgres"): (3.0, 0.6, 0.4),
}
# Callers before callees (traffic flows down), reversed for latency (flows up).
_TOP_DOWN = (
    "frontend", "checkout", "catalog", "auth", "payments", "inventory",
    "redis", "postgres", "reporting", "notifications",
)  # fmt: skip
_POOL_MAX = {"checkout": 40.0, "payments": 30.0}
_REDIS_HIT = 0.93


def dependency_map() -> dict[str, dict[str, dict[str, list[str]]]]:
    """The true service graph: ``{"services": {name: {"depends_on", "runs_on"}}}``."""
    return {
        "services": {
            s.name: {"depends_on": list(s.depends_on), "runs_on": sorted(set(s.nodes))}
            for s in SERVICES
        }
    }


def _callers(service: str) -> set[str]:
    """Every service that (transitively) calls ``service``."""
    out: set[str] = set()
    todo = [service]
    while todo:
        cur = todo.pop()
        for caller, callee in _EDGES:
            if callee == cur and caller not in out:
                out.add(caller)
                todo.append(caller)
    return out


def _callees(service: str) -> set[str]:
    out: set[str] = set()
    todo = [service]
    while todo:
        cur = todo.pop()
        for caller, callee in _EDGES:
            if caller == cur and callee not in out:
                out.add(callee)
                todo.append(callee)
    return out


# ---------------------------------------------------------------------- the case


@dataclass(frozen=True)
class IncidentCase:
    """One simulated incident over the whole estate.

    ``start_s`` is the onset of the root cause; ``noticed_s`` is when the symptom
    would page (its onset plus 3-5 minutes); ``symptom_onset_s`` is that onset.
    Series names are :func:`plugin_backend.types.format_series_name` strings of
    the raw series (``symptom_series`` may be a counter: take its ``rate()``).
    ``distractor_series`` names the series with injected unrelated anomalies
    (plus the naturally bursty ``reporting`` service); ``chain`` lists the
    entities the fault really touches, root cause first.
    """

    fault: str
    seed: int
    start_s: float
    noticed_s: float
    root_cause_series: str
    root_cause_entity: str
    symptom_series: str
    series: list[SyntheticSeries]
    symptom_onset_s: float
    distractor_series: tuple[str, ...]
    chain: tuple[str, ...]

    def find(self, name: str) -> SyntheticSeries:
        """The series whose ``format_series_name`` is ``name`` (KeyError if none)."""
        for s in self.series:
            if format_series_name(s.labels) == name:
                return s
        raise KeyError(name)


# ------------------------------------------------------------------------ numerics


class _Rng:
    """Uniforms and normals from PCG64's raw stream (stable across numpy versions)."""

    def __init__(self, *entropy: int) -> None:
        self._bits = np.random.PCG64(np.random.SeedSequence(list(entropy)))

    def uniform(self, n: int) -> FloatArray:
        raw = self._bits.random_raw(n)
        assert isinstance(raw, np.ndarray)
        out: FloatArray = (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
        return out

    def normal(self, n: int) -> FloatArray:
        half = (n + 1) // 2
        u = self.uniform(2 * half)
        radius = np.sqrt(-2.0 * np.log(1.0 - u[:half]))
        angle = 2.0 * np.pi * u[half:]
        out: FloatArray = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
        return out

    def smooth(self, n: int, tau_steps: float = 8.0) -> FloatArray:
        """Unit-variance autocorrelated (AR(1)-like, time constant ``tau_steps``) noise."""
        width = max(2, int(4 * tau_steps))
        kernel = np.exp(-np.arange(width) / tau_steps)
        kernel /= np.sqrt(np.sum(kernel**2))
        out: FloatArray = np.convolve(self.normal(n + width - 1), kernel, mode="valid")
        return out

    def between(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(self.uniform(1)[0])

    def pick(self, options: Sequence[_T]) -> _T:
        return options[min(int(float(self.uniform(1)[0]) * len(options)), len(options) - 1)]

    def grid_time(self, lo: float, hi: float) -> float:
        """A time on the 15 s grid in ``[lo, hi]`` (``lo`` if the range holds none)."""
        first, last = math.ceil(lo / STEP_S), math.floor(hi / STEP_S)
        if last < first:
            return float(first * STEP_S)
        return float(STEP_S * (first + min(int(self.between(0, last - first + 1)), last - first)))


def _daily(ts: FloatArray) -> FloatArray:
    """Daily sine in [-1, 1] peaking around 14:00 UTC."""
    out: FloatArray = np.sin(2.0 * np.pi * ((ts - 8 * 3600) % DAY_S) / DAY_S)
    return out


def _ramp(ts: FloatArray, t0: float, duration_s: float) -> FloatArray:
    """0 before ``t0``, rising linearly to 1 over ``duration_s``, 1 after."""
    out: FloatArray = np.clip((ts - t0) / max(duration_s, 1e-9) + (duration_s <= 0), 0.0, 1.0)
    return out


def _window(ts: FloatArray, t0: float, duration_s: float) -> FloatArray:
    out: FloatArray = ((ts >= t0) & (ts < t0 + duration_s)).astype(np.float64)
    return out


def _shift(x: FloatArray, lag_s: float) -> FloatArray:
    """``x`` delayed by ``lag_s`` (padded with its first value)."""
    k = round(lag_s / STEP_S)
    if k <= 0:
        return x
    if k >= x.size:
        return np.full_like(x, x[0])
    return np.concatenate([np.full(k, x[0]), x[:-k]])


def _saturation(cpu: FloatArray) -> FloatArray:
    """Latency multiplier of a CPU-bound service: 1 up to 72 % CPU, 13x at 100 %."""
    out: FloatArray = 1.0 + 12.0 * np.clip(cpu - 0.72, 0.0, None) ** 2 / 0.0784
    return out


def _grid(start_s: float, history_s: float, after_s: float) -> FloatArray:
    first = math.ceil((start_s - history_s) / STEP_S) * STEP_S
    last = math.floor((start_s + after_s) / STEP_S) * STEP_S
    return np.arange(first, last + STEP_S / 2, STEP_S, dtype=np.float64)


# ---------------------------------------------------------------------- simulation


@dataclass
class _Faults:
    """Fault and distractor inputs to the estate model (all arrays on the grid)."""

    n: int
    own_traffic: dict[str, FloatArray]  # multiplier on a service's own traffic
    cpu_add: dict[_Key, FloatArray]
    cpu_hog: dict[_Key, FloatArray]  # 0..1: how far CPU is pushed to saturation
    mem_add: dict[_Key, FloatArray]  # fraction of the memory limit
    lat_add: dict[_Key, FloatArray]  # seconds
    err_add: dict[_Key, FloatArray]
    pool_leak: dict[_Key, FloatArray]  # fraction of the pool max
    redis_hit_drop: FloatArray
    redis_evictions: FloatArray  # extra evictions/s
    disk_add: dict[str, FloatArray]
    node_mem_add: dict[str, FloatArray]  # bytes
    node_net_mult: dict[str, FloatArray]
    versions: dict[_Key, list[tuple[float, str]]]  # (from time, version) per instance

    def zeros(self) -> FloatArray:
        return np.zeros(self.n)

    def get(self, table: dict[_T, FloatArray], key: _T) -> FloatArray:
        found = table.get(key)
        if found is None:
            found = table[key] = self.zeros()
        return found


def _new_faults(n: int) -> _Faults:
    return _Faults(
        n=n, own_traffic={}, cpu_add={}, cpu_hog={}, mem_add={}, lat_add={}, err_add={},
        pool_leak={}, redis_hit_drop=np.zeros(n), redis_evictions=np.zeros(n), disk_add={},
        node_mem_add={}, node_net_mult={}, versions={},
    )  # fmt: skip


@dataclass
class _Out:
    """Generated metrics: gauges as values, counters as per-second rates."""

    gauges: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], FloatArray]]
    rates: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], FloatArray]]
    lat_excess: dict[_Key, FloatArray]
    err_excess: dict[_Key, FloatArray]

    def gauge(self, labels: dict[str, str], values: FloatArray) -> None:
        self.gauges[tuple(sorted(labels.items()))] = (labels, values)

    def rate(self, labels: dict[str, str], values: FloatArray) -> None:
        self.rates[tuple(sorted(labels.items()))] = (labels, values)


def _svc_labels(name: str, spec: ServiceSpec, i: int) -> dict[str, str]:
    return {"__name__": name, "instance": spec.instances[i], "service": spec.name}


def _node_labels(name: str, node: str) -> dict[str, str]:
    return {"__name__": name, "instance": f"{node}:9100", "node": node}


def _run_estate(ts: FloatArray, rng: _Rng, f: _Faults) -> _Out:  # noqa: PLR0912, PLR0915
    """Generate every metric of the estate from the fault inputs."""
    n = ts.size
    load = 1.0 + 0.45 * _daily(ts)
    out = _Out(gauges={}, rates={}, lat_excess={}, err_excess={})
    lags = {edge: rng.grid_time(30.0, 150.0) for edge in _EDGES}
    queue_lag = {s.name: rng.grid_time(15.0, 45.0) for s in SERVICES}

    # Batch jobs of the reporting service: bursts of 3-10 min every 20-50 min.
    batch = np.zeros(n)
    t = float(ts[0]) + rng.between(0.0, 1800.0)
    while t < ts[-1]:
        batch = np.maximum(batch, _window(ts, t, rng.between(180.0, 600.0)) * rng.between(0.6, 1))
        t += rng.between(1200.0, 3000.0)

    # --- traffic (top-down)
    traffic: dict[str, FloatArray] = {}
    hit_ratio = np.clip(
        _REDIS_HIT - f.redis_hit_drop + 0.008 * rng.smooth(n) + 0.003 * rng.normal(n), 0.0, 1.0
    )
    for name in _TOP_DOWN:
        mult = f.own_traffic.get(name, np.ones(n)).copy()
        for (caller, callee), (_, _, share) in _EDGES.items():
            if callee == name:
                mult += share * (_shift(traffic[caller], lags[(caller, callee)]) - 1.0)
        if name == "postgres":  # cache misses fall through to the database
            miss = np.clip(_REDIS_HIT - _shift(hit_ratio, 30.0), 0.0, None)
            mult += 3.0 * miss * _shift(traffic["checkout"], 30.0)
        if name == "reporting":
            mult = mult * (1.0 + 7.0 * batch)
        traffic[name] = np.maximum(mult, 0.05)

    # --- per-instance load, memory, CPU
    rps: dict[_Key, FloatArray] = {}
    cpu: dict[_Key, FloatArray] = {}
    cpu_nominal: dict[_Key, FloatArray] = {}
    mem: dict[_Key, FloatArray] = {}
    gc_excess: dict[_Key, FloatArray] = {}
    for spec in SERVICES:
        k_inst = len(spec.nodes)
        for i in range(k_inst):
            key = (spec.name, i)
            noise = 0.03 * rng.smooth(n, 12.0) + 0.015 * rng.normal(n)
            rps[key] = np.maximum(spec.rps / k_inst * load * traffic[spec.name] * (1 + noise), 0)
            frac = (
                spec.memory_gib / spec.memory_limit_gib * (0.95 + 0.05 * load)
                + 0.01 * rng.smooth(n, 20.0)
                + f.get(f.mem_add, key)
            )
            frac = np.clip(frac, 0.02, 0.995)
            mem[key] = frac * spec.memory_limit_gib * _GIB
            gc_excess[key] = 0.4 * np.clip((frac - 0.8) / 0.15, 0.0, 1.0) ** 2
            cpu_nominal[key] = spec.cpu * load
            c = spec.cpu * load * traffic[spec.name] * (1.0 + 0.05 * rng.smooth(n, 6.0))
            c = c + 0.02 * rng.normal(n) + f.get(f.cpu_add, key) + 0.6 * gc_excess[key]
            if spec.name == "reporting":
                c = c + 0.75 * batch
            hog = f.get(f.cpu_hog, key)
            c = c + hog * (0.975 + 0.015 * rng.normal(n) - c)
            cpu[key] = np.clip(c, 0.005, 1.0)

    # --- node disk (postgres writes land on node-3)
    disk: dict[str, FloatArray] = {}
    pg_node = _SPEC["postgres"].nodes[0]
    for node in NODES:
        d = 0.08 + 0.04 * load + 0.02 * rng.smooth(n) + 0.01 * rng.normal(n)
        if node == pg_node:
            d = d + 0.22 * load * traffic["postgres"]
        disk[node] = np.clip(d + f.get(f.disk_add, node), 0.0, 1.0)
    disk_lag = rng.grid_time(30.0, 60.0)
    pg_disk_wait = 0.35 * _shift(np.clip((disk[pg_node] - 0.8) / 0.15, 0.0, 1.0), disk_lag)
    f.get(f.lat_add, ("postgres", 0))[:] += pg_disk_wait

    # --- latency, pools and errors (bottom-up)
    svc_lat: dict[str, FloatArray] = {}
    svc_err: dict[str, FloatArray] = {}
    pool_in_use: dict[_Key, FloatArray] = {}
    for name in reversed(_TOP_DOWN):
        spec = _SPEC[name]
        lat_x: list[FloatArray] = []
        err_x: list[FloatArray] = []
        for i in range(len(spec.nodes)):
            key = (name, i)
            base = spec.latency_s * (0.85 + 0.15 * load)
            excess = base * (
                _saturation(_shift(cpu[key], queue_lag[name])) - _saturation(cpu_nominal[key])
            )
            excess = excess + 1.5 * gc_excess[key] + f.get(f.lat_add, key)
            err = f.get(f.err_add, key).copy()
            for (caller, callee), (w_lat, w_err, _) in _EDGES.items():
                if caller == name:
                    lag = lags[(caller, callee)]
                    slow = _shift(svc_lat[callee], lag)
                    excess = excess + w_lat * slow
                    # the callee's errors come back, and the caller times out on it
                    timeouts = 0.25 * np.clip(slow / 1.5, 0.0, 1.0) ** 2
                    err = err + w_err * (_shift(svc_err[callee], lag) + timeouts)
            if spec.db_client:
                pool_max = _POOL_MAX[name]
                pg_slow = _shift(svc_lat["postgres"], 15.0) / _SPEC["postgres"].latency_s
                raw = (
                    (0.2 + 0.1 * load) * traffic[name] * (1.0 + 0.5 * pg_slow)
                    + f.get(f.pool_leak, key)
                ) * pool_max
                use = np.clip(np.round(raw + 1.2 * rng.normal(n)), 0.0, pool_max)
                pool_in_use[key] = use
                starving = np.clip((raw - 0.95 * pool_max) / (0.2 * pool_max), 0.0, 1.0)
                lag = rng.grid_time(15.0, 30.0)
                excess = excess + 1.8 * _shift(starving, lag)
                err = err + 0.25 * _shift(starving, lag + STEP_S)
            if spec.cache_client:  # every miss is a database round trip instead
                miss = np.clip(_REDIS_HIT - _shift(hit_ratio, 30.0), 0.0, None)
                excess = excess + 0.6 * miss
            if name == "reporting":
                excess = excess + spec.latency_s * 5.0 * batch
            out.lat_excess[key] = excess
            out.err_excess[key] = err
            lat_x.append(excess)
            err_x.append(err)

            noise = 1.0 + 0.06 * rng.smooth(n) + 0.04 * rng.normal(n)
            latency = np.maximum((base + excess) * noise, 0.2 * spec.latency_s)
            ratio = np.clip(spec.error_ratio * (1.0 + 0.2 * rng.smooth(n)) + err, 0.0, 1.0)
            gc = 0.008 + 0.004 * load + gc_excess[key] + 0.001 * np.abs(rng.normal(n))
            inflight = rps[key] * (base + excess) / 3.0 * (1.0 + 0.05 * rng.normal(n))

            out.rate(_svc_labels("app_requests_total", spec, i), rps[key])
            out.rate(_svc_labels("app_errors_total", spec, i), rps[key] * ratio)
            out.gauge(_svc_labels("app_request_latency_p99_seconds", spec, i), latency)
            out.gauge(_svc_labels("app_inflight_requests", spec, i), np.maximum(inflight, 0.0))
            out.gauge(_svc_labels("process_cpu_usage_ratio", spec, i), cpu[key])
            out.gauge(_svc_labels("process_resident_memory_bytes", spec, i), mem[key])
            out.gauge(_svc_labels("runtime_gc_pause_p99_seconds", spec, i), gc)
            if spec.db_client:
                out.gauge(_svc_labels("db_pool_connections_in_use", spec, i), pool_in_use[key])
                out.gauge(
                    _svc_labels("db_pool_connections_max", spec, i),
                    np.full(n, _POOL_MAX[name]),
                )
            if spec.cache_client:
                client_hit = _shift(hit_ratio, 15.0) + 0.005 * rng.normal(n)
                out.gauge(_svc_labels("cache_hit_ratio", spec, i), np.clip(client_hit, 0, 1))
        svc_lat[name] = 0.6 * np.max(lat_x, axis=0) + 0.4 * np.mean(lat_x, axis=0)
        svc_err[name] = np.mean(err_x, axis=0)

    redis, pg = _SPEC["redis"], _SPEC["postgres"]
    out.gauge(_svc_labels("redis_keyspace_hit_ratio", redis, 0), hit_ratio)
    evictions = 0.4 * load * (1.0 + 0.2 * rng.normal(n)) + f.redis_evictions
    out.rate(_svc_labels("redis_evicted_keys_total", redis, 0), np.maximum(evictions, 0.0))
    pg_conns = sum(pool_in_use.values(), np.zeros(n)) + 4.0 + np.round(rng.uniform(n) * 2.0)
    out.gauge(_svc_labels("pg_stat_activity_connections", pg, 0), pg_conns)

    # --- nodes
    for node in NODES:
        on_node = [(s, i) for s in SERVICES for i, nd in enumerate(s.nodes) if nd == node]
        node_cpu = 0.06 + sum((0.16 * cpu[(s.name, i)] for s, i in on_node), np.zeros(n))
        node_cpu = np.clip(node_cpu + 0.015 * rng.normal(n), 0.0, 1.0)
        node_mem = 3.0 * _GIB + sum((mem[(s.name, i)] for s, i in on_node), np.zeros(n))
        node_mem = node_mem + f.get(f.node_mem_add, node) + 0.02 * _GIB * rng.smooth(n)
        net = 1500.0 * sum((rps[(s.name, i)] for s, i in on_node), np.zeros(n))
        net = net * f.node_net_mult.get(node, np.ones(n)) * (1.0 + 0.05 * rng.normal(n))
        out.gauge(_node_labels("node_cpu_usage_ratio", node), node_cpu)
        out.gauge(_node_labels("node_memory_used_bytes", node), node_mem)
        out.gauge(_node_labels("node_disk_io_util_ratio", node), disk[node])
        out.rate(_node_labels("node_network_receive_bytes_total", node), np.maximum(net, 0.0))
    return out


# -------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Plan:
    root_series: str
    root_entity: str
    symptom_key: _Key
    symptom_kind: str  # "latency" or "errors"
    chain: tuple[str, ...]


def _name(metric: str, service: str, i: int) -> str:
    return format_series_name(_svc_labels(metric, _SPEC[service], i))


def _inject(  # noqa: PLR0911, PLR0915 - one block per fault
    fault: str, rng: _Rng, ts: FloatArray, start: float, f: _Faults
) -> _Plan:
    """Put the root cause of ``fault`` into ``f``; return what the case should record."""
    front_lat = ("frontend", 0)
    if fault == "cpu_hog":
        svc = rng.pick(("checkout", "payments", "inventory"))
        i = rng.pick(range(len(_SPEC[svc].nodes)))
        f.cpu_hog[(svc, i)] = _ramp(ts, start, rng.between(30.0, 90.0))
        chain = (svc, _SPEC[svc].nodes[i], *sorted(_callers(svc)))
        return _Plan(_name("process_cpu_usage_ratio", svc, i), svc, front_lat, "latency", chain)
    if fault == "memory_leak":
        svc = rng.pick(("checkout", "payments", "inventory"))
        i = rng.pick(range(len(_SPEC[svc].nodes)))
        level = _SPEC[svc].memory_gib / _SPEC[svc].memory_limit_gib
        f.mem_add[(svc, i)] = _ramp(ts, start, rng.between(900.0, 1800.0)) * (0.985 - level)
        chain = (svc, _SPEC[svc].nodes[i], *sorted(_callers(svc)))
        name = _name("process_resident_memory_bytes", svc, i)
        return _Plan(name, svc, front_lat, "latency", chain)
    if fault == "conn_pool_exhaustion":
        svc = rng.pick(("checkout", "payments"))
        i = rng.pick(range(len(_SPEC[svc].nodes)))
        f.pool_leak[(svc, i)] = _ramp(ts, start, rng.between(120.0, 300.0)) * rng.between(0.9, 1.3)
        chain = (svc, "postgres", *sorted(_callers(svc)))
        name = _name("db_pool_connections_in_use", svc, i)
        return _Plan(name, svc, front_lat, "errors", chain)
    if fault == "slow_dependency":
        extra = _ramp(ts, start, rng.between(60.0, 120.0)) * rng.between(0.6, 2.0)
        f.lat_add[("payments", 0)] = extra
        f.lat_add[("payments", 1)] = _shift(extra, STEP_S) * rng.between(0.8, 1.0)
        chain = ("payments", *sorted(_callers("payments")))
        name = _name("app_request_latency_p99_seconds", "payments", 0)
        return _Plan(name, "payments", front_lat, "latency", chain)
    if fault == "cache_failure":
        f.redis_hit_drop[:] = _ramp(ts, start, rng.between(30.0, 60.0)) * rng.between(0.6, 0.8)
        f.redis_evictions[:] = _window(ts, start, rng.between(120.0, 300.0)) * rng.between(
            200.0, 800.0
        )
        chain = ("redis", "postgres", "checkout", "payments", "frontend")
        name = _name("redis_keyspace_hit_ratio", "redis", 0)
        return _Plan(name, "redis", ("checkout", 0), "latency", chain)
    if fault == "disk_saturation":
        node = _SPEC["postgres"].nodes[0]
        f.disk_add[node] = _ramp(ts, start, rng.between(60.0, 180.0)) * 0.75
        chain = (node, "postgres", *sorted(_callers("postgres")))
        name = format_series_name(_node_labels("node_disk_io_util_ratio", node))
        return _Plan(name, node, front_lat, "latency", chain)
    if fault == "bad_deploy":
        svc = rng.pick(("checkout", "payments", "inventory"))
        spec = _SPEC[svc]
        new = f"{spec.version.rsplit('.', 1)[0]}.{int(spec.version.rsplit('.', 1)[1]) + 1}"
        errors, burn = rng.between(0.08, 0.25), rng.between(0.1, 0.25)
        for i in range(len(spec.nodes)):
            at = start + 45.0 * i
            f.versions[(svc, i)] = [(at, new)]
            bad = _ramp(ts, at + STEP_S, 60.0)
            f.err_add[(svc, i)] = bad * errors
            f.cpu_add[(svc, i)] = bad * burn
            f.mem_add[(svc, i)] = -0.25 * _window(ts, at, 120.0)  # restart: cold heap
        name = format_series_name({**_svc_labels("app_build_info", spec, 0), "version": new})
        return _Plan(name, svc, front_lat, "errors", (svc, *sorted(_callers(svc))))
    if fault == "traffic_surge":
        peak_cpu = _SPEC["checkout"].cpu * (1.0 + 0.45 * float(_daily(np.array([start]))[0]))
        mult = max(2.0, rng.between(0.95, 1.1) / peak_cpu)
        f.own_traffic["frontend"] = 1.0 + _ramp(ts, start, rng.between(60.0, 180.0)) * (mult - 1)
        chain = ("frontend", *sorted(_callees("frontend")))
        name = _name("app_requests_total", "frontend", 0)
        return _Plan(name, "frontend", ("checkout", 0), "latency", chain)
    raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")


def _edit(
    labels: dict[str, str], change: Callable[[FloatArray], FloatArray], *, rate: bool = False
) -> Callable[[_Out], None]:
    """An observation-level change of one gauge (or counter rate): it does not propagate."""
    key = tuple(sorted(labels.items()))

    def apply(out: _Out) -> None:
        table = out.rates if rate else out.gauges
        found, values = table[key]
        table[key] = (found, change(values))

    return apply


def _scaled_by(factor: FloatArray) -> Callable[[FloatArray], FloatArray]:
    def scale(values: FloatArray) -> FloatArray:
        out: FloatArray = np.round(values * factor)
        return out

    return scale


def _distract(  # noqa: PLR0915 - one short block per distractor kind
    rng: _Rng, ts: FloatArray, *, start: float, noticed: float, plan: _Plan, f: _Faults
) -> tuple[list[str], list[Callable[[_Out], None]]]:
    """Unrelated anomalies: their series names and the edits that put them in.

    They are applied to the generated metrics (after the estate model ran), so
    they never leak into the symptom: unrelated by construction.
    """
    names: list[str] = []
    edits: list[Callable[[_Out], None]] = []
    free = [s.name for s in SERVICES if s.name not in plan.chain and s.name != "reporting"]
    if not free:  # pragma: no cover - every fault leaves some service out of its chain
        free = ["notifications"]

    # 1. a level shift on an unrelated service, often *before* the real onset
    spec = _SPEC[rng.pick(free)]
    i = rng.pick(range(len(spec.nodes)))
    at = rng.grid_time(start - 1200.0, noticed - 180.0)
    back = at + rng.between(600.0, 2400.0)
    step = _ramp(ts, at, rng.between(15.0, 90.0)) * (1.0 - _ramp(ts, back, 60.0))
    kind = rng.pick(("latency", "cpu", "traffic"))
    size = rng.between(0.0, 1.0)
    cpu_labels = _svc_labels("process_cpu_usage_ratio", spec, i)
    if kind == "traffic":
        req = _svc_labels("app_requests_total", spec, i)
        mult = 1.0 + step * (0.8 + size)
        edits.append(_edit(req, lambda v: v * mult, rate=True))
        edits.append(_edit(cpu_labels, lambda v: np.clip(v * (0.5 + 0.5 * mult), 0.0, 1.0)))
        names += [format_series_name(req), format_series_name(cpu_labels)]
    elif kind == "cpu":
        edits.append(_edit(cpu_labels, lambda v: np.clip(v + step * (0.2 + 0.2 * size), 0, 1)))
        names.append(format_series_name(cpu_labels))
    else:
        lat = _svc_labels("app_request_latency_p99_seconds", spec, i)
        edits.append(_edit(lat, lambda v: v * (1.0 + step * (1.0 + 2.0 * size))))
        names.append(format_series_name(lat))

    # 2. a short, big spike in an irrelevant gauge
    spec2 = _SPEC[rng.pick(free)]
    metric = rng.pick(
        ("app_request_latency_p99_seconds", "runtime_gc_pause_p99_seconds", "app_inflight_requests")
    )
    spike_labels = _svc_labels(metric, spec2, rng.pick(range(len(spec2.nodes))))
    spike = _window(ts, rng.grid_time(noticed - 2700.0, noticed - 60.0), rng.pick((15, 30, 45)))
    factor = rng.between(5.0, 20.0)
    edits.append(_edit(spike_labels, lambda v: v * (1.0 + (factor - 1.0) * spike)))
    names.append(format_series_name(spike_labels))

    # 3. a node that jumps (page cache fill, or a network burst)
    node = rng.pick([nd for nd in NODES if nd != plan.root_entity])
    at = rng.grid_time(start - 1800.0, noticed - 120.0)
    if rng.between(0.0, 1.0) < 0.5:
        fill = _ramp(ts, at, rng.between(60.0, 300.0)) * rng.between(2.0, 5.0) * _GIB
        node_labels = _node_labels("node_memory_used_bytes", node)
        edits.append(_edit(node_labels, lambda v: v + fill))
    else:
        burst = _window(ts, at, rng.between(300.0, 900.0)) * rng.between(2.0, 4.0)
        node_labels = _node_labels("node_network_receive_bytes_total", node)
        edits.append(_edit(node_labels, lambda v: v * (1.0 + burst), rate=True))
    names.append(format_series_name(node_labels))

    # 4. sometimes a harmless deploy of an unrelated service
    if rng.between(0.0, 1.0) < 0.5:
        spec3 = _SPEC[rng.pick(free)]
        new = f"{spec3.version}-patch{1 + int(rng.between(0.0, 9.0))}"
        at = rng.grid_time(start - 2400.0, noticed - 300.0)
        for k in range(len(spec3.nodes)):
            f.versions[(spec3.name, k)] = [(at + 30.0 * k, new)]
            dip = 1.0 - 0.3 * _window(ts, at + 30.0 * k, 90.0)  # restart: cold heap
            mem_labels = _svc_labels("process_resident_memory_bytes", spec3, k)
            edits.append(_edit(mem_labels, _scaled_by(dip)))
        names.append(
            format_series_name({**_svc_labels("app_build_info", spec3, 0), "version": new})
        )

    # 5. always there: the reporting batch jobs (huge natural variance)
    rep = _SPEC["reporting"]
    names.extend(
        format_series_name(_svc_labels(m, rep, 0))
        for m in ("process_cpu_usage_ratio", "app_request_latency_p99_seconds")
    )
    return names, edits


def _onset(excess: FloatArray, ts: FloatArray, start: float) -> float:
    """First time at/after ``start`` where ``excess`` reaches a quarter of its later peak."""
    after = ts >= start
    peak = float(np.max(excess[after])) if np.any(after) else 0.0
    hits = np.flatnonzero(after & (excess >= 0.25 * peak) & (excess > 0))
    return float(ts[hits[0]]) if hits.size else start


def _build_series(ts: FloatArray, out: _Out, rng: _Rng, f: _Faults) -> list[SyntheticSeries]:
    series: list[SyntheticSeries] = []
    for labels, values in out.gauges.values():
        name = labels["__name__"]
        if name.endswith("_bytes"):
            rounded = np.round(values)
        elif name in ("db_pool_connections_in_use", "db_pool_connections_max"):
            rounded = values
        else:
            rounded = np.round(values, 6)
        series.append(SyntheticSeries(labels=labels, timestamps_s=ts, values=rounded))
    for labels, per_s in out.rates.values():
        offset = np.floor(rng.between(1e4, 1e7))
        counter = np.floor(offset + np.concatenate(([0.0], np.cumsum(per_s[1:] * STEP_S))))
        series.append(
            SyntheticSeries(labels=labels, timestamps_s=ts, values=counter, kind="counter")
        )
    for spec in SERVICES:
        for i in range(len(spec.nodes)):
            changes = [(float(ts[0]), spec.version), *f.versions.get((spec.name, i), [])]
            for c, (at, version) in enumerate(changes):
                until = changes[c + 1][0] if c + 1 < len(changes) else math.inf
                mask = (ts >= at) & (ts < until)
                if not np.any(mask):
                    continue
                labels = {**_svc_labels("app_build_info", spec, i), "version": version}
                sel = ts[mask]
                series.append(
                    SyntheticSeries(labels=labels, timestamps_s=sel, values=np.ones_like(sel))
                )
    return series


def simulate(
    fault: str,
    seed: int,
    start_s: float,
    *,
    history_s: float = HISTORY_S,
    after_s: float = AFTER_S,
) -> IncidentCase:
    """One incident of type ``fault`` whose root cause starts at ``start_s``.

    The series cover ``[start_s - history_s, start_s + after_s]`` on the 15 s
    grid (multiples of 15 s); ``after_s`` must leave room for the symptom
    (at least 45 minutes).
    """
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
    if history_s < 3600 or after_s < 2700:
        raise ValueError("need at least 1 h of history and 45 min after the onset")
    rng = _Rng(seed, FAULTS.index(fault), 7919)
    ts = _grid(start_s, history_s, after_s)
    faults = _new_faults(ts.size)
    plan = _inject(fault, rng, ts, start_s, faults)

    out = _run_estate(ts, _Rng(seed, FAULTS.index(fault), 104_729), faults)
    table = out.lat_excess if plan.symptom_kind == "latency" else out.err_excess
    symptom_onset = _onset(table[plan.symptom_key], ts, start_s)
    noticed = min(rng.grid_time(symptom_onset + 180.0, symptom_onset + 300.0), ts[-1] - 600.0)
    distractors, edits = _distract(rng, ts, start=start_s, noticed=noticed, plan=plan, f=faults)
    for edit in edits:
        edit(out)
    series = _build_series(ts, out, rng, faults)
    metric = (
        "app_request_latency_p99_seconds" if plan.symptom_kind == "latency" else "app_errors_total"
    )
    return IncidentCase(
        fault=fault,
        seed=seed,
        start_s=float(start_s),
        noticed_s=float(noticed),
        root_cause_series=plan.root_series,
        root_cause_entity=plan.root_entity,
        symptom_series=_name(metric, *plan.symptom_key),
        series=series,
        symptom_onset_s=symptom_onset,
        distractor_series=tuple(dict.fromkeys(distractors)),
        chain=plan.chain,
    )


# --------------------------------------------------------------------------- suite


def scenario_suite(
    n_per_fault: int,
    seed: int,
    *,
    epoch_s: float = SUITE_EPOCH_S,
    history_s: float = HISTORY_S,
    after_s: float = AFTER_S,
) -> list[IncidentCase]:
    """``n_per_fault`` incidents of every fault on one shared timeline.

    Case ``k`` (faults interleaved) lives in the 12 h slot starting at
    ``epoch_s + k * SLOT_S``; its onset is ``history_s`` into the slot plus a
    random offset on the 15 s grid (so the time of day varies), and its data
    never leaves the slot, so :func:`merge_cases` can join all cases into one
    backfill without overlap.
    """
    if n_per_fault < 1:
        raise ValueError("n_per_fault must be at least 1")
    spare = SLOT_S - history_s - after_s - STEP_S
    if spare < 0:
        raise ValueError("history_s + after_s must fit in a 12 h slot")
    rng = _Rng(seed, 31_337)
    cases: list[IncidentCase] = []
    for k in range(n_per_fault * len(FAULTS)):
        fault = FAULTS[k % len(FAULTS)]
        slot = epoch_s + k * SLOT_S
        start = rng.grid_time(slot + history_s + STEP_S, slot + history_s + spare)
        cases.append(
            simulate(fault, seed * 100_003 + k, start, history_s=history_s, after_s=after_s)
        )
    return cases


def merge_cases(cases: Sequence[IncidentCase]) -> list[SyntheticSeries]:
    """One series per identity across non-overlapping cases (for a single backfill).

    Counters are offset where needed so they stay monotone across cases.
    """
    groups: dict[tuple[tuple[str, str], ...], list[SyntheticSeries]] = {}
    for case in sorted(cases, key=lambda c: c.start_s):
        for s in case.series:
            groups.setdefault(tuple(sorted(s.labels.items())), []).append(s)
    merged: list[SyntheticSeries] = []
    for parts in groups.values():
        if len(parts) == 1:
            merged.append(parts[0])
            continue
        values: list[FloatArray] = []
        last = -math.inf
        for part in parts:
            v = part.values
            if part.kind == "counter" and v.size and last > v[0]:
                v = v + (last - v[0])
            if v.size:
                last = float(v[-1])
            values.append(v)
        merged.append(
            SyntheticSeries(
                labels=parts[0].labels,
                timestamps_s=np.concatenate([p.timestamps_s for p in parts]),
                values=np.concatenate(values),
                kind=parts[0].kind,
            )
        )
    return merged
