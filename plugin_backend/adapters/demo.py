"""The built-in demo estate: a deterministic, simulated service estate.

``make run`` without Prometheus still shows meaningful data: five services
(``frontend -> checkout -> payments``, ``checkout -> postgres`` and ``redis``) on two
nodes, with daily and weekly seasonality, noise, deploys and an injected incident
every 4 h 7 min whose root cause leads its symptoms by minutes. That period divides
neither a day nor a week, so no fault recurs at a fixed time of day or week (a seasonal
detector would learn it as normal): incidents drift through the day.

Every value is a pure function of (seed, series labels, timestamp). The estate is
"scraped" every ``step_floor_s`` seconds: a query at ``t`` answers the sample at
``floor(t / step_floor_s) * step_floor_s``, the way Prometheus answers the latest
sample, so refreshed or zoomed panels agree point for point. Noise comes from a
counter-based hash (splitmix64) of (seed, series, sample time), never from a
stateful RNG.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from plugin_backend.adapters.demo_estate import (
    DAILY_PEAK_S,
    NODES,
    PG_MAX_CONNECTIONS,
    SERVICES,
)
from plugin_backend.errors import ConfigError, InvalidQuery, InvalidTimeRange
from plugin_backend.promql import Matcher, parse_selector
from plugin_backend.types import FloatArray, Labels, Series, TimeRange, format_series_name

__all__ = [
    "FAULTS",
    "INCIDENT_DURATION_S",
    "INCIDENT_OFFSET_S",
    "INCIDENT_PERIOD_S",
    "DemoIncident",
    "DemoSource",
    "incidents_between",
]

INCIDENT_PERIOD_S = 14_820  # one incident every 4 h 7 min (247 min: prime, so it divides
# neither a day nor a week) ...
INCIDENT_OFFSET_S = 3_600  # ... starting 1 h into each block (blocks counted from unix 0) ...
INCIDENT_DURATION_S = 1_800  # ... lasting 30 min
FAULTS = ("pg_pool_exhaustion", "bad_deploy", "disk_saturation", "redis_failure")
# Like the Prometheus client (which splits long ranges), the demo answers any length up to
# this sanity cap: the SeriesSource contract has no 11,000-step limit.
MAX_POINTS = 200_000
JOB = "demo"
_DEFAULT_WINDOW_S = 6 * 3600.0  # series/labels calls without a time range look back this far
_MAX_METADATA_WINDOW_S = 31 * 86400.0  # series/labels calls look at most this far back
_UNSUPPORTED = (
    "the demo source answers series selectors such as "
    'http_requests_per_second{service="checkout"}; '
    "set PLUGIN_BACKEND_PROMETHEUS_URL to use full PromQL"
)
# One selector, perhaps malformed inside its braces (unterminated strings, no closing brace).
_LOOKS_LIKE_SELECTOR = re.compile(
    r"""\s*(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(?:\{(?:[^{}"'`]|"(?:[^"\\\n]|\\.)*(?:"|\Z)"""
    r"""|'(?:[^'\\\n]|\\.)*(?:'|\Z)|`[^`]*(?:`|\Z))*\}?)?\s*""",
    re.DOTALL,
)
_FUNCTION_CALL = re.compile(r"\s*(rate|increase)\s*\((.*)\[\s*(\w+)\s*\]\s*\)\s*", re.DOTALL)
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

# --- load shape: daily peak 15:00 UTC, trough 03:00; weekly trough Sunday noon --------
_DAY, _WEEK = 86_400.0, 604_800.0
_W_DAY, _W_WEEK = 2 * math.pi / _DAY, 2 * math.pi / _WEEK
_A_DAY, _A_WEEK, _PEAK_S = 0.45, 0.15, DAILY_PEAK_S  # unix time 0 was a Thursday 00:00 UTC


def _load(t: FloatArray) -> FloatArray:
    """Traffic relative to its weekly mean (between 0.4 and 1.6)."""
    return 1.0 + _A_DAY * np.cos(_W_DAY * (t - _PEAK_S)) + _A_WEEK * np.cos(_W_WEEK * t)


def _load_integral(t: FloatArray) -> FloatArray:
    """Antiderivative of ``_load`` (closed form, so counters are pure functions of t)."""
    day = (_A_DAY / _W_DAY) * np.sin(_W_DAY * (t - _PEAK_S))
    return t + day + (_A_WEEK / _W_WEEK) * np.sin(_W_WEEK * t)


# --- counter-based noise ---------------------------------------------------------------
_MASK64 = (1 << 64) - 1
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SMOOTH_SALT = 0x2545F4914F6CDD1D
_SMOOTH_KNOT_S = 300.0


def _mix_int(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _gauss(key: int, index: npt.NDArray[np.int64]) -> FloatArray:
    """Approximately standard-normal, bounded noise: splitmix64(key, index) -> Irwin-Hall(4)."""
    z = index.view(np.uint64) * _GAMMA + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    lanes = np.uint64(0xFFFF)
    total = (z & lanes) + ((z >> np.uint64(16)) & lanes) + ((z >> np.uint64(32)) & lanes)
    total = total + (z >> np.uint64(48))
    noise: FloatArray = (total.astype(np.float64) / 65536.0 - 2.0) * math.sqrt(3.0)
    return noise


def _stream_key(seed: int, labels: Labels) -> int:
    digest = hashlib.blake2b(format_series_name(labels).encode(), digest_size=8).digest()
    return _mix_int(int.from_bytes(digest, "little") ^ _mix_int(seed & _MASK64))


# --- incidents -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Effect:
    channel: str
    lag_s: float  # after onset; the effect also ends this long after the incident ends
    rise_s: float  # linear ramp up (and down)
    size: float


_EFFECTS: dict[str, tuple[_Effect, ...]] = {
    "pg_pool_exhaustion": (
        _Effect("pg_pool", 0, 180, 1.0),
        _Effect("checkout_latency", 120, 120, 2.5),
        _Effect("checkout_errors", 150, 120, 0.06),
        _Effect("frontend_latency", 180, 120, 2.2),
        _Effect("frontend_errors", 240, 120, 0.12),
    ),
    "bad_deploy": (
        _Effect("checkout_errors", 30, 60, 0.25),
        _Effect("checkout_cpu", 30, 60, 0.35),
        _Effect("checkout_latency", 60, 120, 0.6),
        _Effect("frontend_errors", 90, 90, 0.1),
    ),
    "disk_saturation": (
        _Effect("disk_b", 0, 60, 1.0),
        _Effect("node_b_cpu", 20, 60, 0.25),
        _Effect("pg_latency", 60, 120, 0.8),
        _Effect("pg_extra_conn", 90, 120, 30.0),
        _Effect("checkout_latency", 150, 120, 1.2),
        _Effect("frontend_latency", 240, 120, 1.0),
    ),
    "redis_failure": (
        _Effect("redis_miss", 0, 30, 1.0),
        _Effect("pg_extra_conn", 60, 120, 45.0),
        _Effect("postgres_cpu", 60, 120, 0.3),
        _Effect("pg_latency", 90, 120, 0.3),
        _Effect("checkout_latency", 120, 120, 0.9),
        _Effect("frontend_latency", 200, 120, 0.7),
    ),
}
_DESCRIPTIONS = {
    "pg_pool_exhaustion": "postgres connection pool exhausted: pg_connections_in_use climbs to "
    "pg_connections_max from onset; checkout p99 latency rises ~2 min later, frontend "
    "errors ~4 min later",
    "bad_deploy": "bad deploy of checkout {version}: checkout errors and CPU rise within a "
    "minute, frontend errors ~1.5 min later; a fixed version replaces it when it ends",
    "disk_saturation": "node-b disk saturated (node_disk_io_utilization_ratio ~1): postgres "
    "query latency rises ~1 min later, checkout p99 ~2.5 min later, frontend p99 ~4 min later",
    "redis_failure": "redis failure: redis_hit_ratio drops to ~0; postgres connections rise "
    "~1 min later, checkout p99 ~2 min later, frontend p99 ~3.5 min later",
}


def _labels(metric: str, **labels: str) -> dict[str, str]:
    return {"__name__": metric, "job": JOB, **labels}


_CHANNEL_SERIES: dict[str, tuple[dict[str, str], ...]] = {
    "pg_pool": (_labels("pg_connections_in_use", service="postgres"),),
    "pg_extra_conn": (_labels("pg_connections_in_use", service="postgres"),),
    "pg_latency": (_labels("pg_query_duration_seconds_p99", service="postgres"),),
    "redis_miss": (_labels("redis_hit_ratio", service="redis"),),
    "disk_b": (_labels("node_disk_io_utilization_ratio", node="node-b"),),
    "node_b_cpu": (_labels("node_cpu_usage_ratio", node="node-b"),),
    "postgres_cpu": (_labels("process_cpu_usage_ratio", service="postgres", node="node-b"),),
    "checkout_cpu": tuple(
        _labels("process_cpu_usage_ratio", service="checkout", node=n) for n in ("node-a", "node-b")
    ),
    **{
        f"{svc}_{kind}": (_labels(metric, service=svc),)
        for svc in ("frontend", "checkout")
        for kind, metric in (
            ("latency", "http_request_duration_seconds_p99"),
            ("errors", "http_errors_ratio"),
        )
    },
}


@dataclass(frozen=True, slots=True)
class DemoIncident:
    """One injected incident: the ground truth for tests and root-cause benchmarks."""

    start_s: float
    end_s: float
    fault: str
    root_cause_series: str
    description: str
    symptom_series: tuple[str, ...] = ()  # in the order their effects begin


def _calver(t: float) -> str:
    return time.strftime("%Y.%m.%d-%H%M", time.gmtime(t))


def _build_info_labels(service: str, version: str) -> dict[str, str]:
    return _labels("app_build_info", service=service, version=version)


def _incident(cycle: int, seed: int) -> DemoIncident:
    start = float(cycle * INCIDENT_PERIOD_S + INCIDENT_OFFSET_S)
    fault = FAULTS[(cycle + seed) % len(FAULTS)]
    effects = _EFFECTS[fault]
    names = dict.fromkeys(
        format_series_name(lab) for e in effects for lab in _CHANNEL_SERIES[e.channel]
    )
    if fault == "bad_deploy":
        root = format_series_name(_build_info_labels("checkout", _calver(start)))
    else:
        root = next(iter(names))
        del names[root]
    return DemoIncident(
        start_s=start,
        end_s=start + INCIDENT_DURATION_S,
        fault=fault,
        root_cause_series=root,
        description=_DESCRIPTIONS[fault].format(version=_calver(start)),
        symptom_series=tuple(names),
    )


def incidents_between(start_s: float, end_s: float, seed: int = 7) -> list[DemoIncident]:
    """The injected incidents overlapping ``[start_s, end_s]``, oldest first."""
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s < start_s:
        raise InvalidTimeRange(f"bad incident window [{start_s}, {end_s}]")
    first = math.floor((start_s - INCIDENT_OFFSET_S - INCIDENT_DURATION_S) / INCIDENT_PERIOD_S)
    last = math.floor((end_s - INCIDENT_OFFSET_S) / INCIDENT_PERIOD_S)
    out = [_incident(c, seed) for c in range(first, last + 1)]
    return [i for i in out if i.end_s > start_s and i.start_s <= end_s]


def _checkout_deploys(lo: float, hi: float, seed: int) -> list[float]:
    """Checkout deploy times (bad deploys and their fixes) in ``(lo, hi]``, after the last
    one at or before ``lo``."""
    n, period = len(FAULTS), INCIDENT_PERIOD_S
    first = math.floor((lo - INCIDENT_OFFSET_S) / period) - n  # ends well before lo
    first += (FAULTS.index("bad_deploy") - first - seed) % n
    cycles = np.arange(first, math.floor((hi - INCIDENT_OFFSET_S) / period) + 1, n)
    starts = cycles.astype(np.float64) * period + INCIDENT_OFFSET_S
    times = np.stack([starts, starts + INCIDENT_DURATION_S], axis=1).ravel()
    times = times[times <= hi]
    keep = max(int(np.searchsorted(times, lo, "right")) - 1, 0)
    return [float(t) for t in times[keep:]]


# --- evaluation --------------------------------------------------------------------------

_WEEKLY_RESTART_S = {  # maintenance restarts, seconds after Thursday 00:00 UTC
    "frontend": 4 * _DAY + 2 * 3600,
    "payments": 5 * _DAY + 2 * 3600,
    "postgres": 6 * _DAY + 3 * 3600,
    "redis": 4 * _DAY + 4 * 3600,
}


class _Ctx:
    """Shared inputs of one evaluation: sample times, load, incident channels, restarts."""

    def __init__(self, tau: FloatArray, seed: int) -> None:
        self.tau, self.seed = tau, seed
        self.ms = np.round(tau * 1000.0).astype(np.int64)
        self.load = _load(tau)
        self.zeros = np.zeros_like(tau)
        # Every effect lives within its own block, so the block of each sample says
        # which fault is active and how long ago it began (no loop over incidents).
        block = np.floor((tau - INCIDENT_OFFSET_S) / INCIDENT_PERIOD_S)
        since = tau - (block * INCIDENT_PERIOD_S + INCIDENT_OFFSET_S)
        fault_of = (block.astype(np.int64) + seed) % len(FAULTS)
        self.channels: dict[str, FloatArray] = {}
        for index, fault in enumerate(FAULTS):
            active = (fault_of == index) & (since < INCIDENT_DURATION_S + 3600.0)
            if not active.any():
                continue
            d = since[active]
            for e in _EFFECTS[fault]:
                env = np.clip((d - e.lag_s) / e.rise_s, 0.0, 1.0)
                env *= np.clip(1.0 - (d - INCIDENT_DURATION_S - e.lag_s) / e.rise_s, 0.0, 1.0)
                self.channels.setdefault(e.channel, np.zeros_like(tau))[active] += e.size * env
        self._deploys: list[float] | None = None

    def chan(self, name: str) -> FloatArray:
        return self.channels.get(name, self.zeros)

    def white(self, key: int) -> FloatArray:
        return _gauss(key, self.ms)

    def smooth(self, key: int) -> FloatArray:
        pos = self.tau / _SMOOTH_KNOT_S
        knot = np.floor(pos)
        frac = pos - knot
        frac = frac * frac * (3.0 - 2.0 * frac)
        k = knot.astype(np.int64)
        a, b = _gauss(key ^ _SMOOTH_SALT, k), _gauss(key ^ _SMOOTH_SALT, k + 1)
        return a + (b - a) * frac

    def last_restart(self, service: str) -> FloatArray:
        if service != "checkout":
            off = _WEEKLY_RESTART_S[service]
            return np.floor((self.tau - off) / _WEEK) * _WEEK + off
        if self._deploys is None:
            self._deploys = _checkout_deploys(
                float(self.tau.min()), float(self.tau.max()), self.seed
            )
        deploys = np.asarray(self._deploys)
        return deploys[np.clip(np.searchsorted(deploys, self.tau, "right") - 1, 0, None)]


_Gen = Callable[[_Ctx, int], FloatArray]


@dataclass(frozen=True, slots=True, eq=False)
class _Def:
    labels: dict[str, str]
    key: int
    gen: _Gen
    rate: Callable[[_Ctx, float], FloatArray] | None = None  # counters: per-second rate
    active_from: float = -math.inf
    active_to: float = math.inf

    def overlaps(self, lo: float, hi: float) -> bool:
        return self.active_from <= hi and self.active_to > lo


_MB = 1024.0 * 1024.0
_RPS = {"frontend": 120.0, "checkout": 42.0, "payments": 16.0}
_P99 = {"frontend": 0.21, "checkout": 0.15, "payments": 0.085}
_ERR = {"frontend": 0.0021, "checkout": 0.0032, "payments": 0.0012}
_CPU = {"frontend": 0.22, "checkout": 0.28, "payments": 0.12, "postgres": 0.30, "redis": 0.08}
_MEM = {  # base bytes, leak bytes per hour since the last restart
    "frontend": (190 * _MB, 1.5 * _MB),
    "checkout": (270 * _MB, 6.0 * _MB),
    "payments": (150 * _MB, 0.8 * _MB),
    "postgres": (1200 * _MB, 0.0),
    "redis": (420 * _MB, 0.5 * _MB),
}
_INSTANCES = tuple(  # service, instance, node, share of the service's HTTP traffic
    (s.name, instance, node, 1.0 / len(s.nodes) if s.serves_http else 0.0)
    for s in SERVICES
    for instance, node in zip(s.instances, s.nodes, strict=True)
)
_VERSIONS = {"frontend": "3.14.2", "payments": "1.8.4", "postgres": "16.4", "redis": "7.2.5"}


def _gens() -> Iterable[tuple[dict[str, str], _Gen, Callable[[_Ctx, float], FloatArray] | None]]:
    """The static series: labels, value generator and (counters) rate."""

    def const(value: float) -> _Gen:
        return lambda c, k: np.full_like(c.tau, value)

    for svc, inst, node, share in _INSTANCES:
        yield _labels("up", service=svc, instance=inst), const(1.0), None
        yield _labels("process_cpu_usage_ratio", service=svc, node=node), _cpu(svc), None
        if share:
            yield (
                _labels("http_requests_per_second", service=svc, instance=inst),
                _rps(svc, share),
                None,
            )
            rate = _counter_rate(_RPS[svc] * share)
            yield (
                _labels("http_requests_total", service=svc, instance=inst),
                _counter(svc, share),
                rate,
            )
    for svc, (base, leak) in _MEM.items():
        yield _labels("process_resident_memory_bytes", service=svc), _memory(svc, base, leak), None
        if svc in _VERSIONS:
            yield _build_info_labels(svc, _VERSIONS[svc]), const(1.0), None
    for svc in _RPS:
        yield _labels("http_request_duration_seconds_p99", service=svc), _p99(svc), None
        yield _labels("http_errors_ratio", service=svc), _errors(svc), None
    yield _labels("pg_connections_in_use", service="postgres"), _pg_in_use, None
    yield _labels("pg_connections_max", service="postgres"), const(PG_MAX_CONNECTIONS), None
    yield _labels("pg_query_duration_seconds_p99", service="postgres"), _pg_latency, None
    yield _labels("redis_hit_ratio", service="redis"), _redis_hits, None
    for node in NODES:
        yield _labels("node_cpu_usage_ratio", node=node), _node_cpu(node), None
        yield _labels("node_disk_io_utilization_ratio", node=node), _node_disk(node), None


def _noise(c: _Ctx, k: int, white: float, smooth: float) -> FloatArray:
    return white * c.white(k) + smooth * c.smooth(k)


def _rps(svc: str, share: float) -> _Gen:
    return lambda c, k: _RPS[svc] * share * c.load * (1.0 + _noise(c, k, 0.05, 0.05))


def _counter(svc: str, share: float) -> _Gen:
    def gen(c: _Ctx, k: int) -> FloatArray:
        served = _load_integral(c.tau) - _load_integral(c.last_restart(svc))
        return np.floor(_RPS[svc] * share * served)

    return gen


def _counter_rate(per_s: float) -> Callable[[_Ctx, float], FloatArray]:
    return lambda c, w: per_s * (_load_integral(c.tau) - _load_integral(c.tau - w)) / w


def _p99(svc: str) -> _Gen:
    def gen(c: _Ctx, k: int) -> FloatArray:
        base = _P99[svc] * (0.8 + 0.2 * c.load) * (1.0 + _noise(c, k, 0.06, 0.05))
        return base + c.chan(f"{svc}_latency")

    return gen


def _errors(svc: str) -> _Gen:
    def gen(c: _Ctx, k: int) -> FloatArray:
        base = _ERR[svc] * (0.9 + 0.1 * c.load) * (1.0 + _noise(c, k, 0.25, 0.2))
        return np.clip(base + c.chan(f"{svc}_errors"), 0.0, 1.0)

    return gen


def _cpu(svc: str) -> _Gen:
    def gen(c: _Ctx, k: int) -> FloatArray:
        base = _CPU[svc] * c.load * (1.0 + _noise(c, k, 0.05, 0.06))
        return np.clip(base + c.chan(f"{svc}_cpu"), 0.0, 1.0)

    return gen


def _memory(svc: str, base: float, leak_per_h: float) -> _Gen:
    def gen(c: _Ctx, k: int) -> FloatArray:
        grown = leak_per_h * (c.tau - c.last_restart(svc)) / 3600.0
        return np.round(base * (1.0 + _noise(c, k, 0.003, 0.01)) + grown)

    return gen


def _pg_in_use(c: _Ctx, k: int) -> FloatArray:
    busy = 16.0 + 14.0 * c.load + _noise(c, k, 1.5, 2.0) + c.chan("pg_extra_conn")
    busy += (PG_MAX_CONNECTIONS - busy) * np.clip(c.chan("pg_pool"), 0.0, 1.0)
    return np.clip(np.round(busy), 0.0, PG_MAX_CONNECTIONS)


def _pg_latency(c: _Ctx, k: int) -> FloatArray:
    base = 0.011 * (0.85 + 0.15 * c.load) * (1.0 + _noise(c, k, 0.08, 0.06))
    return base + c.chan("pg_latency")


def _redis_hits(c: _Ctx, k: int) -> FloatArray:
    hits = 0.945 - 0.01 * (c.load - 1.0) + _noise(c, k, 0.004, 0.01)
    miss = np.clip(c.chan("redis_miss"), 0.0, 1.0)
    return np.clip(hits + (0.02 - hits) * miss, 0.0, 1.0)


def _node_cpu(node: str) -> _Gen:
    def gen(c: _Ctx, k: int) -> FloatArray:
        busy = 0.08 + (0.30 if node == "node-a" else 0.34) * c.load * (1 + _noise(c, k, 0.04, 0.05))
        busy = busy + 0.5 * c.chan("checkout_cpu")
        if node == "node-b":
            busy = busy + c.chan("node_b_cpu") + 0.5 * c.chan("postgres_cpu")
        return np.clip(busy, 0.0, 1.0)

    return gen


def _node_disk(node: str) -> _Gen:
    def gen(c: _Ctx, k: int) -> FloatArray:
        if node == "node-a":
            return np.clip(0.12 + 0.06 * c.load + _noise(c, k, 0.01, 0.02), 0.0, 1.0)
        util = 0.22 + 0.12 * c.load + _noise(c, k, 0.015, 0.03)
        saturated = np.clip(c.chan("disk_b"), 0.0, 1.0)
        return np.clip(util + (0.985 - util) * saturated, 0.0, 1.0)

    return gen


def _parse_duration(text: str) -> float:
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidQuery(f"bad duration {text!r} (use e.g. 5m, 1h30m)")
    seconds = sum(int(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise InvalidQuery(f"range duration {text!r} must be positive")
    return float(seconds)


class DemoSource:
    """``SeriesSource`` over the simulated estate (see the module docstring)."""

    def __init__(
        self,
        seed: int = 7,
        *,
        step_floor_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(step_floor_s) and step_floor_s > 0):
            raise ConfigError(f"demo step_floor_s must be a positive number, got {step_floor_s}")
        self._seed = int(seed)
        self._scrape_s = float(step_floor_s)
        self._clock = clock
        self._static = [
            _Def(labels, _stream_key(self._seed, labels), gen, rate)
            for labels, gen, rate in _gens()
        ]

    @property
    def kind(self) -> str:
        return "demo"

    @property
    def seed(self) -> int:
        return self._seed

    def describe(self) -> str:
        metrics = {d.labels["__name__"] for d in self._static}
        return (
            f"built-in demo estate (seed {self._seed}): services frontend -> checkout -> "
            "payments, checkout -> postgres and redis on node-a/node-b; "
            f"{len(metrics)} metrics, {len(self._static)} series sampled every "
            f"{self._scrape_s:g} s; an injected incident every 4 h 7 min (30 min; it "
            "drifts through the day)"
        )

    def check_ready(self, timeout_s: float) -> None:
        return None

    # --- queries ---------------------------------------------------------------------

    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        step_ms = round(step_s * 1000.0) if math.isfinite(step_s) else 0
        if step_ms <= 0:
            raise InvalidQuery(
                "zero or negative query resolution step widths are not accepted. "
                "Try a positive integer"
            )
        start_ms = round(time_range.start_s * 1000.0)
        span_ms = round(time_range.end_s * 1000.0) - start_ms
        if span_ms // step_ms > MAX_POINTS:
            raise InvalidQuery(
                f"the demo source answers at most {MAX_POINTS:,} points per series; "
                "shorten the range or increase the step"
            )
        grid = start_ms + np.arange(span_ms // step_ms + 1, dtype=np.int64) * step_ms
        return self._evaluate(expr, grid.astype(np.float64) / 1000.0)

    def query(self, expr: str, at_s: float) -> list[Series]:
        if not math.isfinite(at_s):
            raise InvalidTimeRange(f"query time must be a finite number, got {at_s}")
        return self._evaluate(expr, np.array([round(at_s * 1000.0) / 1000.0]))

    def _evaluate(self, expr: str, t: FloatArray) -> list[Series]:
        func, window, selector = self._parse(expr)
        tau = np.floor(t / self._scrape_s) * self._scrape_s
        defs = self._select([selector], float(tau[0]), float(tau[-1]))
        if not defs:
            return []
        if func is not None:
            if not any(d.rate for d in defs):
                raise InvalidQuery(
                    f"the demo source computes {func}() only for its counter "
                    "http_requests_total; set PLUGIN_BACKEND_PROMETHEUS_URL to use full PromQL"
                )
            defs = [d for d in defs if d.rate is not None]
        ctx = _Ctx(tau, self._seed)
        out: list[Series] = []
        for d in defs:
            mask = (tau >= d.active_from) & (tau < d.active_to)
            if not mask.any():
                continue
            if d.rate is not None and func is not None:
                values = d.rate(ctx, window) * (window if func == "increase" else 1.0)
                labels = {k: v for k, v in d.labels.items() if k != "__name__"}
            else:
                values, labels = d.gen(ctx, d.key), d.labels
            out.append(Series(labels, t[mask], values[mask]))
        return sorted(out, key=lambda s: sorted(s.labels.items()))

    def _parse(self, expr: str) -> tuple[str | None, float, list[Matcher]]:
        func, window, inner = None, 0.0, expr
        if m := _FUNCTION_CALL.fullmatch(expr):
            func, window, inner = m.group(1), _parse_duration(m.group(3)), m.group(2)
        try:
            return func, window, self._matchers(inner)
        except InvalidQuery as exc:
            if _LOOKS_LIKE_SELECTOR.fullmatch(inner):
                raise  # a malformed selector: its own message is the useful one
            raise InvalidQuery(_UNSUPPORTED) from exc

    @staticmethod
    def _matchers(selector: str) -> list[Matcher]:
        name, matchers = parse_selector(selector)
        return matchers if name is None else [Matcher("__name__", "=", name), *matchers]

    # --- metadata --------------------------------------------------------------------

    def _versions(self, lo: float, hi: float) -> list[_Def]:
        """The checkout ``app_build_info`` series live in ``[lo, hi]`` (one per deploy)."""
        deploys = _checkout_deploys(lo, hi, self._seed)
        return [
            _Def(
                _build_info_labels("checkout", _calver(a)),
                0,
                lambda c, k: np.ones_like(c.tau),
                active_from=a,
                active_to=b,
            )
            for a, b in zip(deploys, [*deploys[1:], math.inf], strict=True)
        ]

    def _select(self, selectors: Sequence[list[Matcher]], lo: float, hi: float) -> list[_Def]:
        probe = _build_info_labels("checkout", "")
        defs = self._static
        if any(all(m.matches(probe) for m in s if m.name != "version") for s in selectors):
            defs = [*defs, *self._versions(lo, hi)]
        return [
            d
            for d in defs
            if d.overlaps(lo, hi) and any(all(m.matches(d.labels) for m in s) for s in selectors)
        ]

    def _window(self, time_range: TimeRange | None) -> tuple[float, float]:
        if time_range is None:
            now = float(self._clock())
            time_range = TimeRange(now - _DEFAULT_WINDOW_S, now)
        start = max(time_range.start_s, time_range.end_s - _MAX_METADATA_WINDOW_S)
        floor = self._scrape_s
        return math.floor(start / floor) * floor, math.floor(time_range.end_s / floor) * floor

    def series(self, matchers: Sequence[str], time_range: TimeRange | None = None) -> list[Labels]:
        if not matchers:
            raise InvalidQuery("no match[] parameter provided")
        selectors = [self._matchers(m) for m in matchers]
        found = self._select(selectors, *self._window(time_range))
        return [dict(d.labels) for d in sorted(found, key=lambda d: sorted(d.labels.items()))]

    def _matching(self, matchers: Sequence[str], time_range: TimeRange | None) -> list[_Def]:
        selectors = [self._matchers(m) for m in matchers] or [[]]
        return self._select(selectors, *self._window(time_range))

    def labels(
        self, matchers: Sequence[str] = (), time_range: TimeRange | None = None
    ) -> list[str]:
        return sorted({name for d in self._matching(matchers, time_range) for name in d.labels})

    def label_values(
        self, label: str, matchers: Sequence[str] = (), time_range: TimeRange | None = None
    ) -> list[str]:
        found = self._matching(matchers, time_range)
        return sorted({d.labels[label] for d in found if d.labels.get(label)})
