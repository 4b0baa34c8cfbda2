"""A second incident generator, from a different model of an estate than the project's own.

Written apart from :mod:`testkit.incidents` (other topology, metric
vocabulary, fault mechanics and timings), so that no single generator is the one every
ranking choice is made on. Seeded and deterministic (numpy ``Generator`` on ``PCG64``).

The estate (:func:`dependency_map`)::

    gateway -> api -> orders -> db, queue, cache, psp (an external payment provider)
                   -> search -> cache, db
                   -> cache (sessions)
    worker (consumes the queue) -> db;  batch (a reporting job) -> db

Pods run on four hosts shared in pairs and threes (``host-a``: gateway, api, search;
``host-b``: gateway, api, worker, batch; ``host-c``: api, orders, search, cache;
``host-d``: orders, worker, db, queue), so a busy pod slows its neighbours.

The model, per 30-second step: gateway traffic follows the time of day with
autocorrelated noise and is split over the pods; each pod's latency is its own service
time stretched by its CPU utilisation (``1 / (1 - u)``) plus what it waits for below
(database time stretched by the database's load and its host's disk, cache misses
turned into four queries each, the payment provider, a full connection pool). Errors
come from pool timeouts, slow calls and bad releases, and travel up to the callers.
Counters are Poisson counts; gauges carry multiplicative and autocorrelated noise,
rare scrape spikes and missed scrapes (a missed scrape drops every series of the pod).

Series (labels ``service`` and ``pod``; hosts ``node``)::

    http_server_requests_total{code="2xx"|"5xx"}, http_server_latency_seconds{quantile}
    process_cpu_seconds_total, container_memory_working_set_bytes, runtime_gc_seconds_total
    db_client_connections{state="used"|"pending"} (orders, search)
    cache_client_requests_total{result="hit"|"miss"} (search, orders)
    http_client_latency_seconds{peer="psp"} (orders)
    cache_keyspace_{hits,misses}_total, cache_evicted_keys_total, cache_memory_used_bytes,
    cache_command_latency_seconds, cache_connected_clients
    db_connections_active, db_query_latency_seconds, db_transactions_total, db_locks_waiting
    queue_depth_messages{queue}, queue_published_total{queue}, probe_duration_seconds (psp)
    deployment_generation{service}, batch_job_running
    node_cpu_utilisation, node_memory_available_bytes, node_disk_io_time_seconds_total,
    node_load1

A deploy is a rollout: the generation steps up and the service's pods are replaced one
by one (new ``pod`` names: old series end, new ones start from zero).

Faults (:data:`FAULTS`), each with one true root-cause entity (``service`` or
``node`` label) and series:

=================  ==========================================  =======================
fault              root cause                                  symptom
=================  ==========================================  =======================
memory_leak        one pod of api/orders/search: memory ramps  gateway p95 latency
                   for 25-60 min, GC then eats its CPU
cache_failure      cache: its commands slow down (x3-6); 1-2    gateway p95 latency
                   min later 40-70 % of client calls time out
                   and fall back to the database, whose load
                   is the loud signal
traffic_surge      gateway's own request rate (x2.2-3.2)       gateway p95 latency
disk_saturation    host-d's disk (a backup): db queries slow   gateway p95 latency
bad_deploy         a rollout of api/orders/search whose new    gateway 5xx rate
                   pods fail 8-25 % of requests
db_pool            a connection leak in one orders/search pod  gateway 5xx rate
                   fills its pool over 6-15 min
cpu_hog            a runaway thread in one api/orders/search   gateway p95 latency
                   pod; its host's neighbours slow too
slow_downstream    psp, the payment provider, answers slowly   gateway p95 latency
=================  ==========================================  =======================

Distractors (each case draws some): the batch job (CPU on host-b, extra database load),
an unrelated spike of the ``emails`` queue, a benign rollout of an uninvolved service,
and a short CPU blip on a host. They may start before the fault.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from benchmarks.rca_case import RcaCase, RcaSource
from plugin_backend.types import format_series_name
from testkit.promserver import FloatArray, SyntheticSeries

__all__ = [
    "FAULTS",
    "STEP_S",
    "Estate2Case",
    "build_source",
    "dependency_map",
    "simulate",
    "suite",
]

STEP_S = 30
HISTORY_S = 4 * 3600  # data before the incident time
AFTER_S = 20 * 60  # data after it
SLOT_S = 6 * 3600  # one case per slot on the shared timeline
LOOKBACK_S = 3 * 3600  # what the benchmark fetches before each incident
EPOCH_S = 1_775_001_600  # 2026-04-01T00:00:00Z
FAULTS: tuple[str, ...] = (
    "memory_leak",
    "cache_failure",
    "traffic_surge",
    "disk_saturation",
    "bad_deploy",
    "db_pool",
    "cpu_hog",
    "slow_downstream",
)

PODS: dict[str, tuple[str, ...]] = {  # service -> host of each pod
    "gateway": ("host-a", "host-b"),
    "api": ("host-a", "host-b", "host-c"),
    "orders": ("host-c", "host-d"),
    "search": ("host-a", "host-c"),
    "worker": ("host-b", "host-d"),
    "batch": ("host-b",),
}
HOSTS = ("host-a", "host-b", "host-c", "host-d")
STORES = {"cache": "host-c", "db": "host-d", "queue": "host-d"}
_NEEDS = {
    "gateway": ["api"],
    "api": ["orders", "search", "cache"],
    "orders": ["db", "queue", "cache", "psp"],
    "search": ["cache", "db"],
    "worker": ["queue", "db"],
    "batch": ["db"],
}
_CPU_PER_REQ = {"gateway": 0.002, "api": 0.006, "orders": 0.012, "search": 0.009}
_CORES = {"gateway": 1.0, "api": 1.5, "orders": 1.0, "search": 1.0, "worker": 0.5, "batch": 2.0}
_SERVICE_TIME = {"gateway": 0.004, "api": 0.010, "orders": 0.022, "search": 0.016}
_POOL_MAX = {"orders": 12.0, "search": 8.0}
_HOST_CORES = 4.0
_MEM_LIMIT = 1.0 * 2**30
_ORDERS_SHARE = 0.3  # of api requests; the rest go to search
_DB_COST = 0.0027  # db CPU share per query per second
_MISS_QUERIES = 5.0  # a search cache miss costs this many queries


def dependency_map() -> dict[str, Any]:
    """The estate's services, what they call and where they run (``load_dependency_map``)."""
    services: dict[str, dict[str, list[str]]] = {}
    for svc, hosts in PODS.items():
        services[svc] = {"depends_on": list(_NEEDS[svc]), "runs_on": sorted(set(hosts))}
    for store, host in STORES.items():
        services[store] = {"runs_on": [host]}
    services["psp"] = {}
    return {"services": services, "nodes": list(HOSTS)}


