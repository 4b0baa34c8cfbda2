"""Queued alert notifications -> incidents with notes (worker side, real SQLite store)."""

from __future__ import annotations

import pytest

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.alert_handling import AlertHandler
from plugin_backend.alerts import alert_events, job_key
from plugin_backend.detection import DetectionService
from plugin_backend.explain import ExplainService
from plugin_backend.rules import parse_rules
from plugin_backend.store import Store
from plugin_backend.watch import RuleCycle
from plugin_backend.worker import Worker
from tests.demo_faults import demo_fault_start

FAULT_START_S = demo_fault_start("pg_pool_exhaustion")  # 30 min, seed 7
# Band-edge alarms, as the demo's rules (deploy/demo-rules.yaml): its faults recur
# several times a day, which a pager promising one alarm per three days learns as normal.
RULES = parse_rules(
    "rules:\n  - name: checkout-latency\n"
    "    expr: 'http_request_duration_seconds_p99{service=\"checkout\"}'\n"
    "    dashboard_uid: from-rule\n    panel_id: 9\n    rate_control: false\n"
)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _alertmanager(status: str, **extra: object) -> dict:
    alert = {
        "status": status,
        "labels": {"alertname": "CheckoutSlow", "rule": "checkout-latency", "service": "checkout"},
        "annotations": {"summary": "checkout p99 high"},
        "startsAt": _iso(FAULT_START_S + 240),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "am-1",
        **extra,
    }
    return {"version": "4", "status": status, "alerts": [alert]}


@pytest.fixture
def worker(tmp_path) -> Worker:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    source = DemoSource(seed=7)
    explain = ExplainService(source)
    return Worker(
        store=store,
        rules=RULES,
        rules_path=None,
        cycle=RuleCycle(DetectionService(source), explain),
        alerts=AlertHandler(explain, lambda: RULES, link_base="http://pb"),
        deliverer=None,
        clock=lambda: FAULT_START_S + 600,
    )


def _enqueue(worker: Worker, body: dict, source: str = "alertmanager") -> None:
    for event, raw in zip(alert_events(source, body), body["alerts"], strict=True):
        worker.store.enqueue_alert(job_key(event), source, raw, now_s=FAULT_START_S + 300)


def test_alertmanager_alert_annotates_the_rules_panel_and_closes_on_resolve(worker):
    _enqueue(worker, _alertmanager("firing"))
    assert worker.process_alerts() == 1
    (incident,) = worker.store.list_incidents()
    assert incident.origin == "alertmanager"
    assert (incident.dashboard_uid, incident.panel_id) == ("from-rule", 9)
    assert incident.rule == "checkout-latency"
    assert incident.cause == 'pg_connections_in_use{job="demo", service="postgres"}'
    assert incident.status == "open"
    (row,) = worker.store.outbox_rows()
    assert (row.dashboard_uid, row.panel_id, row.version) == ("from-rule", 9, 1)
    # the same firing notification again changes nothing
    _enqueue(worker, _alertmanager("firing", fingerprint="am-1"))
    assert worker.process_alerts() == 0
    _enqueue(worker, _alertmanager("resolved", endsAt=_iso(FAULT_START_S + 1800)))
    assert worker.process_alerts() == 1
    (closed,) = worker.store.list_incidents()
    assert (closed.id, closed.status, closed.end_s) == (incident.id, "closed", FAULT_START_S + 1800)
    assert worker.store.outbox_rows()[0].version == 2
    assert worker.store.alert_counts() == {"pending": 0, "done": 2, "failed": 0}


def test_an_alert_without_rule_or_query_is_stored_with_a_note_saying_what_to_add(worker):
    body = _alertmanager("firing")
    body["alerts"][0]["labels"] = {"alertname": "Mystery"}
    _enqueue(worker, body)
    assert worker.process_alerts() == 1
    (incident,) = worker.store.list_incidents()
    assert "plugin_backend_query" in incident.note
    assert incident.dashboard_uid is None
    assert worker.store.outbox_rows() == []  # nowhere to annotate: stored only


def test_a_failing_alert_is_retried_then_marked_failed(worker):
    _enqueue(worker, _alertmanager("firing"))
    worker.store.enqueue_alert(
        "alertmanager:x:1:firing", "alertmanager", {"status": "firing"}, now_s=0.0
    )  # invalid payload in the queue
    assert worker.process_alerts() == 1  # the good one; the bad one is retried later
    assert worker.store.alert_counts()["pending"] == 1
    for _ in range(5):
        worker.process_alerts()
    assert worker.store.alert_counts() == {"pending": 0, "done": 1, "failed": 1}


def test_root_cause_looks_back_from_the_symptoms_onset_unless_the_rule_sets_a_window():
    """The alert path and the worker's rule path leave the window to the symptom's own
    onset (``explain(..., window_s=None)``) unless the rule sets ``explain_window``."""
    asked: list[float | None] = []

    class Spy(ExplainService):
        def explain(self, query, at_s, window_s=None):
            asked.append(window_s)
            return super().explain(query, at_s, window_s)

    source = DemoSource(seed=7)
    event = next(iter(alert_events("alertmanager", _alertmanager("firing"))))
    capped = parse_rules(
        "rules:\n  - name: checkout-latency\n"
        "    expr: 'http_request_duration_seconds_p99{service=\"checkout\"}'\n"
        "    explain_window: 2h\n"
    )
    for rules, expected in ((RULES, None), (capped, 7200.0)):
        handler = AlertHandler(Spy(source), lambda rules=rules: rules, link_base=None)
        incident, _ = handler.handle(event, None, FAULT_START_S + 600) or (None, None)
        assert incident is not None
        assert asked[-1] == expected
        assert incident.cause == 'pg_connections_in_use{job="demo", service="postgres"}'
    rule = RULES.get("checkout-latency")
    assert rule is not None
    cycle = RuleCycle(DetectionService(source), Spy(source))
    before = len(asked)
    result = cycle.run(rule, FAULT_START_S + 900, [], lookback_s=7200)
    assert result.changed
    assert len(asked) > before
    assert asked[before:] == [None] * (len(asked) - before)
