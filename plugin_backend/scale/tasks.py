"""The Celery app of the scale-out engine: its configuration from ``Settings`` (one
setting, ``PLUGIN_BACKEND_BROKER_URL``), its tasks, and the scheduler it runs beside
its worker.

Tasks (no result backend: outcomes are in the store and the logs):

* ``plugin_backend.rule_tick(rule, tick_s[, lookback_s])`` on queue ``rules``: one
  rule's cycle (fetch, score, incident bookkeeping, root cause with the template
  note) as of its tick, via ``Worker.run_rule`` under the rule's store lease. The
  tick's row in ``rule_ticks`` makes it run once however often it is delivered, and
  records how it ended; the task renews the row's lease while it runs, so a tick
  whose worker died is sent again (``scheduler``). ``lookback_s``: a replay
  (``--since``).
* ``plugin_backend.write_note(incident_id)`` on queue ``notes``: the LLM's note of a
  new incident, a rule's or an alert's (``Worker.write_note``), enqueued by the task
  that opened it. Its own queue, served by its own worker processes (``--queues notes
  --concurrency K``: at most K notes at once per such worker), so a slow model never
  holds up scoring.
* ``plugin_backend.sweep_notes([older_than_s])`` (queue ``delivery``), every 60 s:
  sends again the notes still pending ``NOTE_SWEEP_AGE_S`` after their incident was
  opened (their task was lost with its worker, or never sent), each at most once per
  that age; the note is saved only while still pending, so it is written once.
* ``plugin_backend.deliver`` on queue ``delivery``: one pass over the annotation outbox
  (rows are claimed with a lease, so passes may overlap). A tick that saved an
  annotation enqueues one at once; the scheduler enqueues one every 2 s.
* ``plugin_backend.alerts`` (queue ``rules``): the queued alert webhooks; a new
  incident gets the template note, and its LLM note is a ``write_note`` task.
* ``plugin_backend.purge`` (queue ``delivery``): retention, hourly.

Each worker process builds its own ``Worker`` (store, source, detectors, note writer)
on its first task, after Celery forked it, from the same settings as
``plugin-backend worker`` (``build_worker``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from plugin_backend.config import Settings, load_settings, pin_math_threads
from plugin_backend.errors import BackendError, ConfigError, UpstreamError
from plugin_backend.rules import RuleSet, load_rules
from plugin_backend.scale.queues import DELIVERY_QUEUE, NOTES_QUEUE, QUEUES, RULES_QUEUE
from plugin_backend.scale.reload import RulesReload
from plugin_backend.scale.scheduler import (
    TICK_LEASE_S,
    TICK_RENEW_S,
    TICK_RETENTION_S,
    TickScheduler,
    tick_of,
)
from plugin_backend.scale.state import SharedScoreCache
from plugin_backend.store import Store
from plugin_backend.watch import DEFAULT_LOOKBACK_S, CycleResult, needs_note
from plugin_backend.worker import Worker

__all__ = [
    "DELIVERY_QUEUE",
    "NOTES_QUEUE",
    "QUEUES",
    "RULES_QUEUE",
    "CelerySender",
    "TaskRuntime",
    "celery_config",
    "create_celery",
    "run_celery_worker",
]

log = logging.getLogger(__name__)

NOTE_RETRY_S = 5.0  # a note whose rule stayed busy is saved again this much later
NOTE_RETRIES = 12
# A note still pending this long after its incident was opened is sent again (its task
# was lost): well past a note's time in the queue and with the LLM (seconds), and
# NOTE_RETRIES * NOTE_RETRY_S. Each pending note is sent again at most once per period.
NOTE_SWEEP_AGE_S = 300.0
NOTE_SWEEP_HORIZON_S = 86_400.0  # notes pending longer are left as they are
_TICK_OUTCOME = {"ok": "done", "skipped": "skipped", "error": "failed"}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings from ours: the broker, two queues, no result backend."""
    from kombu.entity import Exchange, Queue

    # each queue on its own exchange and key: a task routed to one is never copied to both
    queues = [
        Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
        for name in QUEUES
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
            "plugin_backend.sweep_notes": {"queue": DELIVERY_QUEUE},
            "plugin_backend.write_note": {"queue": NOTES_QUEUE},
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

    def __init__(
        self,
        worker: Worker,
        send_delivery: Callable[[], None],
        send_note: Callable[[str], None] | None = None,
    ) -> None:
        self.worker = worker
        self._send_delivery = send_delivery
        self._send_note = send_note

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        send_delivery: Callable[[], None],
        send_note: Callable[[str], None] | None = None,
    ) -> TaskRuntime:
        from plugin_backend.worker_main import build_worker

        worker = build_worker(settings, _rules_path(settings), defer_notes=True)
        shared = shared_score_cache(settings)
        if shared is not None:
            worker.cycle.detection.cache = shared
        worker.send_note = send_note  # the alerts' new incidents
        return cls(worker, send_delivery, send_note)

    def rule_tick(
        self, rule_name: str, tick_s: float, task_id: str, lookback_s: float | None = None
    ) -> dict[str, Any]:
        worker, store = self.worker, self.worker.store
        holder = f"{worker.holder}:{task_id[:8]}"
        outcome = store.start_tick(rule_name, tick_s, holder, time.time(), lease_s=TICK_LEASE_S)
        if outcome != "started":
            log.info("rule %s tick %.0f not run: %s", rule_name, tick_s, outcome)
            return {"rule": rule_name, "tick_s": tick_s, "outcome": outcome}
        done = threading.Event()
        beat = threading.Thread(
            target=self._renew_tick,
            args=(rule_name, tick_s, holder, done),
            name=f"tick-{rule_name}",
            daemon=True,
        )
        beat.start()
        try:
            return self._run_tick(rule_name, tick_s, holder, lookback_s)
        finally:
            done.set()
            beat.join()

    def _run_tick(
        self, rule_name: str, tick_s: float, holder: str, lookback_s: float | None
    ) -> dict[str, Any]:
        worker, store = self.worker, self.worker.store
        rule = worker.rules.get(rule_name)
        if rule is None:  # the rules file differs between scheduler and worker
            log.error("rule %s tick %.0f: no such rule in this worker's rules", rule_name, tick_s)
            store.finish_tick(
                rule_name, tick_s, "skipped", time.time(), error="unknown rule", holder=holder
            )
            return {"rule": rule_name, "tick_s": tick_s, "outcome": "unknown rule"}
        recorded: list[bool] = []

        def saved(_: CycleResult) -> None:
            """Still under the rule's lease: share the detector state (the rule's next
            tick may run elsewhere), then record the tick done, so that a worker dying
            at any instant leaves either a done tick or one whose rule is still held
            (``reclaim_ticks`` then keeps it for the tick)."""
            cache = worker.cycle.detection.cache
            if isinstance(cache, SharedScoreCache):
                cache.flush()
            recorded.append(
                store.finish_tick(rule_name, tick_s, "done", time.time(), holder=holder)
            )

        run = worker.run_rule(
            rule,
            at_s=tick_s,
            holder=holder,
            lookback_s=lookback_s or DEFAULT_LOOKBACK_S,
            after_save=saved,
        )
        error = str(run.failure) if run.failure else None
        # a replay whose rule a live tick holds: that tick does not cover the replayed
        # history, so a scheduler sends the replay again (``unsent_ticks``), not lost
        replay_busy = run.outcome == "skipped" and lookback_s is not None
        if replay_busy and store.requeue_tick(rule_name, tick_s, holder, time.time()):
            log.info("rule %s replay tick %.0f: rule busy, queued again", rule_name, tick_s)
            return {"rule": rule_name, "tick_s": tick_s, "outcome": "requeued"}
        if run.outcome == "skipped":
            error = "another worker held the rule's lease"
        if run.outcome != "ok":
            recorded.append(
                store.finish_tick(
                    rule_name, tick_s, _TICK_OUTCOME[run.outcome], time.time(), error, holder=holder
                )
            )
        if not all(recorded):
            log.warning("rule %s tick %.0f: reclaimed while it ran", rule_name, tick_s)
        opened = run.result.opened if run.result else []
        if run.result and any(annotation for _, annotation in run.result.changed):
            self._send_delivery()
        if run.result and self._send_note is not None:
            for incident, _ in run.result.changed:
                if incident.id in opened and needs_note(incident):
                    self._send_note(incident.id)
        return {"rule": rule_name, "tick_s": tick_s, "outcome": run.outcome, "opened": opened}

    def _renew_tick(self, rule: str, tick_s: float, holder: str, done: threading.Event) -> None:
        """Keep the tick's lease while it runs (until ``done``): a tick whose lease ran
        out is taken for lost with its worker and sent again."""
        store = self.worker.store
        while not done.wait(TICK_RENEW_S):
            try:
                if not store.renew_tick(rule, tick_s, holder, time.time(), lease_s=TICK_LEASE_S):
                    log.warning("rule %s tick %.0f: reclaimed by a scheduler", rule, tick_s)
                    return
            except BackendError as exc:  # try again; past the lease it is reclaimed
                log.warning("rule %s tick %.0f: lease not renewed: %s", rule, tick_s, exc)

    def write_note(self, incident_id: str, task_id: str) -> str:
        outcome = self.worker.write_note(incident_id, holder=f"{self.worker.holder}:{task_id[:8]}")
        if outcome == "written":
            self._send_delivery()
        return outcome

    def sweep_notes(self, older_than_s: float = NOTE_SWEEP_AGE_S) -> list[str]:
        """Send again the notes pending for more than ``older_than_s`` since their
        incident was opened, each at most once per ``older_than_s`` however many sweeps
        run (a ``rule_ticks`` claim named ``:note:<id>``); returns their incidents."""
        explain = self.worker.cycle.explain
        if self._send_note is None or explain is None or not explain.writes_with_llm:
            return []
        store, now = self.worker.store, time.time()
        found = store.list_incidents(
            created_before_s=now - older_than_s,
            created_after_s=now - NOTE_SWEEP_HORIZON_S,
            limit=10_000,
        )
        sent: list[str] = []
        for incident in found:
            if not needs_note(incident):
                continue
            if store.claim_tick(f":note:{incident.id}", tick_of(now, older_than_s), now):
                self._send_note(incident.id)
                sent.append(incident.id)
        if sent:
            log.warning("%d pending notes sent again (their task was lost)", len(sent))
        return sent

    def deliver(self) -> dict[str, int]:
        return dict(self.worker.deliver().outcomes)

    def process_alerts(self) -> int:
        return self.worker.process_alerts()

    def purge(self) -> int:
        self.worker.purge()
        return self.worker.store.purge_ticks(time.time() - TICK_RETENTION_S)