# ------------------------------------------------------------------------- the case


@dataclass(frozen=True)
class Estate2Case:
    """One incident: the series of the whole estate and the truth about it."""

    fault: str
    seed: int
    fault_start_s: float
    noticed_s: float
    symptom_series: str
    root_cause_entity: str
    root_cause_series: str
    distractors: tuple[str, ...]
    series: list[SyntheticSeries]


@dataclass
class _Fault:
    """What the fault (or a distractor) does, as per-step arrays (``None``: nothing)."""

    traffic: FloatArray | None = None  # gateway traffic multiplier
    pod_cpu: dict[str, FloatArray] = field(default_factory=dict)  # pod -> extra cores used
    pod_mem: dict[str, FloatArray] = field(default_factory=dict)  # pod -> leaked bytes
    pool_leak: dict[str, FloatArray] = field(default_factory=dict)  # pod -> leaked conns
    pod_errors: dict[str, FloatArray] = field(default_factory=dict)  # pod -> error share
    cache_slow: FloatArray | None = None  # cache command latency multiplier
    cache_timeouts: FloatArray | None = None  # share of client cache calls timing out
    disk: dict[str, FloatArray] = field(default_factory=dict)  # host -> extra io util
    host_cpu: dict[str, FloatArray] = field(default_factory=dict)  # host -> extra cores used
    psp_latency: FloatArray | None = None  # seconds
    batch_running: FloatArray | None = None
    emails: FloatArray | None = None  # extra messages / s into the emails queue
    rollouts: dict[str, float] = field(default_factory=dict)  # service -> rollout start


def _ramp(ts: FloatArray, t0: float, duration_s: float) -> FloatArray:
    out: FloatArray = np.clip((ts - t0) / max(duration_s, 1.0), 0.0, 1.0)
    return out


def _pulse(ts: FloatArray, t0: float, rise_s: float, length_s: float) -> FloatArray:
    return _ramp(ts, t0, rise_s) * (1.0 - _ramp(ts, t0 + length_s, rise_s))


def _pod_names() -> list[tuple[str, int, str]]:
    return [(svc, i, host) for svc, hosts in PODS.items() for i, host in enumerate(hosts)]


def _pod(svc: str, i: int) -> str:
    return f"{svc}-{i}"


# ---------------------------------------------------------------------- the physics


@dataclass
class _Exo:
    """Exogenous noise, drawn once per case so the model can run with and without the fault."""

    traffic: FloatArray
    split: dict[str, FloatArray]
    wobble: dict[str, FloatArray]  # per pod: slow multiplicative noise of service time
    base_hit: FloatArray
    base_disk: dict[str, FloatArray]
    mem_base: dict[str, FloatArray]


def _ar1(rng: np.random.Generator, n: int, tau_steps: float, scale: float) -> FloatArray:
    a = math.exp(-1.0 / tau_steps)
    e = rng.standard_normal(n) * scale * math.sqrt(1 - a * a)
    out = np.empty(n)
    acc = rng.standard_normal() * scale
    for k in range(n):
        acc = a * acc + e[k]
        out[k] = acc
    return out


