"""Alert webhook payloads: validation, panel and query lookup, idempotency keys."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from plugin_backend.alerts import alert_events, job_key, panel_of, symptom_of
from plugin_backend.errors import RequestError
from plugin_backend.rules import parse_rules
from tests.needs import require_shared

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grafana-alert-webhook.json"
RULES = parse_rules(
    "rules:\n  - name: checkout-latency\n    expr: 'checkout_p99'\n"
    "    dashboard_uid: from-rule\n    panel_id: 7\n"
)


@pytest.fixture
def grafana_payload() -> dict:
    return json.loads(FIXTURE.read_text())


def test_fixture_is_the_shared_contract_example():
    example = require_shared("contracts", "grafana-alert-webhook-example.json")
    assert json.loads(example.read_text()) == json.loads(FIXTURE.read_text())


def test_grafana_payload_gives_panel_from_urls_and_query_from_rule(grafana_payload):
    (event,) = alert_events("grafana", grafana_payload)
    assert event.status == "firing"
    assert event.fingerprint == "8a1e2f7c4b9d0e13"
    assert event.starts_at_s == 1795960920.0  # 2026-11-29T14:02:00Z
    assert event.ends_at_s is None  # Grafana's 0001-01-01 means "not ended"
    assert (event.dashboard_uid, event.panel_id) == ("checkout-overview", 2)
    assert panel_of(event, RULES) == ("checkout-overview", 2)  # the alert's own panel wins
    assert symptom_of(event, RULES) == "checkout_p99"
    assert job_key(event) == "grafana:8a1e2f7c4b9d0e13:1795960920:firing"


def test_resolved_notification_shares_the_incident_not_the_job(grafana_payload):
    resolved = copy.deepcopy(grafana_payload)
    resolved["alerts"][0].update(status="resolved", endsAt="2026-11-29T14:20:00Z")
    (firing,) = alert_events("grafana", grafana_payload)
    (done,) = alert_events("grafana", resolved)
    assert firing.incident_key == done.incident_key
    assert job_key(firing) != job_key(done)
    assert done.ends_at_s == 1795962000.0


def test_query_annotation_when_no_rule_matches(grafana_payload):
    alert = grafana_payload["alerts"][0]
    alert["labels"]["rule"] = "unknown"
    alert["annotations"]["plugin_backend_query"] = "  rate(errors_total[5m]) "
    (event,) = alert_events("grafana", grafana_payload)
    assert symptom_of(event, RULES) == "rate(errors_total[5m])"
    alert["annotations"].pop("plugin_backend_query")
    (event,) = alert_events("grafana", grafana_payload)
    assert symptom_of(event, RULES) is None
    assert symptom_of(event, None) is None


def test_grafana_11_view_panel_form():
    body = {
        "alerts": [
            {
                "status": "firing",
                "startsAt": "2026-11-29T14:02:00Z",
                "panelURL": "http://g/d/abc/name?orgId=1&viewPanel=panel-12",
            }
        ]
    }
    (event,) = alert_events("grafana", body)
    assert (event.dashboard_uid, event.panel_id) == ("abc", 12)


def test_a_panel_id_past_32_bits_is_no_panel():
    # it would overflow the store's integer column on PostgreSQL and fail the job 5 times
    body = {
        "alerts": [
            {
                "status": "firing",
                "startsAt": "2026-11-29T14:02:00Z",
                "panelURL": "http://g/d/abc/name?viewPanel=99999999999999999999",
            }
        ]
    }
    (event,) = alert_events("grafana", body)
    assert (event.dashboard_uid, event.panel_id) == ("abc", None)
    body["alerts"][0]["panelURL"] = "http://g/d/abc/name?viewPanel=2147483647"
    (event,) = alert_events("grafana", body)
    assert event.panel_id == 2147483647


def test_alertmanager_payload_uses_the_rules_panel_and_a_label_fingerprint():
    body = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "X", "rule": "checkout-latency"},
                "annotations": {},
                "startsAt": "2026-11-29T14:02:00.123Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prom/graph",
            }
        ],
    }
    (event,) = alert_events("alertmanager", body)
    assert panel_of(event, RULES) == ("from-rule", 7)
    assert panel_of(event, None) == (None, None)
    assert len(event.fingerprint) == 16
    (again,) = alert_events("alertmanager", body)
    assert again.fingerprint == event.fingerprint


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "alerts: Field required"),
        ({"alerts": "x"}, "alerts: Input should be a valid list"),
        ({"alerts": [{"status": "firing"}]}, "alerts.0.startsAt: Field required"),
        (
            {"alerts": [{"status": "burning", "startsAt": "2026-01-01T00:00:00Z"}]},
            "alerts.0.status",
        ),
        ({"alerts": [{"status": "firing", "startsAt": "yesterday"}]}, "alerts.0.startsAt"),
        ([], "body"),
    ],
)
def test_bad_payloads_name_the_field(body, problem):
    with pytest.raises(RequestError) as info:
        alert_events("grafana", body)
    assert problem in info.value.message
    assert info.value.code == "invalid_alert_payload"
