"""The LLM note is a task of its own, on the ``notes`` queue, in a worker of its own.

A rule tick opens the incident at once with the template note (marked pending) and
its annotation; the note task asks the LLM (the project's own llm-serve HTTP server
around a scripted model that answers only when the test lets it), and while it
waits, the rule's next ticks still run. Then the incident and its annotation carry
the LLM's note. Real redis-server, real Celery workers (the note worker is
``plugin-backend worker --engine celery --queues notes`` as a process), SQLite and
a real PostgreSQL store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from plugin_backend.config import Settings, load_settings
from plugin_backend.llm.port import Completion, Message
from plugin_backend.llm_server import make_server
from plugin_backend.store import Store
from plugin_backend.watch import needs_note
from tests.needs import REPO, require_installed

try:
    import redis
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from plugin_backend.scale.tasks import create_celery
except ImportError:  # pragma: no cover - CI installs the scale extra
    redis = None  # type: ignore[assignment]

pytestmark = pytest.mark.processes

FAULT_START_S = 1764018000.0  # the demo estate's pg_pool_exhaustion (30 min)
RULE = "checkout-latency"
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

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
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


def _wait(what: str, check: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def test_a_slow_llm_note_runs_beside_the_rule_ticks_then_upgrades_the_annotation(
    env: dict[str, str], llm: tuple[str, GatedModel], tmp_path: Path
) -> None:
    _, model = llm
    settings: Settings = load_settings(env)
    store = Store(settings.store_url)
    store.migrate()
    app = create_celery(settings, schedule=False)
    ticks: list[dict[str, Any]] = []

    def record(sender: Any = None, retval: Any = None, **_: Any) -> None:
        if sender.name == "plugin_backend.rule_tick":
            ticks.append(retval)

    note_log = tmp_path / "notes.log"
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_BACKEND_")}
    process_env.update(env, PYTHONPATH=str(REPO), PLUGIN_BACKEND_LOG_FORMAT="text")
    command = [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery"]
    with note_log.open("w") as out:
        notes = subprocess.Popen(
            [*command, "--queues", "notes", "--concurrency", "1"],
            env=process_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    task_postrun.connect(record, weak=False)
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            shutdown_timeout=60,
            queues=["rules", "delivery"],
        ):
            tick = FAULT_START_S + 1200
            app.send_task("plugin_backend.rule_tick", args=[RULE, tick])
            first = _wait("the first tick", lambda: ticks[:1])[0]
            assert first["outcome"] == "ok"
            assert first["opened"]
            opened = [store.get_incident(i) for i in first["opened"]]
            assert all(i is not None and needs_note(i) for i in opened)
            template = {i.id: i.note for i in opened if i is not None}
            # the note worker took the task and waits for the model ...
            assert model.asked.wait(120), note_log.read_text()[-3000:]
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
        notes.terminate()
        notes.wait(timeout=60)
        store.close()