def _exogenous(rng: np.random.Generator, ts: FloatArray) -> _Exo:
    n = ts.size
    hour = (ts % 86_400) / 3600.0
    daily = 1.0 + 0.4 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)  # peak around 15:00
    traffic = 110.0 * daily * np.exp(_ar1(rng, n, 20, 0.05))
    split = {svc: 1.0 + _ar1(rng, n, 10, 0.03) for svc in PODS}
    wobble = {_pod(s, i): np.exp(_ar1(rng, n, 15, 0.04)) for s, i, _ in _pod_names()}
    return _Exo(
        traffic=traffic,
        split=split,
        wobble=wobble,
        base_hit=np.clip(0.94 + _ar1(rng, n, 30, 0.006), 0.85, 0.99),
        base_disk={h: 0.12 + 0.03 * np.abs(_ar1(rng, n, 25, 1.0)) for h in HOSTS},
        mem_base={
            _pod(s, i): (380 + 60 * rng.random()) * 2**20 * (1 + _ar1(rng, n, 60, 0.01))
            for s, i, _ in _pod_names()
        },
    )


def _q(u: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 - np.clip(u, 0.0, 0.96))
    return out


@dataclass
class _State:
    """Noise-free model output: every quantity the series are made of."""

    rps: dict[str, FloatArray]  # pod -> requests / s
    err: dict[str, FloatArray]  # pod -> error share
    lat: dict[str, FloatArray]  # pod -> mean latency (s)
    p95: dict[str, FloatArray]
    cpu: dict[str, FloatArray]  # pod -> cores used
    mem: dict[str, FloatArray]
    gc: dict[str, FloatArray]  # pod -> GC seconds / s
    pool_used: dict[str, FloatArray]
    pool_pending: dict[str, FloatArray]
    cache_lookups: dict[str, FloatArray]  # pod -> lookups / s
    hit: FloatArray
    psp: FloatArray
    db_qps: FloatArray
    db_lat: FloatArray
    db_util: FloatArray
    cache_lat: FloatArray  # server-side command latency (s)
    cache_served: FloatArray  # share of client calls the cache answers in time
    disk: dict[str, FloatArray]
    host_cpu: dict[str, FloatArray]
    host_mem: dict[str, FloatArray]
    emails_in: FloatArray
    orders_in: FloatArray
    batch: FloatArray


