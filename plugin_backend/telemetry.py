"""Self-metrics: every metric declared once, ``plugin_backend_`` prefix, unit
suffixes, small fixed label sets (never PromQL text or user strings).

Under gunicorn the start-up path sets ``PROMETHEUS_MULTIPROC_DIR`` before any
metric exists (see ``cli.serve``); each scrape then aggregates all workers'
files through a fresh registry, and ``child_exit`` marks dead workers.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from plugin_backend import __version__
from plugin_backend.config import MULTIPROC_ENV

__all__ = ["SourceObserver", "Telemetry", "WorkerMetrics", "mark_process_dead"]

SourceObserver = Callable[[str, float, str | None], None]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Telemetry:
    """The service's own metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_requests = Counter(
            "plugin_backend_http_requests_total",
            "HTTP requests answered, by endpoint, method and status class.",
            ["endpoint", "method", "status_class"],
            registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "plugin_backend_http_request_duration_seconds",
            "Time to answer an HTTP request, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.source_request_duration = Histogram(
            "plugin_backend_source_request_duration_seconds",
            "Time of calls to the series source (Prometheus API or demo), by operation.",
            ["source", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.source_request_failures = Counter(
            "plugin_backend_source_request_failures_total",
            "Failed calls to the series source, by operation and error code.",
            ["source", "operation", "code"],
            registry=self.registry,
        )
        self.llm_calls = Counter(
            "plugin_backend_llm_calls_total",
            "Calls to the LLM that writes root-cause notes, by outcome (ok, failure, rejected).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.llm_latency = Histogram(
            "plugin_backend_llm_latency_seconds",
            "Time of LLM calls for notes.",
            ["provider"],
            buckets=(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0),
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "plugin_backend_llm_tokens_total",
            "Tokens used by note LLM calls, by kind (prompt, completion).",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.note_fallbacks = Counter(
            "plugin_backend_note_fallbacks_total",
            "Notes written from the deterministic template instead of the LLM, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.scoring_duration = Histogram(
            "plugin_backend_scoring_duration_seconds",
            "Time to score one series (model inference or baseline fit), by detector.",
            ["detector"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.build_info = Gauge(
            "plugin_backend_build_info",
            "Build information (always 1).",
            ["version", "python_version"],
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.auth_enabled = Gauge(
            "plugin_backend_auth_enabled",
            "1 when callers must authenticate (token or basic auth), 0 when the API is open.",
            multiprocess_mode="max",
            registry=self.registry,
        )

    def source_observer(self, source_kind: str) -> SourceObserver:
        def observe(operation: str, duration_s: float, error_code: str | None) -> None:
            self.source_request_duration.labels(source_kind, operation).observe(duration_s)
            if error_code is not None:
                self.source_request_failures.labels(source_kind, operation, error_code).inc()

        return observe

    def note_observer(self) -> Callable[[str, float, dict[str, Any]], None]:
        """Observer for ``NoteWriter`` events (labels are bounded: provider, outcome)."""

        def observe(event: str, latency_s: float, info: dict[str, Any]) -> None:
            provider = str(info.get("provider") or "none")
            if event == "call":
                self.llm_calls.labels(provider, "ok").inc()
                self.llm_latency.labels(provider).observe(latency_s)
                for kind in ("prompt", "completion"):
                    tokens = info.get(f"{kind}_tokens")
                    if isinstance(tokens, int):
                        self.llm_tokens.labels(provider, kind).inc(tokens)
            elif event in ("failure", "rejected"):
                self.llm_calls.labels(provider, event).inc()
            elif event == "fallback":
                self.note_fallbacks.labels(str(info.get("kind") or "other")).inc()

        return observe

    def scoring_observer(self) -> Callable[[str, float], None]:
        def observe(detector: str, duration_s: float) -> None:
            self.scoring_duration.labels(detector).observe(duration_s)

        return observe

    def observe_request(self, endpoint: str, method: str, status: int, duration_s: float) -> None:
        self.http_requests.labels(endpoint, method, f"{status // 100}xx").inc()
        self.http_request_duration.labels(endpoint).observe(duration_s)

    def exposition(self) -> tuple[bytes, str]:
        """Text exposition; across all gunicorn workers when multiprocess mode is on."""
        multiproc_dir = os.environ.get(MULTIPROC_ENV)
        if multiproc_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int, multiproc_dir: str | Path | None = None) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live-gauge files."""
    path = multiproc_dir or os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


FAILURE_STEPS = ("rule", "alert", "delivery")
# store: the database; lease: another worker took the rule over mid-cycle; upstream:
# Prometheus or another service; error: any other error raised on purpose (bad query,
# model); crash: a bug (logged with its traceback)
FAILURE_CAUSES = ("store", "lease", "upstream", "error", "crash")


class WorkerMetrics:
    """The worker's metrics, served on its own ``--metrics-port`` (one process).

    ``plugin_backend_anomaly_score{rule}`` is what Grafana alert rules fire on (> 1
    means outside the expected band); rule names come from the rules file only.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.anomaly_score = Gauge(
            "plugin_backend_anomaly_score",
            "Latest anomaly score of each watch rule (max over its series; > 1 = anomalous).",
            ["rule"],
            registry=registry,
            # many processes (the Celery engine): the value set last, by any live one
            multiprocess_mode="livemostrecent",
        )
        self.cycles = Counter(
            "plugin_backend_worker_cycles_total",
            "Watch-rule cycles, by rule and outcome (ok, error, skipped: another worker ran it).",
            ["rule", "outcome"],
            registry=registry,
        )
        self.cycle_duration = Histogram(
            "plugin_backend_worker_cycle_duration_seconds",
            "Time of one watch-rule cycle (fetch, score, root cause of new incidents).",
            ["rule"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.incidents_opened = Counter(
            "plugin_backend_incidents_opened_total",
            "Incidents opened, by origin (rule, grafana, alertmanager).",
            ["origin"],
            registry=registry,
        )
        self.alerts_processed = Counter(
            "plugin_backend_alerts_processed_total",
            "Queued alert notifications processed, by source and outcome (ok, error).",
            ["source", "outcome"],
            registry=registry,
        )
        self.outbox_rows = Gauge(
            "plugin_backend_outbox_rows",
            "Annotation outbox rows by state (pending, delivered, failed).",
            ["state"],
            registry=registry,
            # many processes (the Celery engine): the value set last, by any live one
            multiprocess_mode="livemostrecent",
        )
        self.deliveries = Counter(
            "plugin_backend_outbox_deliveries_total",
            "Annotation delivery attempts by outcome (created, updated, found, retry, failed).",
            ["outcome"],
            registry=registry,
        )
        self.rules_loaded = Gauge(
            "plugin_backend_rules_loaded",
            "Watch rules currently loaded.",
            registry=registry,
            # many processes (the Celery engine): the value set last, by any live one
            multiprocess_mode="livemostrecent",
        )
        self.rules_reload_failures = Counter(
            "plugin_backend_rules_reload_failures_total",
            "Rules-file reloads (SIGHUP) refused because the file was invalid.",
            registry=registry,
        )
        self.step_failures = Counter(
            "plugin_backend_worker_cycle_failures_total",
            "Worker steps that failed and will run again, by step (rule, alert, delivery) and "
            "cause (store, lease, upstream, error, crash); each is also logged at ERROR.",
            ["step", "cause"],
            registry=registry,
        )
        for state in ("pending", "delivered", "failed"):
            self.outbox_rows.labels(state).set(0)
        for step in FAILURE_STEPS:
            for cause in FAILURE_CAUSES:
                self.step_failures.labels(step, cause)
