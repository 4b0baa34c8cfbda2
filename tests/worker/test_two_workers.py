"""Two workers (each its own store connection pool) on one real PostgreSQL database,
or one SQLite file, scoring neighbouring ticks of one rule over the demo estate: the
incident is opened once, never by both."""

from __future__ import annotations

import itertools
import threading

import pytest

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.alert_handling import AlertHandler
from plugin_backend.detection import DetectionService
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Incident
from plugin_backend.rules import parse_rules
from plugin_backend.store import Store
from plugin_backend.watch import RuleCycle
from plugin_backend.worker import Worker, WorkerReport

FAULT_START_S = 1764018000.0  # the demo estate's pg_pool_exhaustion (30 min)
TICK_S = 15.0
RULES = parse_rules(
    "rules:\n  - name: checkout-latency\n"
    "    expr: 'http_request_duration_seconds_p99{service=\"checkout\"}'\n"
    f"    every: {TICK_S:.0f}s\n    detector: holt_winters\n"
    "    dashboard_uid: d\n    panel_id: 2\n"
)
REPLAY_S = 2 * 3600.0


def _worker(url: str, now_s: float, name: str) -> Worker:
    store = Store(url)
    source = DemoSource(seed=7)
    explain = ExplainService(source)
    return Worker(
        store=store,
        rules=RULES,
        rules_path=None,
        cycle=RuleCycle(DetectionService(source), explain),
        alerts=AlertHandler(explain, lambda: RULES, link_base=None),
        deliverer=None,
        clock=lambda: now_s,
        holder=name,
    )


@pytest.fixture
def url(store_url: str) -> str:
    store = Store(store_url)
    store.migrate()
    store.close()
    return store_url


def _no_overlap(incidents: list[Incident]) -> None:
    by_series: dict[str, list[Incident]] = {}
    for incident in incidents:
        by_series.setdefault(incident.series, []).append(incident)
    for found in by_series.values():
        found.sort(key=lambda i: i.start_s)
        for earlier, later in itertools.pairwise(found):
            assert later.start_s > earlier.end_s, f"one episode opened twice: {earlier}, {later}"


def test_two_workers_on_neighbouring_ticks_at_once_open_the_incident_once(url: str) -> None:
    now = FAULT_START_S + 1200
    workers = [_worker(url, now, "a"), _worker(url, now + TICK_S, "b")]
    reports: list[WorkerReport] = []
    start = threading.Barrier(2)

    def run(worker: Worker) -> None:
        start.wait()
        reports.append(worker.run_once(since_s=REPLAY_S))

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(reports) == 2
    assert [f for r in reports for f in r.failures] == []
    incidents = workers[0].store.list_incidents()
    assert incidents, "the demo fault is in the replayed hours"
    assert sum(r.opened for r in reports) == len(incidents)
    _no_overlap(incidents)
    assert len(workers[0].store.outbox_rows()) == len(incidents)
    for worker in workers:
        worker.store.close()


def test_the_next_tick_on_another_worker_continues_the_incident(url: str) -> None:
    now = FAULT_START_S + 1200
    first = _worker(url, now, "a").run_once(since_s=REPLAY_S)
    second_worker = _worker(url, now + TICK_S, "b")
    second = second_worker.run_once(since_s=REPLAY_S)
    assert first.opened >= 1
    assert (second.opened, second.failures, len(second.cycles)) == (0, [], 1)
    incidents = second_worker.store.list_incidents()
    assert len(incidents) == first.opened
    _no_overlap(incidents)
    second_worker.store.close()