def _model(ts: FloatArray, x: _Exo, f: _Fault) -> _State:
    n = ts.size
    zero = np.zeros(n)
    traffic = x.traffic * (f.traffic if f.traffic is not None else 1.0)
    batch = f.batch_running if f.batch_running is not None else zero
    emails_in = 2.0 + (f.emails if f.emails is not None else zero)
    # GC from memory: negligible until the working set nears the limit
    mem = {p: x.mem_base[p] + f.pod_mem.get(p, zero) for p in x.mem_base}
    gc = {p: 0.004 + 0.6 * np.clip(m / _MEM_LIMIT, 0, 1.05) ** 12 for p, m in mem.items()}

    rps: dict[str, FloatArray] = {}
    per_svc_in = {
        "gateway": traffic,
        "api": traffic,
        "orders": traffic * _ORDERS_SHARE,
        "search": traffic * (1 - _ORDERS_SHARE),
    }
    for svc, total in per_svc_in.items():
        k = len(PODS[svc])
        for i in range(k):
            share = x.split[svc] if i == 0 else (k - x.split[svc]) / max(k - 1, 1)
            rps[_pod(svc, i)] = total / k * (share if k > 1 else 1.0)
    timeouts = f.cache_timeouts if f.cache_timeouts is not None else zero
    hit = x.base_hit * (1.0 - timeouts)  # a timed-out get is a miss to the client
    cache_call = 0.001 + 0.05 * timeouts  # 50 ms client timeout
    psp = 0.11 + (f.psp_latency if f.psp_latency is not None else zero)
    search_rps = per_svc_in["search"]
    orders_rps = per_svc_in["orders"]
    worker_rate = emails_in + orders_rps * 0.8
    db_qps = (
        3.0 * orders_rps + _MISS_QUERIES * (1 - hit) * search_rps + 0.5 * worker_rate + 60.0 * batch
    )
    db_util = db_qps * _DB_COST
    disk = {
        h: np.clip(
            x.base_disk[h] + f.disk.get(h, zero) + (0.35 * db_util if h == "host-d" else 0), 0, 0.99
        )
        for h in HOSTS
    }
    db_lat = 0.003 * _q(db_util) * (1 + 3.0 * disk["host-d"] ** 4 / (1 - disk["host-d"]))

    # pod CPU before latency: own work, GC, hogs; then host contention
    cpu: dict[str, FloatArray] = {}
    for svc, i, _host in _pod_names():
        p = _pod(svc, i)
        if svc in _CPU_PER_REQ:
            own = rps[p] * _CPU_PER_REQ[svc]
        elif svc == "worker":
            own = worker_rate / 2 * 0.01
        else:
            own = 0.02 + 1.6 * batch
        cpu[p] = own + gc[p] * _CORES[svc] + f.pod_cpu.get(p, zero)
    host_cpu = {h: np.full(n, 0.25) for h in HOSTS}  # system + the stores
    host_cpu["host-d"] = host_cpu["host-d"] + 4.0 * db_util * 0.5
    host_cpu["host-c"] = host_cpu["host-c"] + 0.15
    for h, extra in f.host_cpu.items():
        host_cpu[h] = host_cpu[h] + extra
    for svc, i, host in _pod_names():
        host_cpu[host] = host_cpu[host] + cpu[_pod(svc, i)]
    host_util = {h: host_cpu[h] / _HOST_CORES for h in HOSTS}

    lat: dict[str, FloatArray] = {}
    p95: dict[str, FloatArray] = {}
    err: dict[str, FloatArray] = {}
    pool_used: dict[str, FloatArray] = {}
    pool_pending: dict[str, FloatArray] = {}

    def own_time(svc: str, i: int, host: str) -> FloatArray:
        p = _pod(svc, i)
        u = np.minimum(cpu[p] / _CORES[svc], 1.5)
        steal = 1.0 + 2.5 * np.clip(host_util[host] - 0.4, 0, None)
        pauses = 1.0 + 6.0 * gc[p]  # stop-the-world collections
        return _SERVICE_TIME[svc] * x.wobble[p] * _q(u) * steal * pauses

    for svc in ("search", "orders"):
        for i, host in enumerate(PODS[svc]):
            p = _pod(svc, i)
            if svc == "search":
                below = cache_call + (1 - hit) * _MISS_QUERIES * db_lat
                hold = (1 - hit) * _MISS_QUERIES * db_lat + 0.004
            else:
                below = 0.5 * cache_call + 3 * db_lat + psp
                hold = 3 * db_lat + psp + 0.006  # a transaction stays open over the psp call
            demand = rps[p] * hold + f.pool_leak.get(p, zero) + 0.6
            pool = _POOL_MAX[svc]
            used = np.minimum(demand, pool)
            over = np.clip(demand - pool, 0, None)
            wait = np.minimum(over / np.maximum(rps[p], 1e-3) * 4.0, 3.0)
            pool_used[p], pool_pending[p] = used, over * 2.0
            t = own_time(svc, i, host) + below + wait
            timeouts = np.clip((wait - 0.5) / 2.0, 0, 0.6) + np.clip((t - 1.5) / 4.0, 0, 0.4)
            lat[p] = t
            p95[p] = 2.3 * t
            err[p] = np.clip(0.002 + timeouts + f.pod_errors.get(p, zero), 0, 1)

    def mix(svc: str, values: dict[str, FloatArray]) -> FloatArray:
        pods = [_pod(svc, i) for i in range(len(PODS[svc]))]
        total = sum(rps[p] for p in pods)
        return sum(rps[p] * values[p] for p in pods) / np.maximum(total, 1e-9)

    down = {}
    for name in ("lat", "p95", "err"):
        table = {"lat": lat, "p95": p95, "err": err}[name]
        down[name] = _ORDERS_SHARE * mix("orders", table) + (1 - _ORDERS_SHARE) * mix(
            "search", table
        )
    for svc in ("api", "gateway"):
        for i, host in enumerate(PODS[svc]):
            p = _pod(svc, i)
            t = own_time(svc, i, host)
            if svc == "api":
                t = t + cache_call + down["lat"]
                lat[p], p95[p] = t, 2.2 * own_time(svc, i, host) + cache_call + down["p95"]
                err[p] = np.clip(0.001 + down["err"] + f.pod_errors.get(p, zero), 0, 1)
            else:
                api_lat, api_p95, api_err = mix("api", lat), mix("api", p95), mix("api", err)
                lat[p], p95[p] = t + api_lat, 2.2 * t + api_p95
                err[p] = np.clip(0.0005 + api_err, 0, 1)
    for svc in ("worker", "batch"):
        for i in range(len(PODS[svc])):
            p = _pod(svc, i)
            rps[p] = worker_rate / 2 if svc == "worker" else 5.0 * batch
            lat[p] = p95[p] = 0.02 + 2 * db_lat
            err[p] = np.full(n, 0.001)

    cache_lat = 0.0006 * (f.cache_slow if f.cache_slow is not None else np.ones(n))
    lookups = {}
    for svc in ("search", "orders"):
        for i in range(2):
            p = _pod(svc, i)
            lookups[p] = rps[p] * (1.0 if svc == "search" else 0.5)
    host_mem = {h: np.full(n, 4.0 * 2**30) for h in HOSTS}
    for svc, i, host in _pod_names():
        host_mem[host] = host_mem[host] + mem[_pod(svc, i)]
    return _State(
        rps=rps,
        err=err,
        lat=lat,
        p95=p95,
        cpu=cpu,
        mem=mem,
        gc=gc,
        pool_used=pool_used,
        pool_pending=pool_pending,
        cache_lookups=lookups,
        hit=hit,
        psp=psp,
        db_qps=db_qps,
        db_lat=db_lat,
        db_util=db_util,
        cache_lat=cache_lat,
        cache_served=1.0 - timeouts,
        disk=disk,
        host_cpu=host_cpu,
        host_mem=host_mem,
        emails_in=emails_in,
        orders_in=orders_rps * 0.8,
        batch=batch,
    )


# ---------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Plan:
    root_entity: str
    root: tuple[str, dict[str, str]]  # (metric, labels without the pod) of the root series
    root_pod: tuple[str, int] | None  # the pod the root series belongs to, if any
    symptom_errors: bool
    involved: frozenset[str]  # services a distractor must leave alone