def shared_score_cache(settings: Settings) -> SharedScoreCache | None:
    """The score cache in the broker's Redis (``scale.state``); ``None`` when the broker
    is not Redis (each worker then keeps its own, as the one-process worker does)."""
    url = settings.broker_url.get_secret_value() if settings.broker_url else ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        log.warning("detector state stays in each worker's memory: the broker is not Redis")
        return None
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
    return SharedScoreCache(client, settings.score_cache_entries)


class CelerySender:
    """The scheduler's ``TaskSender`` over a Celery app (a broker error is an
    ``UpstreamError``: the scheduler logs it and goes on)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def rule_tick(
        self, rule: str, tick_s: float, *, expires_s: float, lookback_s: float | None = None
    ) -> None:
        args = [rule, tick_s] if lookback_s is None else [rule, tick_s, lookback_s]
        self._send("plugin_backend.rule_tick", args, expires_s)

    def housekeeping(self, name: str, *, expires_s: float) -> None:
        task = {
            ":deliver": "deliver",
            ":alerts": "alerts",
            ":notes": "sweep_notes",
            ":purge": "purge",
        }[name]
        self._send(f"plugin_backend.{task}", [], expires_s)

    def _send(self, task: str, args: list[Any], expires_s: float) -> None:
        from kombu.exceptions import KombuError

        try:
            self.app.send_task(task, args=args, expires=max(expires_s, time.time() + 1.0))
        except (KombuError, OSError) as exc:
            raise UpstreamError(f"broker: {type(exc).__name__}: {exc}") from exc


def create_celery(
    settings: Settings | None = None, *, schedule: bool = True, since_s: float | None = None
) -> Any:
    """The Celery app. ``settings`` default to the environment's, read when Celery first
    needs its configuration (so ``celery -A plugin_backend.scale.app`` imports cheaply).
    ``schedule``: its workers also run a ``TickScheduler`` (in the main process), which
    first replays ``since_s`` of history when given. SIGHUP reloads the rules of every
    process of its workers (``scale.reload``: ``app.rules_reload``)."""
    from celery import Celery, bootsteps

    app = Celery("plugin_backend", set_as_current=False)
    lock = threading.Lock()
    state: dict[str, Any] = {"settings": settings}
    reload = RulesReload()  # before the pool forks: its processes share its count
    app.rules_reload = reload

    def current_settings() -> Settings:
        with lock:
            if state["settings"] is None:
                state["settings"] = load_settings()
            found: Settings = state["settings"]
            return found

    def runtime() -> TaskRuntime:
        with lock:
            if "runtime" not in state:
                state["runtime"] = TaskRuntime.from_settings(
                    state["settings"], send_delivery, send_note
                )
                state["reloads"] = reload.generation
            built: TaskRuntime = state["runtime"]
            if state["reloads"] != reload.generation:  # SIGHUP: the main process reloaded
                state["reloads"] = reload.generation
                built.worker.reload_rules()
            return built

    def send_delivery() -> None:
        app.send_task("plugin_backend.deliver")

    def send_note(incident_id: str) -> None:
        app.send_task("plugin_backend.write_note", args=[incident_id])

    if settings is not None:
        app.conf.update(celery_config(settings))
    else:
        app.on_configure.connect(
            lambda sender, **_: sender.conf.update(celery_config(current_settings())),
            weak=False,
        )

    @app.task(name="plugin_backend.rule_tick", bind=True, shared=False)
    def rule_tick(
        task: Any, rule: str, tick_s: float, lookback_s: float | None = None
    ) -> dict[str, Any]:
        current_settings()
        return runtime().rule_tick(rule, float(tick_s), task.request.id or "direct", lookback_s)

    @app.task(name="plugin_backend.write_note", bind=True, shared=False, max_retries=NOTE_RETRIES)
    def write_note(task: Any, incident_id: str) -> str:
        current_settings()
        outcome = runtime().write_note(incident_id, task.request.id or "direct")
        if outcome == "busy":  # the rule's cycles held its lease throughout: later
            raise task.retry(countdown=NOTE_RETRY_S)
        return outcome

    @app.task(name="plugin_backend.deliver", shared=False)
    def deliver() -> dict[str, int]:
        current_settings()
        return runtime().deliver()

    @app.task(name="plugin_backend.alerts", shared=False)
    def alerts() -> int:
        current_settings()
        return runtime().process_alerts()

    @app.task(name="plugin_backend.sweep_notes", shared=False)
    def sweep_notes(older_than_s: float = NOTE_SWEEP_AGE_S) -> list[str]:
        current_settings()
        return runtime().sweep_notes(float(older_than_s))

    @app.task(name="plugin_backend.purge", shared=False)
    def purge() -> int:
        current_settings()
        return runtime().purge()

    from celery.signals import worker_process_init

    worker_process_init.connect(_init_pool_process, weak=False)

    app.steps["worker"].add(
        _reloading_step(
            reload,
            lambda: _rules_path(current_settings()),
            lambda rules: state.__setitem__("rules", rules),
        )
    )

    if schedule:

        class Scheduling(bootsteps.StartStopStep):  # type: ignore[misc]
            """Runs a ``TickScheduler`` beside the worker's consumer."""

            requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

            def __init__(self, parent: Any, **kwargs: Any) -> None:
                super().__init__(parent, **kwargs)
                self.background = _Background("tick-scheduler")
                self.store: Store | None = None

            def start(self, parent: Any) -> None:
                settings = current_settings()
                state["rules"] = load_rules(Path(_rules_path(settings)))  # SIGHUP: new ones
                self.store = Store(settings.store_url)
                self.store.migrate()
                scheduler = TickScheduler(
                    self.store, lambda: state["rules"], CelerySender(app), since_s=since_s
                )
                self.background.start(scheduler.run_forever, self.background.stop_event)

            def stop(self, parent: Any) -> None:
                self.background.stop()
                if self.store is not None:
                    self.store.close()

        app.steps["worker"].add(Scheduling)
    return app


