"""The Celery engine end to end: Celery's real worker consuming a real redis-server,
over the demo estate, with the store on SQLite and on a real PostgreSQL server.

A rule tick is one task that opens the incident in the store (and queues its
annotation); a tick delivered twice runs once; two schedulers racing over the same
ticks enqueue each one once."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin_backend.config import Settings, load_settings
from plugin_backend.rules import load_rules
from plugin_backend.store import Store
from tests.needs import require_installed

try:
    import redis
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from plugin_backend.scale.scheduler import TickScheduler, tick_of
    from plugin_backend.scale.tasks import RULES_QUEUE, CelerySender, create_celery
except ImportError:  # pragma: no cover - CI installs the scale extra
    redis = None  # type: ignore[assignment]

# 21:00 UTC on the replayed day, 47 min after the demo estate's pg_pool_exhaustion
# (demo_fault_start: 19:43 UTC, 30 min) ended: a tick between 20:13 and 22:43 holds the
# whole fault in its 3 h lookback, so the rule's cycle opens its incident.
AFTER_FAULT_S = 1764018000.0
RULE = "checkout-latency"
TICK_S = 15.0
# Band-edge alarms, as the demo's rules (deploy/demo-rules.yaml): its faults recur
# several times a day, which a pager promising one alarm per three days learns as normal.
RULES_YAML = (
    f"rules:\n  - name: {RULE}\n"
    "    expr: 'http_request_duration_seconds_p99{service=\"checkout\"}'\n"
    f"    every: {TICK_S:.0f}s\n    detector: holt_winters\n"
    "    dashboard_uid: d\n    panel_id: 2\n    rate_control: false\n"
)


@pytest.fixture(autouse=True)
def _scale_extra() -> None:
    if redis is None:
        require_installed("the scale extra", "celery and redis, the scale-out engine")


@pytest.fixture
def settings(store_url: str, redis_url: str, tmp_path: Path) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    return load_settings(
        {
            "PLUGIN_BACKEND_BROKER_URL": redis_url,
            "PLUGIN_BACKEND_STORE_URL": store_url,
            "PLUGIN_BACKEND_RULES": str(rules),
            "PLUGIN_BACKEND_WARM_DETECTORS": "none",
            "PLUGIN_BACKEND_LLM_PROVIDER": "none",
        }
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings.store_url)
    s.migrate()
    yield s
    s.close()


class TaskLog:
    """What Celery's worker ran: (task name, its return value), in order."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, sender: Any = None, retval: Any = None, **_: Any) -> None:
        with self._lock:
            self.runs.append((sender.name, retval))

    def of(self, name: str) -> list[Any]:
        with self._lock:
            return [r for n, r in self.runs if n == f"plugin_backend.{name}"]

    def wait_for(self, name: str, count: int, timeout_s: float = 120.0) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.of(name)) >= count:
                return self.of(name)
            time.sleep(0.05)
        raise AssertionError(f"{count} {name} tasks not run in {timeout_s} s: {self.runs}")


@pytest.fixture
def worker_app(settings: Settings) -> Iterator[tuple[Any, TaskLog]]:
    """The Celery app and a real worker consuming both queues from the test's Redis."""
    app = create_celery(settings, schedule=False)
    log = TaskLog()
    task_postrun.connect(log, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60):
            yield app, log
    finally:
        task_postrun.disconnect(log)


def test_a_rule_tick_task_opens_the_incident_and_queues_its_annotation(
    worker_app: tuple[Any, TaskLog], store: Store
) -> None:
    app, log = worker_app
    tick = AFTER_FAULT_S + 1200
    app.send_task("plugin_backend.rule_tick", args=[RULE, tick])
    (result,) = log.wait_for("rule_tick", 1)
    assert result["outcome"] == "ok"
    incidents = store.list_incidents(rule=RULE)
    assert incidents, "the demo fault is in the tick's lookback"
    assert sorted(result["opened"]) == sorted(i.id for i in incidents)
    assert {row.incident_id for row in store.outbox_rows()} == {i.id for i in incidents}
    (recorded,) = store.rule_ticks(RULE)
    assert (recorded.tick_s, recorded.state, recorded.error) == (tick, "done", None)
    # the tick that saved an annotation asked for a delivery pass at once
    log.wait_for("deliver", 1)