def _inject(fault: str, rng: np.random.Generator, ts: FloatArray, t0: float, f: _Fault) -> _Plan:
    """Write the fault into ``f``; return what the truth is."""

    def between(lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * rng.random())

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    if fault == "memory_leak":
        svc, i = pick(("api", "orders", "search")), int(rng.integers(2))
        p = _pod(svc, i)
        ramp_s = between(25, 60) * 60
        leak = 0.95 * _MEM_LIMIT - 420 * 2**20
        f.pod_mem[p] = np.minimum(leak * (ts - t0) / ramp_s, leak * 1.08) * (ts >= t0)
        return _Plan(
            svc, ("container_memory_working_set_bytes", {}), (svc, i), False, frozenset({svc})
        )
    if fault == "cache_failure":
        # the cache slows first; calls time out once it is past the 50 ms client timeout
        f.cache_slow = 1.0 + between(2, 5) * _ramp(ts, t0, between(60, 150))
        f.cache_timeouts = between(0.4, 0.7) * _ramp(ts, t0 + between(60, 120), 90)
        return _Plan(
            "cache",
            ("cache_command_latency_seconds", {"service": "cache"}),
            None,
            False,
            frozenset(),
        )
    if fault == "traffic_surge":
        f.traffic = 1.0 + between(0.6, 1.4) * _ramp(ts, t0, between(120, 360))
        labels = {"service": "gateway", "code": "2xx"}
        return _Plan(
            "gateway", ("http_server_requests_total", labels), ("gateway", 0), False, frozenset()
        )
    if fault == "disk_saturation":
        f.disk["host-d"] = between(0.6, 0.8) * _ramp(ts, t0, between(60, 180))
        labels = {"node": "host-d"}
        return _Plan(
            "host-d", ("node_disk_io_time_seconds_total", labels), None, False, frozenset()
        )
    if fault == "bad_deploy":
        svc = pick(("api", "orders", "search"))
        f.rollouts[svc] = t0
        share = between(0.08, 0.25)
        for i in range(len(PODS[svc])):
            f.pod_errors[_pod(svc, i)] = share * (ts >= t0 + 40 * i).astype(np.float64)
        labels = {"service": svc}
        return _Plan(svc, ("deployment_generation", labels), None, True, frozenset({svc}))
    if fault == "db_pool":
        svc, i = pick(("orders", "search")), int(rng.integers(2))
        f.pool_leak[_pod(svc, i)] = (_POOL_MAX[svc] + between(2, 6)) * _ramp(
            ts, t0, between(6, 15) * 60
        )
        labels = {"state": "used"}
        return _Plan(svc, ("db_client_connections", labels), (svc, i), True, frozenset({svc}))
    if fault == "cpu_hog":
        svc, i = pick(("api", "orders", "search")), int(rng.integers(2))
        f.pod_cpu[_pod(svc, i)] = _CORES[svc] * between(0.7, 0.95) * _ramp(ts, t0, between(30, 120))
        return _Plan(svc, ("process_cpu_seconds_total", {}), (svc, i), False, frozenset({svc}))
    if fault == "slow_downstream":
        f.psp_latency = between(0.6, 1.5) * _ramp(ts, t0, between(60, 180))
        labels = {"service": "psp"}
        return _Plan("psp", ("probe_duration_seconds", labels), None, False, frozenset({"orders"}))
    raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")


def _distract(
    rng: np.random.Generator, ts: FloatArray, t0: float, plan: _Plan
) -> tuple[_Fault, list[str]]:
    """Unrelated events around the fault's start: they may come first."""
    d = _Fault()
    names: list[str] = []

    def between(lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * rng.random())

    if rng.random() < 0.6:
        start = t0 + between(-60, 10) * 60
        d.batch_running = _pulse(ts, start, 30, between(20, 50) * 60)
        names.append("batch_job")
    if rng.random() < 0.6:
        start = t0 + between(-45, 10) * 60
        d.emails = between(30, 80) * _pulse(ts, start, 30, between(5, 12) * 60)
        names.append("emails_queue_spike")
    if rng.random() < 0.5:
        free = [s for s in ("worker", "search", "orders", "api") if s not in plan.involved]
        svc = free[int(rng.integers(len(free)))]
        d.rollouts[svc] = t0 + between(-50, 5) * 60
        names.append(f"benign_deploy:{svc}")
    if rng.random() < 0.4:
        host = HOSTS[int(rng.integers(len(HOSTS)))]
        d.host_cpu[host] = 1.5 * _pulse(ts, t0 + between(-40, 10) * 60, 20, between(2, 4) * 60)
        names.append(f"cpu_blip:{host}")
    return d, names


def _copy(f: _Fault) -> _Fault:
    return _Fault(
        traffic=f.traffic,
        pod_cpu=dict(f.pod_cpu),
        pod_mem=dict(f.pod_mem),
        pool_leak=dict(f.pool_leak),
        pod_errors=dict(f.pod_errors),
        cache_slow=f.cache_slow,
        cache_timeouts=f.cache_timeouts,
        disk=dict(f.disk),
        host_cpu=dict(f.host_cpu),
        psp_latency=f.psp_latency,
        batch_running=f.batch_running,
        emails=f.emails,
        rollouts=dict(f.rollouts),
    )


# ---------------------------------------------------------------------- series


def _kind(metric: str) -> Literal["gauge", "counter"]:
    return "counter" if metric.endswith("_total") else "gauge"