class _Background:
    """The daemon thread a worker bootstep runs beside the consumer, and the event that
    tells it to stop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, target: Callable[..., object], *args: object) -> None:
        self.thread = threading.Thread(target=target, args=args, name=self.name, daemon=True)
        self.thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout_s)


def _reloading_step(
    reload: RulesReload, rules_path: Callable[[], str], apply: Callable[[RuleSet], None]
) -> type:
    """A worker bootstep: SIGHUP reloads the rules in place (instead of Celery's restart),
    ``apply``-ing them to the scheduler, and counts them (or a refusal) in the worker's
    metrics, as the one-process worker does."""
    from celery import bootsteps, platforms
    from prometheus_client import CollectorRegistry

    from plugin_backend.telemetry import WorkerMetrics

    class Reloading(bootsteps.StartStopStep):  # type: ignore[misc]
        requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.background = _Background("rules-reload")

        def start(self, parent: Any) -> None:
            if threading.current_thread() is not threading.main_thread():
                return  # a worker embedded in a thread (tests): signals are its host's
            platforms.signals["SIGHUP"] = reload.request
            # in multiprocess mode (--metrics-port) summed with the pool processes'
            metrics = WorkerMetrics(CollectorRegistry())

            def applied(rules: RuleSet) -> None:
                apply(rules)
                metrics.rules_loaded.set(len(rules.rules))

            stop_event = self.background.stop_event
            failed = metrics.rules_reload_failures.inc
            self.background.start(reload.run, rules_path(), applied, stop_event, failed)

        def stop(self, parent: Any) -> None:
            self.background.stop()

    return Reloading


def _init_pool_process(**_: Any) -> None:
    """A pool process computes on one thread (torch, BLAS): the pool has one process per
    core, and each taking every core for its own threads oversubscribes them. Read by
    torch when it is first imported, in the task; an operator's setting is kept. It
    ignores SIGHUP: the main process reloads the rules and tells it (``scale.reload``)."""
    pin_math_threads(1)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def run_celery_worker(
    settings: Settings,
    *,
    rules_path: str,
    concurrency: int | None,
    queues: tuple[str, ...] = (RULES_QUEUE, DELIVERY_QUEUE),
    note_concurrency: int = 1,
    since_s: float | None = None,
    schedule: bool = True,
    metrics: tuple[str, int] | None = None,
) -> int:
    """``plugin-backend worker --engine celery``: a Celery worker (``concurrency``
    processes, default one per CPU) on ``queues``, with a tick scheduler beside it when
    it runs rules (unless not ``schedule``). Notes are written by workers of their own
    (``queues == ("notes",)``): unless it is one, or ``note_concurrency`` is 0, this one
    starts such a worker beside itself with ``note_concurrency`` processes, when an LLM
    writes the notes."""
    settings = settings.model_copy(update={"rules": Path(rules_path)})
    notes_only = queues == (NOTES_QUEUE,)
    app = create_celery(settings, schedule=schedule and RULES_QUEUE in queues, since_s=since_s)
    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        f"--queues={','.join(queues)}",
    ]
    if notes_only:
        argv.append("--hostname=notes@%h")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if metrics is not None:
        _serve_metrics(*metrics)
    notes = None
    if NOTES_QUEUE not in queues and note_concurrency > 0 and settings.llm_provider != "none":
        notes = _start_note_worker(rules_path, note_concurrency)
        app.rules_reload.children.append(notes)  # SIGHUP reaches it too
    try:
        app.worker_main(argv)
    finally:
        if notes is not None:
            _stop(notes)
    return 0


def _serve_metrics(host: str, port: int) -> None:
    """``/metrics`` of all this worker's pool processes (prometheus-client multiprocess
    mode: ``cli`` set its directory before anything imported prometheus-client)."""
    from celery.signals import worker_process_shutdown
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from plugin_backend.telemetry import mark_process_dead

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
    worker_process_shutdown.connect(
        lambda pid=None, **_: mark_process_dead(pid or os.getpid()), weak=False
    )
    log.info("worker metrics on http://%s:%d/metrics", host, port)


def _start_note_worker(rules_path: str, concurrency: int) -> subprocess.Popen[bytes]:
    """A worker process for the ``notes`` queue (same environment and settings)."""
    command = [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery"]
    command += ["--rules", rules_path, "--queues", NOTES_QUEUE]
    command += ["--concurrency", str(concurrency)]
    log.info("starting a note worker: %d at a time", concurrency)
    return subprocess.Popen(command)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
