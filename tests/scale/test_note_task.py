"""The LLM note is a task of its own, on the ``notes`` queue, in a worker of its own.

A rule tick opens the incident at once with the template note (marked pending) and
its annotation; the note task asks the LLM (the project's own llm-serve HTTP server
around a scripted model that answers only when the test lets it), and while it
waits, the rule's next ticks still run. Then the incident and its annotation carry
the LLM's note. An alert webhook's incident takes the same path. A note task lost
with its worker (``kill -9`` while the LLM writes) is sent again by the note sweep,
and the note is written once. Real redis-server, real Celery workers (the note
worker is ``plugin-backend worker --engine celery --queues notes`` as a process),
SQLite and a real PostgreSQL store."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from plugin_backend.alerts import alert_events, job_key
from plugin_backend.config import Settings, load_settings
from plugin_backend.llm.port import Completion, Message
from plugin_backend.llm_server import make_server
from plugin_backend.store import Store
from plugin_backend.watch import needs_note
from tests.demo_faults import demo_fault_start
from tests.needs import REPO, require_installed
from tests.scale.cluster import Cluster

try:
    import redis
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from plugin_backend.scale.tasks import TaskRuntime, create_celery
except ImportError:  # pragma: no cover - CI installs the scale extra
    redis = None  # type: ignore[assignment]

pytestmark = pytest.mark.processes

# 21:00 UTC on the replayed day, 47 min after the demo estate's pg_pool_exhaustion
# (demo_fault_start: 19:43 UTC, 30 min) ended: a tick between 20:13 and 22:43 holds the
# whole fault in its 3 h lookback, so the rule's cycle opens its incident.
AFTER_FAULT_S = 1764018000.0
RULE = "checkout-latency"
ALERT_FAULT_S = demo_fault_start("pg_pool_exhaustion")  # postgres -> checkout
# Band-edge alarms, as the demo's rules (deploy/demo-rules.yaml): its faults recur
# several times a day, which a pager promising one alarm per three days learns as normal.
RULES_YAML = (
    f"rules:\n  - name: {RULE}\n"
    "    expr: 'http_request_duration_seconds_p99{service=\"checkout\"}'\n"
    "    every: 15s\n    detector: holt_winters\n"
    "    dashboard_uid: d\n    panel_id: 2\n    rate_control: false\n"
)
# One sentence from the top cause (postgres) to the symptom (checkout), as note_v4 asks.
LLM_NOTE = "Postgres connections piled up, so checkout requests queued and slowed down."


class GatedModel:
    """A chat model that answers a valid note, but only once ``release`` is set."""

    model = "scripted"
    max_new_tokens = 200

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
        self.calls += 1
        self.asked.set()
        self.release.wait(120)
        return Completion(json.dumps({"cause": 1, "note": LLM_NOTE}), 10, 10)


@pytest.fixture
def llm() -> Iterator[tuple[str, GatedModel]]:
    model = GatedModel()
    server = make_server(model, "127.0.0.1", 0, timeout_s=150)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}", model
    finally:
        model.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(
    store_url: str, redis_url: str, llm: tuple[str, GatedModel], tmp_path: Path
) -> dict[str, str]:
    if redis is None:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    return {
        "PLUGIN_BACKEND_BROKER_URL": redis_url,
        "PLUGIN_BACKEND_STORE_URL": store_url,
        "PLUGIN_BACKEND_RULES": str(rules),
        "PLUGIN_BACKEND_WARM_DETECTORS": "none",
        "PLUGIN_BACKEND_LLM_PROVIDER": "local",
        "PLUGIN_BACKEND_LLM_URL": llm[0],
        "PLUGIN_BACKEND_LLM_TIMEOUT_S": "150",
    }


@pytest.fixture
def notes(env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    """``plugin-backend worker --engine celery --queues notes``: the note worker, a
    process in a session of its own (so that ``kill -9`` takes its Celery parent and
    pool at once)."""
    cluster = Cluster(env, tmp_path)
    cluster.start("--queues", "notes")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def app(env: dict[str, str]) -> Celery:
    """The Celery app of ``env``, as ``plugin-backend worker --engine celery`` makes it."""
    return create_celery(load_settings(env), schedule=False)


@contextmanager
def _scoring_worker(app: Celery) -> Iterator[object]:
    """A worker for the rule ticks and deliveries, in this process (notes go elsewhere)."""
    with start_worker(
        app,
        pool="solo",
        perform_ping_check=False,
        shutdown_timeout=60,
        queues=["rules", "delivery"],
    ) as worker:
        yield worker


def _wait(what: str, check: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def test_a_slow_llm_note_runs_beside_the_rule_ticks_then_upgrades_the_annotation(
    notes: Cluster, app: Celery, store: Store, llm: tuple[str, GatedModel], tmp_path: Path
) -> None:
    _, model = llm
    ticks: list[dict[str, Any]] = []

    def record(sender: Any = None, retval: Any = None, **_: Any) -> None:
        if sender.name == "plugin_backend.rule_tick":
            ticks.append(retval)

    task_postrun.connect(record, weak=False)
    try:
        with _scoring_worker(app):
            tick = AFTER_FAULT_S + 1200
            app.send_task("plugin_backend.rule_tick", args=[RULE, tick])
            first = _wait("the first tick", lambda: ticks[:1])[0]
            assert first["outcome"] == "ok"
            assert first["opened"]
            opened = [store.get_incident(i) for i in first["opened"]]
            assert all(i is not None and needs_note(i) for i in opened)
            template = {i.id: i.note for i in opened if i is not None}
            # the note worker took the task and waits for the model ...
            assert model.asked.wait(120), notes.log_tails()
            # ... while the rule's next ticks run, and leave the pending note alone
            for n in range(1, 3):
                app.send_task("plugin_backend.rule_tick", args=[RULE, tick + 15 * n])
            later = _wait("two more ticks", lambda: len(ticks) >= 3 and ticks)
            assert [t["outcome"] for t in later] == ["ok", "ok", "ok"]
            assert all(store.get_incident(i).note == note for i, note in template.items())  # type: ignore[union-attr]
            model.release.set()

            def upgraded() -> bool:
                found = [store.get_incident(i) for i in template]
                return all(i is not None and not needs_note(i) for i in found)

            _wait("the LLM's note", upgraded)
            for incident_id in template:
                incident = store.get_incident(incident_id)
                assert incident is not None
                assert incident.note.startswith(LLM_NOTE), str((incident.report or {}).get("llm"))
                assert incident.report is not None
                assert incident.report["llm"]["fallback"] is False
                assert incident.report["summary"] == incident.note
            rows = {r.incident_id: r for r in store.outbox_rows()}
            for incident_id in template:
                # the annotation was queued again with the new note (a new version)
                assert LLM_NOTE in rows[incident_id].text
                assert rows[incident_id].version >= 2
    finally:
        task_postrun.disconnect(record)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _grafana_webhook(status: str, *, ends_s: float | None = None) -> dict[str, Any]:
    """The contract's Grafana webhook (tests/fixtures), timed on the demo estate's fault."""
    body = json.loads((REPO / "tests" / "fixtures" / "grafana-alert-webhook.json").read_text())
    alert = body["alerts"][0]
    alert["status"] = body["status"] = status
    alert["startsAt"] = _iso(ALERT_FAULT_S + 240)
    if ends_s is not None:
        alert["endsAt"] = _iso(ends_s)
    return body


def _enqueue(store: Store, body: dict[str, Any]) -> None:
    for event, raw in zip(alert_events("grafana", body), body["alerts"], strict=True):
        assert store.enqueue_alert(job_key(event), "grafana", raw, now_s=time.time())


def test_an_alerts_llm_note_goes_through_the_notes_queue(
    notes: Cluster, app: Celery, store: Store, llm: tuple[str, GatedModel], tmp_path: Path
) -> None:
    """The alerts task saves the incident with the template note and its annotation at
    once; the note worker writes the LLM's later, under the alert's lease, into the
    incident as it is then (here: already closed by the resolved notification)."""
    _, model = llm
    try:
        with _scoring_worker(app):
            _enqueue(store, _grafana_webhook("firing"))
            app.send_task("plugin_backend.alerts")
            (incident,) = _wait("the alert's incident", store.list_incidents)
            assert incident.origin == "grafana"
            assert (incident.dashboard_uid, incident.panel_id) == ("checkout-overview", 2)
            assert needs_note(incident)  # the template, while the LLM is asked apart
            assert incident.cause == 'pg_connections_in_use{job="demo", service="postgres"}'
            (row,) = store.outbox_rows()
            assert row.version == 1
            assert incident.note[:60] in row.text
            assert model.asked.wait(120), notes.log_tails()
            # the resolved notification is handled while the note is being written
            _enqueue(store, _grafana_webhook("resolved", ends_s=ALERT_FAULT_S + 1800))
            app.send_task("plugin_backend.alerts")
            _wait(
                "the resolved notification",
                lambda: store.get_incident(incident.id).status == "closed",  # type: ignore[union-attr]
            )
            model.release.set()
            _wait("the LLM's note", lambda: not needs_note(store.get_incident(incident.id)))  # type: ignore[arg-type]
            final = store.get_incident(incident.id)
            assert final is not None
            assert final.note.startswith(LLM_NOTE)
            assert (final.status, final.end_s) == ("closed", ALERT_FAULT_S + 1800)
            assert final.report is not None
            assert final.report["llm"]["fallback"] is False
            (row,) = store.outbox_rows()
            assert LLM_NOTE in row.text
            assert row.version == 3  # opened, closed, then the note
            assert model.calls == 1
            assert store.alert_counts() == {"pending": 0, "done": 2, "failed": 0}
    finally:
        model.release.set()


def test_a_note_lost_with_its_worker_is_sent_again_by_the_sweep_and_written_once(
    notes: Cluster, app: Celery, store: Store, llm: tuple[str, GatedModel], tmp_path: Path
) -> None:
    _, model = llm
    sweeps: list[list[str]] = []

    def record(sender: Any = None, retval: Any = None, **_: Any) -> None:
        if sender.name == "plugin_backend.sweep_notes":
            sweeps.append(retval)

    task_postrun.connect(record, weak=False)
    try:
        with _scoring_worker(app):
            app.send_task("plugin_backend.rule_tick", args=[RULE, AFTER_FAULT_S + 1200])
            (incident,) = _wait("the incident", store.list_incidents)
            assert model.asked.wait(120), notes.log_tails()
            notes.kill(0)  # while the LLM writes the note
            notes.start("--queues", "notes")  # a spare
            model.release.set()  # the killed worker's request ends; nobody reads it
            time.sleep(3.0)
            current = store.get_incident(incident.id)
            assert current is not None
            assert needs_note(current)
            assert model.calls == 1
            # the sweep sends the note again (it is pending for more than 2 s)
            app.send_task("plugin_backend.sweep_notes", args=[2.0])
            _wait("a sweep", lambda: sweeps)
            assert sweeps == [[incident.id]]
            _wait("the LLM's note", lambda: not needs_note(store.get_incident(incident.id)))  # type: ignore[arg-type]
            written = store.get_incident(incident.id)
            assert written is not None
            assert written.note.startswith(LLM_NOTE)
            (row,) = store.outbox_rows()
            assert LLM_NOTE in row.text
            assert row.version == 2
            # nothing is pending any more: later sweeps send nothing
            time.sleep(2.5)
            app.send_task("plugin_backend.sweep_notes", args=[2.0])
            _wait("a second sweep", lambda: len(sweeps) >= 2)
            assert sweeps[1] == []
            assert model.calls == 2
    finally:
        task_postrun.disconnect(record)
        model.release.set()


def test_a_pending_note_is_sent_again_once_per_period_by_any_number_of_sweeps(
    env: dict[str, str],
) -> None:
    """The sweep itself, as two workers run it: only notes pending past the age, each
    sent by one of them; a note already written is never sent."""
    settings: Settings = load_settings(env)
    sent: list[tuple[int, str]] = []
    runtimes = [
        TaskRuntime.from_settings(settings, lambda: None, lambda i, n=n: sent.append((n, i)))
        for n in range(2)
    ]
    store = runtimes[0].worker.store
    now = time.time()
    base = runtimes[0].worker.run_rule(runtimes[0].worker.rules.rules[0], at_s=AFTER_FAULT_S + 1200)
    assert base.result is not None
    assert base.result.opened
    (opened, *_) = [i for i, _ in base.result.changed if i.id in base.result.opened]
    assert needs_note(opened)
    fresh = store.get_incident(opened.id)
    assert fresh is not None
    assert [r.sweep_notes(600.0) for r in runtimes] == [[], []]  # not old enough

    old_id = "0" * 32
    old = dataclasses.replace(fresh, id=old_id, key="old-incident")
    store.save_incident(old, None, now_s=now - 700.0)
    written = dataclasses.replace(
        fresh, id="1" * 32, key="written-incident", report={"llm": {"pending": False}}
    )
    store.save_incident(written, None, now_s=now - 700.0)
    found = [r.sweep_notes(600.0) for r in runtimes]
    assert sorted(found, key=len) == [[], [old_id]]
    assert [i for _, i in sent] == [old_id]
    for runtime in runtimes:
        runtime.worker.store.close()
