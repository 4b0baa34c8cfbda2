"""POST /api/v1/explain over the demo estate, whose incidents have known root causes."""

from __future__ import annotations

import pytest

from plugin_backend.adapters.demo import incidents_between

INCIDENTS = incidents_between(1_767_225_600, 1_767_225_600 + 86_400, seed=7)


@pytest.mark.parametrize("incident", INCIDENTS[:4], ids=lambda i: i.fault)
def test_the_true_root_cause_ranks_first(client, incident):
    body = {"query": incident.symptom_series[0], "at": incident.start_s + 600, "window": "30m"}
    response = client.post("/api/v1/explain", json=body)
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert report["symptom"]["series"] == incident.symptom_series[0]
    top = report["causes"][0]
    assert top["series"] == incident.root_cause_series
    assert top["lead_s"] > 0
    assert {"metric", "labels", "score", "onset", "evidence"} <= set(top)
    assert incident.root_cause_series in report["summary"]
    assert report["llm"]["fallback"] is True


def test_iso_times_are_accepted(client):
    incident = INCIDENTS[1]
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(incident.start_s + 600, UTC).isoformat()
    body = {"query": incident.symptom_series[0], "at": at}
    assert client.post("/api/v1/explain", json=body).status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"at": 1_767_240_000}, "query"),
        ({"query": "up", "at": "yesterday"}, "ISO-8601"),
        ({"query": "up", "at": 1_767_240_000, "window": "soon"}, "window"),
        (
            {"query": "up", "at": 1_767_240_000, "prometheus_url": "http://evil:9090"},
            "prometheus_url",
        ),
    ],
)
def test_bad_requests_name_the_problem(client, body, fragment):
    response = client.post("/api/v1/explain", json=body)
    assert response.status_code == 400
    assert fragment in response.get_json()["message"]


def test_a_query_without_data_is_a_400(client):
    body = {"query": 'http_requests_per_second{service="nope"}', "at": 1_767_240_000}
    response = client.post("/api/v1/explain", json=body)
    assert response.status_code == 400
    assert "returned no data" in response.get_json()["message"]
