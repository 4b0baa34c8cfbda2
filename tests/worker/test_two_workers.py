"""Two workers (each its own store connection pool) on one real PostgreSQL database,
or one SQLite file, scoring neighbouring ticks of one rule over the demo estate: the
incident is opened once, never by both."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from plugin_backend import worker as worker_module
from plugin_backend.adapters.demo import DemoSource
from plugin_backend.alert_handling import AlertHandler
from plugin_backend.detection import DetectionService
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Incident
from plugin_backend.rules import parse_rules
from plugin_backend.store import Store
from plugin_backend.types import Series, TimeRange
from plugin_backend.watch import RuleCycle
from plugin_backend.worker import Worker, WorkerReport
from tests.demo_faults import demo_fault_start

FAULT_START_S = demo_fault_start("pg_pool_exhaustion")  # 30 min, seed 7
TICK_S = 15.0
# Band-edge alarms, as the demo's rules (deploy/demo-rules.yaml): its faults recur
# several times a day, which a pager promising one alarm per three days learns as normal.
RULES = parse_rules(
    "rules:\n  - name: checkout-latency\n"
    "    expr: 'http_request_duration_seconds_p99{service=\"checkout\"}'\n"
    f"    every: {TICK_S:.0f}s\n    detector: holt_winters\n"
    "    dashboard_uid: d\n    panel_id: 2\n    rate_control: false\n"
)
REPLAY_S = 2 * 3600.0


class SlowDemoSource(DemoSource):
    """The demo estate behind a slow network: the first range query takes ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(seed=7)
        self.delay_s = delay_s

    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        time.sleep(self.delay_s)
        self.delay_s = 0.0
        return super().query_range(expr, time_range, step_s)


def _worker(url: str, now_s: float | None, name: str, source: DemoSource | None = None) -> Worker:
    store = Store(url)
    source = source or DemoSource(seed=7)
    explain = ExplainService(source)
    return Worker(
        store=store,
        rules=RULES,
        rules_path=None,
        cycle=RuleCycle(DetectionService(source), explain),
        alerts=AlertHandler(explain, lambda: RULES, link_base=None),
        deliverer=None,
        clock=time.time if now_s is None else lambda: now_s,
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


def test_a_slow_cycle_keeps_its_lease_and_a_finished_one_hands_it_on(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "RULE_LEASE_S", 1.0)
    monkeypatch.setattr(worker_module, "RULE_LEASE_RENEW_S", 0.2)
    slow = _worker(url, None, "slow", SlowDemoSource(delay_s=2.5))  # a cycle > its lease
    other = Store(url)
    reports: list[WorkerReport] = []
    runner = threading.Thread(target=lambda: reports.append(slow.run_once(since_s=REPLAY_S)))
    runner.start()
    try:
        time.sleep(1.8)  # past the lease it took: it has renewed it since
        assert runner.is_alive()
        assert not other.acquire_rule("checkout-latency", "other", time.time(), lease_s=1.0)
    finally:
        runner.join(timeout=120)
    (report,) = reports
    assert report.failures == []  # never lost its lease: its writes were kept
    assert other.acquire_rule("checkout-latency", "other", time.time(), lease_s=1.0)
    other.close()
    slow.store.close()