class _Writer:
    """Noisy samples of the model, pod names through rollouts, missed scrapes."""

    def __init__(
        self, rng: np.random.Generator, ts: FloatArray, rollouts: dict[str, float]
    ) -> None:
        self.rng, self.ts = rng, ts
        self.series: list[SyntheticSeries] = []
        self.revs = {svc: [self._rev(), self._rev()] for svc in PODS}
        self.switch = {
            (svc, i): rollouts[svc] + 40.0 * i if svc in rollouts else math.inf
            for svc, i, _ in _pod_names()
        }
        self.missed = {(svc, i): rng.random(ts.size) < 0.003 for svc, i, _ in _pod_names()}
        self.missed_other = rng.random(ts.size) < 0.002

    def _rev(self) -> str:
        return "".join("bcdfghjklmnpqrstvwxz2456789"[int(k)] for k in self.rng.integers(27, size=5))

    def pod_name(self, svc: str, i: int, at_s: float) -> str:
        return f"{svc}-{self.revs[svc][int(at_s >= self.switch[(svc, i)])]}-{i}"

    def gauge_noise(self, values: FloatArray, rel: float) -> FloatArray:
        n = values.size
        noisy = values * np.exp(_ar1(self.rng, n, 8, rel) + self.rng.standard_normal(n) * rel * 0.6)
        spikes = self.rng.random(n) < 0.001
        noisy[spikes] *= 1.5 + 2.0 * self.rng.random(int(spikes.sum()))
        out: FloatArray = noisy
        return out

    def counter_steps(self, rate: FloatArray, *, poisson: bool) -> FloatArray:
        amount = np.clip(rate, 0, None) * STEP_S
        if poisson:
            out: FloatArray = self.rng.poisson(amount).astype(np.float64)
            return out
        return amount * np.exp(self.rng.standard_normal(amount.size) * 0.03)

    def add(self, labels: dict[str, str], values: FloatArray) -> None:
        keep = ~self.missed_other
        kind = _kind(labels["__name__"])
        self.series.append(SyntheticSeries(labels, self.ts[keep], values[keep], kind))

    def pod_series(
        self,
        svc: str,
        i: int,
        metric: str,
        extra: dict[str, str],
        values: FloatArray,
        *,
        counter_start: float,
    ) -> None:
        """One pod-level series, split where a rollout replaces the pod (counters restart)."""
        cut = int(np.searchsorted(self.ts, self.switch[(svc, i)]))
        missed = self.missed[(svc, i)]
        for lo, hi, start in ((0, cut, counter_start), (cut, self.ts.size, 0.0)):
            if hi <= lo:
                continue
            part = values[lo:hi]
            if metric.endswith("_total"):
                part = start + np.cumsum(part)
            labels = {
                "__name__": metric,
                "service": svc,
                "pod": self.pod_name(svc, i, self.ts[lo]),
                **extra,
            }
            keep = ~missed[lo:hi]
            self.series.append(
                SyntheticSeries(
                    labels,
                    self.ts[lo:hi][keep],
                    part[keep],
                    _kind(metric),
                )
            )


def _queue_depth(inflow: FloatArray, capacity: float) -> FloatArray:
    depth = np.zeros(inflow.size)
    level = 0.0
    for k, rate in enumerate(inflow):
        level = max(0.0, level + (float(rate) - capacity) * STEP_S)
        depth[k] = level
    return depth


