"""The worker as users run it (a real process) against the fake Grafana: an injected
anomaly becomes exactly one annotation on the right panel, through a Grafana outage
and a kill -9 mid-delivery; its metrics export per-rule anomaly scores; SIGHUP
reloads the rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from plugin_backend.devtools.fakegrafana import FakeGrafana
from plugin_backend.devtools.promserver import find_free_port
from plugin_backend.store import Store

TOKEN = "glsa_e2e"
RULES = """\
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 5s
    dashboard_uid: anomaly-overview
    panel_id: 2
"""
EXTRA_RULE = """\
  - name: frontend-latency
    expr: 'http_request_duration_seconds_p99{service="frontend"}'
    every: 5s
"""


def _env(tmp_path: Path, grafana: FakeGrafana) -> dict[str, str]:
    env = {
        **os.environ,
        "PLUGIN_BACKEND_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "PLUGIN_BACKEND_GRAFANA_URL": grafana.url,
        "PLUGIN_BACKEND_GRAFANA_TOKEN": TOKEN,
        "PLUGIN_BACKEND_GRAFANA_ORG_ID": "1",
        "PLUGIN_BACKEND_GRAFANA_TIMEOUT_S": "1",
        "PLUGIN_BACKEND_DELIVERY_BACKOFF_S": "0.2",
        "PLUGIN_BACKEND_DELIVERY_BACKOFF_MAX_S": "1",
        "PLUGIN_BACKEND_LLM_PROVIDER": "none",
        "PLUGIN_BACKEND_PUBLIC_URL": "http://backend.example:8080",
    }
    env.pop("PLUGIN_BACKEND_PROMETHEUS_URL", None)  # the demo estate
    return env


def _worker(env: dict[str, str], rules: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "plugin_backend", "worker", "--rules", str(rules), *args],
            env=env,
            stdout=handle,
            stderr=handle,
        )


def _wait(condition, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            detail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out waiting for {what}\n{detail}")
        time.sleep(0.1)


@pytest.fixture
def grafana():
    with FakeGrafana(token=TOKEN) as fake:
        yield fake


def test_anomaly_to_exactly_one_annotation_through_outage_and_kill_9(tmp_path, grafana):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = _env(tmp_path, grafana)
    log = tmp_path / "worker.log"
    store = Store(env["PLUGIN_BACKEND_STORE_URL"])

    # 1. Grafana is down: the replayed incidents are stored and their annotations queued.
    grafana.down()
    once = subprocess.run(
        [
            sys.executable,
            "-m",
            "plugin_backend",
            "worker",
            "--rules",
            str(rules),
            "--once",
            "--since",
            "6h",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    incidents = store.list_incidents()
    assert incidents, "the demo estate injects a fault every 4 h: 6 h must hold one"
    assert all(i.dashboard_uid == "anomaly-overview" and i.panel_id == 2 for i in incidents)
    assert store.outbox_counts()["pending"] == len(incidents)
    assert "incidents opened" in once.stdout

    # 2. Grafana is back but stores the first annotation and never answers: kill -9 the
    #    worker while that request is in flight (the outcome of its POST is lost).
    grafana.up()
    grafana.store_then_hang(1, 60.0)
    proc = _worker(env, rules, log=log)
    try:
        _wait(lambda: len(grafana.annotations()) >= 1, 60, "the first POST", log)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    grafana.reset_faults()

    # 3. Restarted, it finds that annotation by its tag and delivers the rest: one each.
    port = find_free_port()
    proc = _worker(env, rules, "--metrics-port", str(port), "--metrics-host", "127.0.0.1", log=log)
    try:
        _wait(lambda: store.outbox_counts()["pending"] == 0, 60, "the outbox to drain", log)
        stored = grafana.annotations()
        per_incident = Counter(t for a in stored for t in a["tags"] if t.startswith("incident:"))
        assert per_incident == Counter({f"incident:{i.id}": 1 for i in incidents})
        assert len(stored) == len(incidents)
        for annotation in stored:
            assert (annotation["dashboardUID"], annotation["panelId"]) == ("anomaly-overview", 2)
            incident_tag = next(t for t in annotation["tags"] if t.startswith("incident:"))
            link = f"http://backend.example:8080/incidents/{incident_tag.split(':', 1)[1]}"
            assert link in annotation["text"]
            assert "likely cause" in annotation["text"].lower()

        # its metrics: the per-rule anomaly score and the outbox state
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        _wait(
            lambda: "checkout-latency" in requests.get(metrics_url, timeout=2).text,
            30,
            "the rule's score",
            log,
        )
        text = requests.get(metrics_url, timeout=2).text
        assert 'plugin_backend_anomaly_score{rule="checkout-latency"}' in text
        assert 'plugin_backend_outbox_rows{state="delivered"} ' + f"{len(incidents)}.0" in text
        assert "plugin_backend_outbox_deliveries_total" in text

        # SIGHUP reloads the rules file; an invalid file is refused and the old rules kept
        rules.write_text(RULES + EXTRA_RULE)
        proc.send_signal(signal.SIGHUP)
        _wait(
            lambda: "plugin_backend_rules_loaded 2.0" in requests.get(metrics_url, timeout=2).text,
            30,
            "the reload",
            log,
        )
        rules.write_text("rules: [\n")
        proc.send_signal(signal.SIGHUP)
        _wait(
            lambda: (
                "plugin_backend_rules_reload_failures_total 1.0"
                in requests.get(metrics_url, timeout=2).text
            ),
            30,
            "the refused reload",
            log,
        )
        assert "plugin_backend_rules_loaded 2.0" in requests.get(metrics_url, timeout=2).text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    # the restarted worker looked the in-doubt annotation up by tag before anything else
    lookups = [r for r in grafana.requests if r.method == "GET" and "tags" in r.query]
    assert lookups
    assert lookups[0].query["tags"][0].startswith("incident:")
