"""The Celery app of the scale-out engine: its configuration from ``Settings`` (one
setting, ``PLUGIN_BACKEND_BROKER_URL``), its tasks, and the scheduler it runs beside
its worker.

Tasks (no result backend: outcomes are in the store and the logs):

* ``plugin_backend.rule_tick(rule, tick_s)`` on queue ``rules``: one rule's cycle
  (fetch, score, incident bookkeeping, root cause, note) as of its tick, via
  ``Worker.run_rule`` under the rule's store lease. The tick's row in ``rule_ticks``
  makes it run once however often it is delivered, and records how it ended.
* ``plugin_backend.deliver`` on queue ``delivery``: one pass over the annotation outbox
  (rows are claimed with a lease, so passes may overlap). A tick that saved an
  annotation enqueues one at once; the scheduler enqueues one every 2 s.
* ``plugin_backend.alerts`` (queue ``rules``): the queued alert webhooks.
* ``plugin_backend.purge`` (queue ``delivery``): retention, hourly.

Each worker process builds its own ``Worker`` (store, source, detectors, note writer)
on its first task, after Celery forked it, from the same settings as
``plugin-backend worker`` (``build_worker``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from plugin_backend.config import Settings, load_settings
from plugin_backend.errors import ConfigError, UpstreamError
from plugin_backend.rules import load_rules
from plugin_backend.scale.scheduler import TICK_RETENTION_S, TickScheduler
from plugin_backend.store import Store
from plugin_backend.worker import Worker

__all__ = [
    "DELIVERY_QUEUE",
    "RULES_QUEUE",
    "CelerySender",
    "TaskRuntime",
    "celery_config",
    "create_celery",
    "run_celery_worker",
]

log = logging.getLogger(__name__)

RULES_QUEUE = "rules"
DELIVERY_QUEUE = "delivery"
_TICK_OUTCOME = {"ok": "done", "skipped": "skipped", "error": "failed"}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings from ours: the broker, two queues, no result backend."""
    from kombu.entity import Exchange, Queue

    # each queue on its own exchange and key: a task routed to one is never copied to both
    queues = [
        Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
        for name in (RULES_QUEUE, DELIVERY_QUEUE)
    ]
    if settings.broker_url is None:
        raise ConfigError(
            "the Celery engine needs PLUGIN_BACKEND_BROKER_URL (e.g. redis://127.0.0.1:6379/0)"
        )
    return {
        "broker_url": settings.broker_url.get_secret_value(),
        "broker_connection_retry_on_startup": True,
        "task_queues": queues,
        "task_default_queue": RULES_QUEUE,
        "task_routes": {
            "plugin_backend.deliver": {"queue": DELIVERY_QUEUE},
            "plugin_backend.purge": {"queue": DELIVERY_QUEUE},
        },
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # a cycle takes from milliseconds to seconds (an LLM note): take one at a time
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def _rules_path(settings: Settings) -> str:
    if settings.rules is None:
        raise ConfigError("the Celery engine needs the rules: set PLUGIN_BACKEND_RULES")
    return str(settings.rules)


class TaskRuntime:
    """What a worker process's tasks run on: one ``Worker`` built from the settings."""

    def __init__(self, worker: Worker, send_delivery: Callable[[], None]) -> None:
        self.worker = worker
        self._send_delivery = send_delivery

    @classmethod
    def from_settings(cls, settings: Settings, send_delivery: Callable[[], None]) -> TaskRuntime:
        from plugin_backend.worker_main import build_worker

        return cls(build_worker(settings, _rules_path(settings)), send_delivery)

    def rule_tick(self, rule_name: str, tick_s: float, task_id: str) -> dict[str, Any]:
        worker, store = self.worker, self.worker.store
        holder = f"{worker.holder}:{task_id[:8]}"
        outcome = store.start_tick(rule_name, tick_s, holder, time.time())
        if outcome != "started":
            log.info("rule %s tick %.0f not run: %s", rule_name, tick_s, outcome)
            return {"rule": rule_name, "tick_s": tick_s, "outcome": outcome}
        rule = worker.rules.get(rule_name)
        if rule is None:  # the rules file differs between scheduler and worker
            log.error("rule %s tick %.0f: no such rule in this worker's rules", rule_name, tick_s)
            store.finish_tick(rule_name, tick_s, "skipped", time.time(), error="unknown rule")
            return {"rule": rule_name, "tick_s": tick_s, "outcome": "unknown rule"}
        run = worker.run_rule(rule, at_s=tick_s, holder=holder)
        error = str(run.failure) if run.failure else None
        if run.outcome == "skipped":
            error = "another worker held the rule's lease"
        store.finish_tick(rule_name, tick_s, _TICK_OUTCOME[run.outcome], time.time(), error)
        opened = run.result.opened if run.result else []
        if run.result and any(annotation for _, annotation in run.result.changed):
            self._send_delivery()
        return {"rule": rule_name, "tick_s": tick_s, "outcome": run.outcome, "opened": opened}

    def deliver(self) -> dict[str, int]:
        return dict(self.worker.deliver().outcomes)

    def process_alerts(self) -> int:
        return self.worker.process_alerts()

    def purge(self) -> int:
        self.worker.purge()
        return self.worker.store.purge_ticks(time.time() - TICK_RETENTION_S)


class CelerySender:
    """The scheduler's ``TaskSender`` over a Celery app (a broker error is an
    ``UpstreamError``: the scheduler logs it and goes on)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def rule_tick(self, rule: str, tick_s: float, *, expires_s: float) -> None:
        self._send("plugin_backend.rule_tick", [rule, tick_s], expires_s)

    def housekeeping(self, name: str, *, expires_s: float) -> None:
        task = {":deliver": "deliver", ":alerts": "alerts", ":purge": "purge"}[name]
        self._send(f"plugin_backend.{task}", [], expires_s)

    def _send(self, task: str, args: list[Any], expires_s: float) -> None:
        from kombu.exceptions import KombuError

        try:
            self.app.send_task(task, args=args, expires=max(expires_s, time.time() + 1.0))
        except (KombuError, OSError) as exc:
            raise UpstreamError(f"broker: {type(exc).__name__}: {exc}") from exc


def create_celery(settings: Settings | None = None, *, schedule: bool = True) -> Any:
    """The Celery app. ``settings`` default to the environment's, read when Celery first
    needs its configuration (so ``celery -A plugin_backend.scale.app`` imports cheaply).
    ``schedule``: its workers also run a ``TickScheduler`` (in the main process)."""
    from celery import Celery, bootsteps

    app = Celery("plugin_backend", set_as_current=False)
    lock = threading.Lock()
    state: dict[str, Any] = {"settings": settings}

    def current_settings() -> Settings:
        with lock:
            if state["settings"] is None:
                state["settings"] = load_settings()
            found: Settings = state["settings"]
            return found

    def runtime() -> TaskRuntime:
        with lock:
            if "runtime" not in state:
                state["runtime"] = TaskRuntime.from_settings(state["settings"], send_delivery)
            built: TaskRuntime = state["runtime"]
            return built

    def send_delivery() -> None:
        app.send_task("plugin_backend.deliver")

    if settings is not None:
        app.conf.update(celery_config(settings))
    else:
        app.on_configure.connect(
            lambda sender, **_: sender.conf.update(celery_config(current_settings())),
            weak=False,
        )

    @app.task(name="plugin_backend.rule_tick", bind=True, shared=False)
    def rule_tick(task: Any, rule: str, tick_s: float) -> dict[str, Any]:
        current_settings()
        return runtime().rule_tick(rule, float(tick_s), task.request.id or "direct")

    @app.task(name="plugin_backend.deliver", shared=False)
    def deliver() -> dict[str, int]:
        current_settings()
        return runtime().deliver()

    @app.task(name="plugin_backend.alerts", shared=False)
    def alerts() -> int:
        current_settings()
        return runtime().process_alerts()

    @app.task(name="plugin_backend.purge", shared=False)
    def purge() -> int:
        current_settings()
        return runtime().purge()

    if schedule:

        class Scheduling(bootsteps.StartStopStep):  # type: ignore[misc]
            """Runs a ``TickScheduler`` beside the worker's consumer."""

            requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

            def __init__(self, parent: Any, **kwargs: Any) -> None:
                super().__init__(parent, **kwargs)
                self.stop_event = threading.Event()
                self.thread: threading.Thread | None = None
                self.store: Store | None = None

            def start(self, parent: Any) -> None:
                settings = current_settings()
                rules = load_rules(Path(_rules_path(settings)))
                self.store = Store(settings.store_url)
                self.store.migrate()
                scheduler = TickScheduler(self.store, lambda: rules, CelerySender(app))
                self.thread = threading.Thread(
                    target=scheduler.run_forever,
                    args=(self.stop_event,),
                    name="tick-scheduler",
                    daemon=True,
                )
                self.thread.start()

            def stop(self, parent: Any) -> None:
                self.stop_event.set()
                if self.thread is not None:
                    self.thread.join(timeout=10)
                if self.store is not None:
                    self.store.close()

        app.steps["worker"].add(Scheduling)
    return app


def run_celery_worker(settings: Settings, *, rules_path: str, concurrency: int | None) -> int:
    """``plugin-backend worker --engine celery``: a Celery worker (``concurrency`` processes,
    default one per CPU) on both queues, with a tick scheduler beside it."""
    app = create_celery(settings.model_copy(update={"rules": Path(rules_path)}))
    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        f"--queues={RULES_QUEUE},{DELIVERY_QUEUE}",
    ]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)
    return 0