def test_a_tick_enqueued_twice_runs_once(worker_app: tuple[Any, TaskLog], store: Store) -> None:
    app, log = worker_app
    tick = AFTER_FAULT_S + 1200
    assert store.claim_tick(RULE, tick, now_s=time.time())
    for _ in range(2):  # e.g. a message redelivered, or sent again by hand
        app.send_task("plugin_backend.rule_tick", args=[RULE, tick])
    runs = log.wait_for("rule_tick", 2)
    assert sorted(r["outcome"] for r in runs) == ["duplicate", "ok"]
    opened = [i for r in runs for i in r.get("opened", [])]
    assert opened
    assert len(store.list_incidents(rule=RULE)) == len(opened)


def _queued_ticks(redis_url: str) -> list[tuple[str, float]]:
    """The rule ticks waiting in the broker's ``rules`` queue (kombu's Redis list)."""
    client = redis.Redis.from_url(redis_url)
    try:
        messages = [json.loads(m) for m in client.lrange(RULES_QUEUE, 0, -1)]
    finally:
        client.close()
    ticks = []
    for message in messages:
        if message["headers"]["task"] == "plugin_backend.rule_tick":
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]  # a json body: [args, kwargs, embed]
            ticks.append((args[0], float(args[1])))
    return ticks


def test_two_schedulers_racing_never_double_a_tick(settings: Settings, store_url: str) -> None:
    app = create_celery(settings, schedule=False)
    rules = load_rules(str(settings.rules))
    broker = settings.broker_url
    assert broker is not None
    start = 1_780_000_003.0
    clocks = [start + 0.5 * k for k in range(120)]  # one simulated minute
    stores = [Store(store_url) for _ in range(2)]
    stores[0].migrate()
    barrier = threading.Barrier(2)
    sent: list[int] = []

    def run(store: Store) -> None:
        at = iter(clocks)
        scheduler = TickScheduler(store, lambda: rules, CelerySender(app), clock=lambda: next(at))
        barrier.wait()
        sent.append(sum(scheduler.run_once() for _ in clocks))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    queued = _queued_ticks(broker.get_secret_value())
    expected = sorted({tick_of(t, TICK_S) for t in clocks})
    assert sorted(t for _, t in queued) == expected
    assert {r for r, _ in queued} == {RULE}
    assert [t.tick_s for t in stores[0].rule_ticks(RULE)] == expected[::-1]
    for s in stores:
        s.close()


def test_a_replay_tick_that_finds_its_rule_busy_is_sent_again_not_lost(
    worker_app: tuple[Any, TaskLog], store: Store, settings: Settings
) -> None:
    """``--since``: the replay tick may run while a live tick of its rule holds the
    rule's lease elsewhere; that tick does not cover the replayed history, so the
    replay goes back to the queue and a scheduler sends it again."""
    app, log = worker_app
    tick = AFTER_FAULT_S + 1200
    assert store.claim_tick(RULE, tick, now_s=time.time(), lookback_s=3 * 3600.0)
    assert store.acquire_rule(RULE, "a live tick elsewhere", time.time(), lease_s=60.0)
    app.send_task("plugin_backend.rule_tick", args=[RULE, tick, 3 * 3600.0])
    (busy,) = log.wait_for("rule_tick", 1)
    assert busy["outcome"] == "requeued"
    store.release_rule(RULE, "a live tick elsewhere")
    rules = load_rules(str(settings.rules))
    scheduler = TickScheduler(store, lambda: rules, CelerySender(app))
    assert scheduler.resend_unsent(time.time() + 1, {RULE: TICK_S}) == 1
    runs = log.wait_for("rule_tick", 2)
    assert runs[1]["outcome"] == "ok"
    assert runs[1]["opened"], "the replayed 3 h hold the demo fault"
    (recorded,) = store.rule_ticks(RULE)
    assert (recorded.tick_s, recorded.state, recorded.lookback_s) == (tick, "done", 3 * 3600.0)