def _write(w: _Writer, st: _State, rollouts: dict[str, float], generations: dict[str, int]) -> None:
    rng, ts = w.rng, w.ts

    def big() -> float:  # where a long-running counter stands
        return float(rng.integers(10**5, 10**7))

    for svc, i, _host in _pod_names():
        p = _pod(svc, i)
        rps, err = st.rps[p], st.err[p]
        for code, rate in (("2xx", rps * (1 - err)), ("5xx", rps * err)):
            steps = w.counter_steps(rate, poisson=True)
            w.pod_series(
                svc, i, "http_server_requests_total", {"code": code}, steps, counter_start=big()
            )
        if svc in _SERVICE_TIME:
            for q, v in (("0.5", 0.75 * st.lat[p]), ("0.95", st.p95[p])):
                w.pod_series(
                    svc,
                    i,
                    "http_server_latency_seconds",
                    {"quantile": q},
                    w.gauge_noise(v, 0.06),
                    counter_start=0,
                )
        cpu = w.counter_steps(st.cpu[p] * (1 + 0.05 * rng.standard_normal(ts.size)), poisson=False)
        w.pod_series(svc, i, "process_cpu_seconds_total", {}, cpu, counter_start=big() / 100)
        w.pod_series(
            svc,
            i,
            "container_memory_working_set_bytes",
            {},
            w.gauge_noise(st.mem[p], 0.004),
            counter_start=0,
        )
        w.pod_series(
            svc,
            i,
            "runtime_gc_seconds_total",
            {},
            w.counter_steps(st.gc[p], poisson=False),
            counter_start=big() / 1000,
        )
        if p in st.pool_used:
            used: FloatArray = np.round(
                np.clip(st.pool_used[p] + 0.8 * rng.standard_normal(ts.size), 0, _POOL_MAX[svc])
            ).astype(np.float64)
            pending: FloatArray = np.round(
                np.clip(
                    st.pool_pending[p] + 0.2 * np.abs(rng.standard_normal(ts.size)) - 0.1, 0, None
                )
            ).astype(np.float64)
            w.pod_series(svc, i, "db_client_connections", {"state": "used"}, used, counter_start=0)
            w.pod_series(
                svc, i, "db_client_connections", {"state": "pending"}, pending, counter_start=0
            )
            for result, share in (("hit", st.hit), ("miss", 1 - st.hit)):
                steps = w.counter_steps(st.cache_lookups[p] * share, poisson=True)
                w.pod_series(
                    svc,
                    i,
                    "cache_client_requests_total",
                    {"result": result},
                    steps,
                    counter_start=big(),
                )
        if svc == "orders":
            w.pod_series(
                svc,
                i,
                "http_client_latency_seconds",
                {"peer": "psp"},
                w.gauge_noise(st.psp, 0.05),
                counter_start=0,
            )
    # the stores
    lookups = sum(st.cache_lookups.values()) + st.rps["gateway-0"] + st.rps["gateway-1"]
    cache = {"service": "cache"}
    evictions = 15.0 * np.exp(_ar1(rng, ts.size, 20, 0.2))  # a full cache evicts all day
    for metric, rate in (
        ("cache_keyspace_hits_total", lookups * st.hit),  # what it served in time
        ("cache_keyspace_misses_total", lookups * (st.cache_served - st.hit)),
        ("cache_evicted_keys_total", evictions),
    ):
        w.add({"__name__": metric, **cache}, big() + np.cumsum(w.counter_steps(rate, poisson=True)))
    w.add(
        {"__name__": "cache_memory_used_bytes", **cache},
        w.gauge_noise(np.full(ts.size, 2.4 * 2**30), 0.003),
    )
    w.add({"__name__": "cache_command_latency_seconds", **cache}, w.gauge_noise(st.cache_lat, 0.12))
    clients = 40.0 + 25.0 * (1.0 - st.cache_served)  # clients reconnect after timeouts
    w.add(
        {"__name__": "cache_connected_clients", **cache},
        np.round(clients + 2.0 * rng.standard_normal(ts.size)),
    )
    db = {"service": "db"}
    active = sum(st.pool_used.values()) + 3.0 + 4.0 * st.batch
    w.add(
        {"__name__": "db_connections_active", **db}, np.round(active + rng.standard_normal(ts.size))
    )
    w.add({"__name__": "db_query_latency_seconds", **db}, w.gauge_noise(st.db_lat, 0.05))
    w.add(
        {"__name__": "db_transactions_total", **db},
        big() + np.cumsum(w.counter_steps(st.db_qps / 2, poisson=True)),
    )
    locks = rng.poisson(0.3 + 8 * np.clip(st.db_util - 0.5, 0, None)).astype(np.float64)
    w.add({"__name__": "db_locks_waiting", **db}, locks)
    for queue, inflow, cap in (("orders", st.orders_in, 60.0), ("emails", st.emails_in, 20.0)):
        labels = {"service": "queue", "queue": queue}
        depth = _queue_depth(inflow, cap) + rng.poisson(4, ts.size)
        w.add({"__name__": "queue_depth_messages", **labels}, depth)
        w.add(
            {"__name__": "queue_published_total", **labels},
            big() + np.cumsum(w.counter_steps(inflow, poisson=True)),
        )
    w.add({"__name__": "probe_duration_seconds", "service": "psp"}, w.gauge_noise(st.psp, 0.08))
    for svc, gen in generations.items():
        value = gen + (ts >= rollouts.get(svc, math.inf)).astype(np.float64)
        w.add({"__name__": "deployment_generation", "service": svc}, value)
    w.add(
        {"__name__": "batch_job_running", "service": "batch"}, (st.batch > 0.5).astype(np.float64)
    )
    for h in HOSTS:
        node = {"node": h}
        w.add(
            {"__name__": "node_cpu_utilisation", **node},
            np.clip(w.gauge_noise(st.host_cpu[h] / _HOST_CORES, 0.04), 0, 1),
        )
        w.add(
            {"__name__": "node_memory_available_bytes", **node},
            w.gauge_noise(16 * 2**30 - st.host_mem[h], 0.002),
        )
        disk = w.counter_steps(st.disk[h], poisson=False)
        w.add(
            {"__name__": "node_disk_io_time_seconds_total", **node}, big() / 100 + np.cumsum(disk)
        )
        w.add({"__name__": "node_load1", **node}, w.gauge_noise(st.host_cpu[h] * 1.1, 0.08))


# ----------------------------------------------------------------------- cases


def _symptom_onset(ts: FloatArray, t0: float, calm: _State, hit: _State, errors: bool) -> float:
    """When an alert on the symptom would start to see the fault (noise-free traces).

    Errors: the error share is 1 point above what it would have been; latency: the
    p95 is 30 % above. Failing that, a quarter of the largest excess.
    """
    if errors:
        excess = hit.err["gateway-0"] - calm.err["gateway-0"]
        threshold = 0.01
    else:
        excess = hit.p95["gateway-0"] / calm.p95["gateway-0"] - 1.0
        threshold = 0.3
    watch = (ts >= t0) & (ts <= t0 + 4500)
    seen = np.abs(excess[watch])
    level = min(threshold, 0.25 * float(np.max(seen)))
    return float(ts[watch][np.argmax(seen >= level)])


