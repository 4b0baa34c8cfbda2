"""The demo application of the docker compose stack: a simulated shop that Prometheus scrapes.

``python -m plugin_backend.demoapp --port 8000`` serves ``GET /metrics``
(Prometheus text format) for four services, ``frontend -> checkout -> postgres``
and ``checkout -> redis``, driven by a background thread that advances the
simulation once a second: traffic follows a daily cycle (peak 15:00 UTC) with an
hourly wobble and noise, and latencies, errors, CPU and the connection pool follow
traffic and each other.

Metrics (``service`` label on all but ``demo_fault_active``):

* ``http_requests_total{service,code}`` and ``http_request_duration_seconds``
  (histogram, ``_bucket{le}``) for frontend and checkout, one observation per
  simulated request;
* rolling one-minute gauges ``http_request_duration_seconds_p99``,
  ``http_errors_ratio``, ``http_requests_per_second`` (the names the backend's
  built-in demo estate uses, so one dashboard serves both);
* ``process_cpu_usage_ratio{service,node}``, ``pg_connections_in_use``,
  ``pg_connections_max``, ``pg_query_duration_seconds_p99``, ``redis_hit_ratio``;
* ``demo_fault_active{fault}`` (1 while a fault is injected).

Faults (``POST /faults/<name>?duration=300``, ``GET /faults``, ``DELETE /faults``),
each ramping in over :data:`RAMP_S` seconds:

* ``cpu_hog`` - checkout CPU pinned near 100 %, checkout (then frontend) latency up;
* ``slow_dependency`` - postgres queries ~10x slower, the pool fills up, checkout
  and frontend latency rise, a few checkout requests time out (errors);
* ``error_burst`` - checkout answers ~25 % 5xx, frontend errors follow;
* ``cache_failure`` - the redis hit ratio collapses, postgres connections, CPU and
  latency rise, checkout latency follows.

An entry point of the compose stack's image only: the service never imports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from plugin_backend.adapters import demo_estate

__all__ = [
    "FAULTS",
    "HTTP_SERVICES",
    "NODES",
    "RAMP_S",
    "SERVICES",
    "DemoApp",
    "UnknownFault",
    "build_parser",
    "main",
    "make_server",
]

log = logging.getLogger(__name__)

# The shop of adapters/demo_estate.py without payments: one instance of each service,
# on the service's first node.
_SIMULATED = tuple(s for s in demo_estate.SERVICES if s.name != "payments")
SERVICES = tuple(s.name for s in _SIMULATED)
HTTP_SERVICES = tuple(s.name for s in _SIMULATED if s.serves_http)
NODES = {s.name: s.nodes[0] for s in _SIMULATED}
FAULTS = {
    "cpu_hog": "checkout CPU pinned near 100%; checkout then frontend latency rise",
    "slow_dependency": "postgres queries ~10x slower; the connection pool fills up, "
    "checkout and frontend latency rise, some checkout requests time out",
    "error_burst": "checkout answers ~25% 5xx; frontend errors follow",
    "cache_failure": "redis hit ratio collapses; postgres connections, CPU and latency "
    "rise, checkout latency follows",
}
RAMP_S = 20.0  # a fault reaches full strength this long after it starts
MAX_FAULT_S = 86_400.0
WINDOW_S = 60.0  # the rolling gauges summarise this much simulated time
PG_MAX_CONNECTIONS = demo_estate.PG_MAX_CONNECTIONS
_BASE_RPS = {"frontend": 30.0, "checkout": 12.0}
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY_SIGMA = 0.35  # log-normal spread of request latencies (p99 ~ 2.3 x median)
_DAY_S, _HOUR_S, _PEAK_S = 86_400.0, 3_600.0, demo_estate.DAILY_PEAK_S
_FAULT_PATH = re.compile(r"^/faults/([a-z_]+)$")

FloatArray = npt.NDArray[np.float64]


class UnknownFault(KeyError):
    """A fault name that is not in :data:`FAULTS`."""


@dataclass(frozen=True, slots=True)
class ActiveFault:
    name: str
    started_s: float
    ends_s: float

    def active(self, now_s: float) -> bool:
        return self.started_s <= now_s < self.ends_s

    def intensity(self, now_s: float) -> float:
        """0 before the start and after the end, ramping to 1 over :data:`RAMP_S`."""
        if not self.active(now_s):
            return 0.0
        return min((now_s - self.started_s) / RAMP_S, 1.0)


class _Rolling:
    """Per-tick request samples of the last :data:`WINDOW_S` seconds."""

    def __init__(self) -> None:
        self._ticks: deque[tuple[float, FloatArray, int]] = deque()

    def add(self, now_s: float, latencies_s: FloatArray, errors: int) -> None:
        self._ticks.append((now_s, latencies_s, errors))
        while self._ticks and self._ticks[0][0] <= now_s - WINDOW_S:
            self._ticks.popleft()

    def summary(self) -> tuple[float, float, float]:
        """(p99 latency s, error ratio, requests per second) over the window."""
        latencies = np.concatenate([t[1] for t in self._ticks]) if self._ticks else np.empty(0)
        if latencies.size == 0:
            return math.nan, 0.0, 0.0
        errors = sum(t[2] for t in self._ticks)
        span_s = max(self._ticks[-1][0] - self._ticks[0][0], 1.0)
        return (
            float(np.quantile(latencies, 0.99)),
            errors / latencies.size,
            latencies.size / span_s,
        )


class DemoApp:
    """The simulation and its metrics (in ``registry``, a fresh one by default).

    ``clock`` gives simulated time in unix seconds; :meth:`tick` advances the
    simulation to ``clock()``, so tests drive it with a fake clock.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._faults: dict[str, ActiveFault] = {}
        self._rolling = {svc: _Rolling() for svc in HTTP_SERVICES}
        self._last_tick_s: float | None = None
        r = self.registry
        self.requests = Counter(
            "http_requests",
            "Requests served, by service and status code.",
            ["service", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Request latency, by service.",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.p99 = Gauge(
            "http_request_duration_seconds_p99",
            "p99 request latency over the last minute.",
            ["service"],
            registry=r,
        )
        self.error_ratio = Gauge(
            "http_errors_ratio",
            "Share of 5xx answers over the last minute.",
            ["service"],
            registry=r,
        )
        self.rps = Gauge(
            "http_requests_per_second",
            "Requests per second over the last minute.",
            ["service"],
            registry=r,
        )
        self.cpu = Gauge(
            "process_cpu_usage_ratio",
            "CPU used, as a share of the service's CPU limit.",
            ["service", "node"],
            registry=r,
        )
        self.pg_in_use = Gauge(
            "pg_connections_in_use", "Postgres connections in use.", ["service"], registry=r
        )
        self.pg_max = Gauge(
            "pg_connections_max", "Postgres connection limit.", ["service"], registry=r
        )
        self.pg_latency = Gauge(
            "pg_query_duration_seconds_p99", "p99 postgres query time.", ["service"], registry=r
        )
        self.redis_hits = Gauge(
            "redis_hit_ratio", "Share of redis lookups that hit.", ["service"], registry=r
        )
        self.fault_active = Gauge(
            "demo_fault_active", "1 while the fault is injected.", ["fault"], registry=r
        )
        self.pg_max.labels("postgres").set(PG_MAX_CONNECTIONS)
        for name in FAULTS:
            self.fault_active.labels(name).set(0)
        for svc in HTTP_SERVICES:
            for code in ("200", "500"):
                self.requests.labels(svc, code)

    # --- faults ----------------------------------------------------------------------

    def start_fault(self, name: str, duration_s: float) -> ActiveFault:
        """Inject ``name`` from now for ``duration_s`` (restarts it if already active)."""
        if name not in FAULTS:
            raise UnknownFault(name)
        if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_FAULT_S):
            raise ValueError(f"duration must be between 1 and {MAX_FAULT_S:.0f} seconds")
        now = self._clock()
        fault = ActiveFault(name, now, now + duration_s)
        with self._lock:
            self._faults[name] = fault
        log.info("fault %s injected for %.0f s", name, duration_s)
        return fault

    def clear_faults(self, name: str | None = None) -> list[str]:
        """End one fault (or all); returns the names that were active."""
        now = self._clock()
        with self._lock:
            names = [name] if name is not None else list(self._faults)
            cleared = [n for n in names if (f := self._faults.pop(n, None)) and f.active(now)]
        return cleared

    def active_faults(self) -> list[ActiveFault]:
        now = self._clock()
        with self._lock:
            self._faults = {n: f for n, f in self._faults.items() if f.ends_s > now}
            return sorted(self._faults.values(), key=lambda f: f.started_s)

    def now(self) -> float:
        """The simulation's clock (unix seconds)."""
        return self._clock()

    def _fault(self, name: str) -> ActiveFault | None:
        with self._lock:
            return self._faults.get(name)

    def _intensity(self, name: str, now_s: float) -> float:
        fault = self._fault(name)
        return 0.0 if fault is None else fault.intensity(now_s)

    # --- simulation --------------------------------------------------------------------

    def tick(self) -> None:
        """Advance the simulation to ``clock()`` (at most :data:`WINDOW_S` at once)."""
        now = self._clock()
        dt = 1.0 if self._last_tick_s is None else min(max(now - self._last_tick_s, 0.0), 60.0)
        self._last_tick_s = now
        if dt <= 0:
            return
        rng = self._rng
        load = (
            1.0
            + 0.4 * math.cos(2 * math.pi * (now - _PEAK_S) / _DAY_S)
            + 0.1 * math.sin(2 * math.pi * now / _HOUR_S)
        )
        cpu_hog, slow, errors, cache = (
            self._intensity(f, now)
            for f in ("cpu_hog", "slow_dependency", "error_burst", "cache_failure")
        )
        for name in FAULTS:
            fault = self._fault(name)
            self.fault_active.labels(name).set(1.0 if fault and fault.active(now) else 0.0)

        def noisy(value: float, rel: float) -> float:
            return value * (1.0 + rel * float(rng.standard_normal()))

        hit_ratio = min(max(noisy(0.95, 0.005) - 0.9 * cache, 0.0), 1.0)
        pg_query_s = noisy(0.008 * (0.9 + 0.1 * load), 0.05) * (1 + 9 * slow) * (1 + 1.5 * cache)
        in_use = noisy(12.0 + 10.0 * load, 0.08) + 30.0 * cache
        in_use += (PG_MAX_CONNECTIONS - in_use) * 0.97 * slow
        self.redis_hits.labels("redis").set(hit_ratio)
        self.pg_latency.labels("postgres").set(pg_query_s * 2.5)
        self.pg_in_use.labels("postgres").set(round(min(max(in_use, 0.0), PG_MAX_CONNECTIONS)))

        # checkout runs ~3 queries per request (more on cache misses); frontend calls checkout.
        checkout_s = (0.035 + (3 + 4 * (1 - hit_ratio)) * pg_query_s) * (1 + 1.5 * cpu_hog)
        medians = {"checkout": checkout_s, "frontend": 0.025 + 0.9 * checkout_s}
        checkout_err = 0.003 + 0.25 * errors + 0.04 * slow
        error_p = {"checkout": checkout_err, "frontend": 0.002 + 0.5 * (checkout_err - 0.003)}
        for svc in HTTP_SERVICES:
            n = int(rng.poisson(_BASE_RPS[svc] * load * dt))
            latencies = rng.lognormal(math.log(medians[svc]), _LATENCY_SIGMA, n)
            failed = int(rng.binomial(n, min(error_p[svc], 1.0))) if n else 0
            self.requests.labels(svc, "200").inc(n - failed)
            self.requests.labels(svc, "500").inc(failed)
            observe = self.latency.labels(svc).observe
            for value in latencies.tolist():
                observe(value)
            rolling = self._rolling[svc]
            rolling.add(now, latencies, failed)
            p99, ratio, rps = rolling.summary()
            if math.isfinite(p99):
                self.p99.labels(svc).set(p99)
            self.error_ratio.labels(svc).set(ratio)
            self.rps.labels(svc).set(rps)

        cpu = {
            "frontend": 0.20 * load,
            "checkout": 0.25 * load + 0.75 * cpu_hog,
            "postgres": 0.30 * load + 0.30 * slow + 0.25 * cache,
            "redis": 0.06 * load,
        }
        for svc, value in cpu.items():
            self.cpu.labels(svc, NODES[svc]).set(min(max(noisy(value, 0.04), 0.0), 1.0))

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Tick every ``interval_s`` until ``stop`` is set (the background thread's body)."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad tick must not stop the metrics
                log.exception("demo tick failed")
            stop.wait(interval_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# --- HTTP ----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: DemoApp) -> None:
        super().__init__(address, _Handler)
        self.app = app


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def _faults_listing(self) -> dict[str, Any]:
        now = self.server.app.now()
        return {
            "available": FAULTS,
            "active": [
                {
                    "fault": f.name,
                    "started_at": f.started_s,
                    "ends_at": f.ends_s,
                    "remaining_s": round(max(f.ends_s - now, 0.0), 1),
                }
                for f in self.server.app.active_faults()
            ],
        }

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(HTTPStatus.OK, self.server.app.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._json(HTTPStatus.OK, {"status": "ok"})
        elif path == "/faults":
            self._json(HTTPStatus.OK, self._faults_listing())
        elif path == "/":
            self._json(
                HTTPStatus.OK,
                {"services": SERVICES, "endpoints": ["/metrics", "/healthz", "/faults"]},
            )
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route {path}")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        match = _FAULT_PATH.match(parts.path)
        if match is None:
            self._error(HTTPStatus.NOT_FOUND, "POST /faults/<name>?duration=SECONDS")
            return
        name = match.group(1)
        raw = parse_qs(parts.query).get("duration", ["300"])[-1]
        try:
            fault = self.server.app.start_fault(name, float(raw))
        except UnknownFault:
            self._error(HTTPStatus.NOT_FOUND, f"unknown fault {name!r}; known: {sorted(FAULTS)}")
            return
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"duration={raw!r}: {exc}")
            return
        self._json(
            HTTPStatus.CREATED,
            {"fault": name, "started_at": fault.started_s, "ends_at": fault.ends_s},
        )

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        match = _FAULT_PATH.match(path)
        if path == "/faults":
            cleared = self.server.app.clear_faults()
        elif match is not None and match.group(1) in FAULTS:
            cleared = self.server.app.clear_faults(match.group(1))
        else:
            self._error(HTTPStatus.NOT_FOUND, "DELETE /faults or /faults/<name>")
            return
        self._json(HTTPStatus.OK, {"cleared": cleared})


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A bound (not yet serving) server around ``app``; ``port=0`` picks a free port."""
    return _Server((host, port), app)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m plugin_backend.demoapp",
        description="Demo shop exporting Prometheus metrics, with injectable faults.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in Docker)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int, help="noise seed (default: random)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise in pickers
    app = DemoApp(seed=args.seed)
    app.tick()  # metrics exist before the first scrape
    server = make_server(app, args.host, args.port)
    stop = threading.Event()
    ticker = threading.Thread(target=app.run, args=(stop,), name="demo-tick", daemon=True)
    ticker.start()

    def shutdown(_signum: int, _frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    host, port = server.server_address[:2]
    log.info("demo app on http://%s:%s (metrics at /metrics, faults at /faults)", host, port)
    try:
        server.serve_forever()
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
