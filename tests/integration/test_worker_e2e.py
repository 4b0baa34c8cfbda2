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

from plugin_backend.store import Store
from testkit.fakegrafana import FakeGrafana
from testkit.promserver import find_free_port
from tests.demo_faults import demo_fault_start

TOKEN = "glsa_e2e"
# The demo estate injects a fault every 4 h 7 min, which a rate-controlled pager (about
# one alarm per three days) learns as normal: these rules page at the band's edge.
RULES = """\
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 5s
    dashboard_uid: anomaly-overview
    panel_id: 2
    rate_control: false
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
    assert incidents, "the demo estate injects a fault every 4 h 7 min: 6 h must hold one"
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
            assert "first check" in annotation["text"].lower()  # the root-cause note

        # its metrics: the per-rule anomaly score and the outbox state
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        # (the killed worker's lease of the rule, taken mid-cycle, expires within 20 s)
        _wait(
            lambda: (
                'plugin_backend_anomaly_score{rule="checkout-latency"}'
                in requests.get(metrics_url, timeout=2).text
            ),
            60,
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


ALERT_RULES = """\
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 30s
    dashboard_uid: from-rule
    panel_id: 9
"""
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grafana-alert-webhook.json"
FAULT_START_S = demo_fault_start("pg_pool_exhaustion")  # 30 min, seed 7


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def api(tmp_path, grafana):
    rules = tmp_path / "alert-rules.yaml"
    rules.write_text(ALERT_RULES)
    port = find_free_port()
    env = {
        **_env(tmp_path, grafana),
        "PLUGIN_BACKEND_PORT": str(port),
        "PLUGIN_BACKEND_RULES": str(rules),
        "PLUGIN_BACKEND_WORKERS": "2",
        "PLUGIN_BACKEND_MULTIPROC_DIR": str(tmp_path / "multiproc"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "api.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin_backend", "serve"], env=env, stdout=handle, stderr=handle
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait(ready, 60, "gunicorn", log)
        yield {"url": url, "env": env, "rules": rules, "log": log}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_grafana_alert_gets_a_note_on_its_panel_and_is_closed_on_resolve(api, grafana):
    import json

    payload = json.loads(FIXTURE.read_text())
    alert = payload["alerts"][0]
    alert["startsAt"] = _iso(FAULT_START_S + 240)  # noticed 4 min after the fault began
    answer = requests.post(api["url"] + "/api/v1/alerts/grafana", json=payload, timeout=10)
    assert answer.status_code == 202
    body = answer.json()
    assert (body["queued"], body["duplicates"]) == (1, 0)
    incident_id = body["alerts"][0]["incident"]
    # queued, not processed in the request: a pending job, no annotation yet
    store = Store(api["env"]["PLUGIN_BACKEND_STORE_URL"])
    assert store.alert_counts() == {"pending": 1, "done": 0, "failed": 0}
    assert not [a for a in grafana.annotations() if f"incident:{incident_id}" in a["tags"]]
    # Grafana repeats notifications: the repeat is recognised, not queued twice
    repeat = requests.post(api["url"] + "/api/v1/alerts/grafana", json=payload, timeout=10)
    assert (repeat.status_code, repeat.json()["duplicates"]) == (202, 1)

    def run_worker_once() -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "plugin_backend",
                "worker",
                "--rules",
                str(api["rules"]),
                "--once",
            ],
            env=api["env"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def alert_annotations() -> list[dict]:
        # the worker's rule cycle may annotate a demo fault of the last hours too: the
        # alert's note is the one carrying its incident's tag
        return [a for a in grafana.annotations() if f"incident:{incident_id}" in a["tags"]]

    run_worker_once()
    (annotation,) = alert_annotations()
    # the alert's own panel (from dashboardURL/panelURL), not the rule's
    assert (annotation["dashboardUID"], annotation["panelId"]) == ("checkout-overview", 2)
    assert f"incident:{incident_id}" in annotation["tags"]
    assert annotation["time"] == round((FAULT_START_S + 240) * 1000)
    assert (
        "pg_connections_in_use{job=&quot;demo&quot;, service=&quot;postgres&quot;}"
        in (annotation["text"])
    )
    assert "ongoing" in annotation["text"]

    # the incidents kind shows it to panels, with its note
    query = {
        "range": {"from": _iso(FAULT_START_S - 3600), "to": _iso(FAULT_START_S + 7200)},
        "intervalMs": 60_000,
        "maxDataPoints": 500,
        "targets": [{"refId": "A", "target": "incidents", "payload": {"status": "open"}}],
    }
    (table,) = requests.post(api["url"] + "/datasource/query", json=query, timeout=10).json()
    columns = [c["text"] for c in table["columns"]]
    (row,) = table["rows"]
    record = dict(zip(columns, row, strict=True))
    assert record["id"] == incident_id
    assert record["cause"] == 'pg_connections_in_use{job="demo", service="postgres"}'
    assert record["link"].endswith(f"/incidents/{incident_id}")

    # resolved: the same annotation gets its end
    alert.update(status="resolved", endsAt=_iso(FAULT_START_S + 1900))
    resolved = requests.post(api["url"] + "/api/v1/alerts/grafana", json=payload, timeout=10)
    assert (resolved.status_code, resolved.json()["queued"]) == (202, 1)
    run_worker_once()
    (annotation,) = alert_annotations()
    assert annotation["timeEnd"] == round((FAULT_START_S + 1900) * 1000)
    assert "resolved" in annotation["text"]


def test_bad_alert_payloads_are_400_with_the_field_named(api):
    answer = requests.post(
        api["url"] + "/api/v1/alerts/grafana", json={"alerts": [{"status": "firing"}]}, timeout=10
    )
    assert answer.status_code == 400
    assert "alerts.0.startsAt" in answer.json()["message"]
    answer = requests.post(
        api["url"] + "/api/v1/alerts/alertmanager",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["message"]