def simulate(fault: str, seed: int, fault_start_s: float) -> Estate2Case:
    """One incident of ``fault`` starting at ``fault_start_s`` (a multiple of ``STEP_S``)."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
    rng = np.random.default_rng([seed, FAULTS.index(fault), 20_260_401])
    t0 = float(fault_start_s)
    ts = np.arange(t0 - HISTORY_S - 600, t0 + 5400 + AFTER_S + 1, STEP_S, dtype=np.float64)
    exo = _exogenous(rng, ts)
    plan_probe = _inject(
        fault, np.random.default_rng([seed, FAULTS.index(fault), 1]), ts, t0, _Fault()
    )
    calm, distractors = _distract(rng, ts, t0, plan_probe)
    hit = _copy(calm)
    plan = _inject(fault, np.random.default_rng([seed, FAULTS.index(fault), 1]), ts, t0, hit)
    state = _model(ts, exo, hit)
    onset = _symptom_onset(ts, t0, _model(ts, exo, calm), state, plan.symptom_errors)
    noticed = onset + STEP_S * int(rng.integers(4, 11))
    keep = (ts >= noticed - HISTORY_S) & (ts <= noticed + AFTER_S)
    ts_kept = ts[keep]
    st_kept = _cut(state, keep)
    w = _Writer(rng, ts_kept, hit.rollouts)
    generations = {
        svc: int(rng.integers(10, 90)) for svc in ("gateway", "api", "orders", "search", "worker")
    }
    _write(w, st_kept, hit.rollouts, generations)
    metric, labels = plan.root
    if plan.root_pod is not None:
        svc, i = plan.root_pod
        labels = {"service": svc, "pod": w.pod_name(svc, i, noticed), **labels}
    root = format_series_name({"__name__": metric, **labels})
    sym_labels = {"service": "gateway", "pod": w.pod_name("gateway", 0, noticed)}
    if plan.symptom_errors:
        symptom = {"__name__": "http_server_requests_total", **sym_labels, "code": "5xx"}
    else:
        symptom = {"__name__": "http_server_latency_seconds", **sym_labels, "quantile": "0.95"}
    return Estate2Case(
        fault=fault,
        seed=seed,
        fault_start_s=t0,
        noticed_s=noticed,
        symptom_series=format_series_name(symptom),
        root_cause_entity=plan.root_entity,
        root_cause_series=root,
        distractors=tuple(distractors),
        series=w.series,
    )


def _cut(st: _State, keep: np.ndarray) -> _State:
    def cut(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        return v[keep] if isinstance(v, np.ndarray) and v.shape == keep.shape else v

    return _State(**{name: cut(getattr(st, name)) for name in st.__dataclass_fields__})


def suite(n_per_fault: int, seed: int, *, epoch_s: float = EPOCH_S) -> list[Estate2Case]:
    """``n_per_fault`` incidents of every fault, one per ``SLOT_S`` slot, faults interleaved."""
    if n_per_fault < 1:
        raise ValueError("n_per_fault must be at least 1")
    rng = np.random.default_rng([seed, 77])
    cases = []
    for k in range(n_per_fault * len(FAULTS)):
        slot = epoch_s + k * SLOT_S
        start = slot + HISTORY_S + 900 + STEP_S * int(rng.integers(0, 90))
        cases.append(simulate(FAULTS[k % len(FAULTS)], seed * 1_000_003 + k, start))
    return cases


def _merge(cases: Sequence[Estate2Case]) -> list[SyntheticSeries]:
    """One series per identity across the cases (counters offset to stay monotone)."""
    groups: dict[tuple[tuple[str, str], ...], list[SyntheticSeries]] = {}
    for case in cases:
        for s in case.series:
            groups.setdefault(tuple(sorted(s.labels.items())), []).append(s)
    out = []
    for parts in groups.values():
        values, last = [], -math.inf
        for part in parts:
            v = part.values
            if part.kind == "counter" and v.size and last > v[0]:
                v = (v - v[0]) + last  # exactly ``last`` at the join
            if v.size:
                last = float(v[-1])
            values.append(v)
        out.append(
            SyntheticSeries(
                parts[0].labels,
                np.concatenate([p.timestamps_s for p in parts]),
                np.concatenate(values),
                parts[0].kind,
            )
        )
    return out


def build_source(n_per_fault: int, seed: int) -> RcaSource:
    """The suite as an RCA benchmark source (one backfill holds every case)."""
    cases = suite(n_per_fault, seed)
    return RcaSource(
        name="estate2",
        faults=FAULTS,
        cases=[
            RcaCase(
                source="estate2",
                fault=c.fault,
                name=f"{c.fault}/{c.seed}",
                noticed_s=c.noticed_s,
                symptom_series=c.symptom_series,
                root_cause_entity=c.root_cause_entity,
                root_cause_series=c.root_cause_series,
                step_s=STEP_S,
                lookback_s=LOOKBACK_S,
            )
            for c in cases
        ],
        series=_merge(cases),
        dependencies=dependency_map(),
        note=f"second generator, seed {seed}, {n_per_fault} per fault, 30 s steps",
    )
