"""Composition root of the worker process: build the adapters from settings, serve
the worker's metrics, install signal handlers, run the loop."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from plugin_backend.alert_handling import AlertHandler
from plugin_backend.bootstrap import (
    build_detection,
    build_explain,
    build_grafana,
    build_source,
    build_store,
)
from plugin_backend.config import Settings
from plugin_backend.delivery import DeliveryPolicy, OutboxDeliverer
from plugin_backend.errors import ConfigError
from plugin_backend.rules import load_rules
from plugin_backend.telemetry import Telemetry, WorkerMetrics
from plugin_backend.timeparse import parse_duration_s
from plugin_backend.watch import RuleCycle
from plugin_backend.worker import Worker

__all__ = ["build_worker", "run_worker"]

log = logging.getLogger("plugin_backend.worker")

DELIVERY_BATCH = 20  # rows per pass; rule cycles and alerts run between passes


def build_worker(
    settings: Settings,
    rules_path: str,
    registry: CollectorRegistry | None = None,
    *,
    defer_notes: bool = False,
) -> Worker:
    """The worker of ``settings``. ``defer_notes``: new incidents (of rules and of
    alerts) get the template note and a note task writes the LLM's later (the Celery
    engine; no effect without an LLM)."""
    rules = load_rules(rules_path)
    store = build_store(settings)
    store.migrate()
    registry = registry if registry is not None else CollectorRegistry()
    telemetry = Telemetry(registry)
    metrics = WorkerMetrics(registry)
    source = build_source(settings, telemetry)
    detection = build_detection(settings, source, telemetry)
    grafana = build_grafana(settings)
    # deploy annotations count as change events
    explain = build_explain(settings, source, telemetry, events=grafana)
    link = settings.advertised_url()
    deliverer = None
    if grafana is not None:
        deliverer = OutboxDeliverer(
            store,
            grafana,
            policy=DeliveryPolicy(
                backoff_s=settings.delivery_backoff_s,
                backoff_max_s=settings.delivery_backoff_max_s,
                # one delivery (lookup + create or patch) fits its lease even if both time out
                lease_s=2 * settings.grafana_timeout_s + 2.0,
                batch=DELIVERY_BATCH,
            ),
            clock=time.time,
            observe=lambda outcome: metrics.deliveries.labels(outcome).inc(),
        )
    worker = Worker(
        store=store,
        rules=rules,
        rules_path=rules_path,
        cycle=RuleCycle(
            detection,
            explain,
            link_base=link,
            defer_notes=defer_notes and explain.writes_with_llm,
        ),
        # the handler reads the worker's current rules (they change on SIGHUP)
        alerts=AlertHandler(
            explain,
            lambda: worker.rules,
            link_base=link,
            defer_notes=defer_notes and explain.writes_with_llm,
        ),
        deliverer=deliverer,
        metrics=metrics,
        retention_s=settings.retention_days * 86_400.0,
    )
    log.info(
        "worker: source %s, store %r, %s, %d rules",
        source.describe(),
        store,
        grafana.describe() if grafana else "no Grafana (incidents stored, not annotated)",
        len(rules.rules),
    )
    return worker


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    rules_path = args.rules or (str(settings.rules) if settings.rules else None)
    if not rules_path:
        raise ConfigError("worker: give --rules FILE or set PLUGIN_BACKEND_RULES")
    if getattr(args, "engine", "loop") == "celery":
        return _run_celery(settings, args, rules_path)
    since_s = parse_duration_s(args.since, what="--since") if args.since else None
    registry = CollectorRegistry()
    worker = build_worker(settings, rules_path, registry)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
        log.info("worker metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    if args.once:
        report = worker.run_once(since_s=since_s)
        print(
            f"{len(report.cycles)} rules run, {report.opened} incidents opened, "
            f"{report.alerts} alerts processed, annotations: {report.delivery.outcomes or 'none'}"
            f", {len(report.failures)} steps failed"
        )
        for failure in report.failures:
            print(f"plugin-backend worker: {failure}", file=sys.stderr)
        return 1 if report.failures else 0
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("worker: signal %d, stopping after this step", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, lambda _s, _f: worker.request_reload())
    worker.run_forever(stop, since_s=since_s)
    return 0


def _run_celery(settings: Settings, args: argparse.Namespace, rules_path: str) -> int:
    if args.once:
        # a pass is one process's: Celery's ticks run on whichever worker takes them
        raise ConfigError(
            "worker: --once is a single pass of the one-process worker; with --engine celery "
            "the ticks run on whichever worker takes them, so there is no pass to wait for. "
            "Run `plugin-backend worker --once` (no --engine) on the same store and rules: "
            "it takes each rule's lease as the Celery tasks do, so it can run beside them"
        )
    since_s = parse_duration_s(args.since, what="--since") if args.since else None
    from plugin_backend.scale.queues import parse_queues

    queues = parse_queues(args.queues)
    if args.note_concurrency < 0:
        raise ConfigError("worker: --note-concurrency must be 0 or more")
    if settings.broker_url is None:
        raise ConfigError(
            "worker --engine celery needs PLUGIN_BACKEND_BROKER_URL (e.g. redis://127.0.0.1:6379/0)"
        )
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"worker --engine celery needs the scale extra ({exc.name} is missing): "
            "pip install 'plugin-backend[scale]'"
        ) from None
    from plugin_backend.scale.tasks import run_celery_worker

    return run_celery_worker(
        settings,
        rules_path=rules_path,
        concurrency=args.concurrency,
        queues=queues,
        note_concurrency=args.note_concurrency,
        since_s=since_s,
        schedule=not args.no_schedule,
        metrics=(args.metrics_host, args.metrics_port) if args.metrics_port else None,
    )
