"""The demo shop: the estate both demo simulations model, described once.

Two simulations serve it. The service's built-in demo source (:mod:`.demo`: what
``make run`` shows without Prometheus, deterministic, an injected incident every
4 h 7 min) and the compose stack's exporter (:mod:`plugin_backend.demoapp`: live,
Prometheus scrapes it, faults injected over HTTP). They share the shop's calls, where
its services run, the daily peak, the postgres pool size and the metric names, so one
dashboard (``dashboards/``) and one set of watch rules serve both. Their numbers (load
shape, noise, fault mechanics) stay their own: the source is a pure function of time,
the exporter a live random process.

The RCA incident simulator (``testkit/incidents.py``) models a different, larger estate
on purpose: ten services on three nodes, other metric names, randomised root causes and
distractors.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CALLS",
    "DAILY_PEAK_S",
    "NODES",
    "PG_MAX_CONNECTIONS",
    "SERVICES",
    "SHARED_METRICS",
    "ServicePlacement",
    "depends_on",
]


@dataclass(frozen=True, slots=True)
class ServicePlacement:
    """Where one service's instances run (instance ``i`` on ``nodes[i]``) and its port."""

    name: str
    nodes: tuple[str, ...]
    port: int
    serves_http: bool

    @property
    def instances(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-{i}:{self.port}" for i in range(len(self.nodes)))


NODES = ("node-a", "node-b")
SERVICES: tuple[ServicePlacement, ...] = (
    ServicePlacement("frontend", ("node-a", "node-b"), 8080, serves_http=True),
    ServicePlacement("checkout", ("node-a", "node-b"), 8080, serves_http=True),
    ServicePlacement("payments", ("node-b",), 8080, serves_http=True),
    ServicePlacement("postgres", ("node-b",), 9187, serves_http=False),
    ServicePlacement("redis", ("node-a",), 9121, serves_http=False),
)
# (caller, callee): frontend -> checkout -> payments, checkout -> postgres and redis
CALLS = (
    ("frontend", "checkout"),
    ("checkout", "payments"),
    ("checkout", "postgres"),
    ("checkout", "redis"),
)
DAILY_PEAK_S = 15 * 3600.0  # traffic peaks at 15:00 UTC (seconds after midnight)
PG_MAX_CONNECTIONS = 100.0
# Exported by both simulations (the dashboards and deploy/demo-rules.yaml query these).
SHARED_METRICS = (
    "http_requests_total",
    "http_requests_per_second",
    "http_request_duration_seconds_p99",
    "http_errors_ratio",
    "process_cpu_usage_ratio",
    "pg_connections_in_use",
    "pg_connections_max",
    "pg_query_duration_seconds_p99",
    "redis_hit_ratio",
)


def depends_on(service: str) -> tuple[str, ...]:
    """The services ``service`` calls, in :data:`CALLS` order."""
    return tuple(callee for caller, callee in CALLS if caller == service)
