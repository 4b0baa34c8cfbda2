"""Every datasource endpoint through the Flask test client over a real Prometheus."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.config import load_settings
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app
from testkit.testdata import DATA_END_S, DEPLOY_S, WEIRD_FROM_S

pytestmark = pytest.mark.integration


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def app(prometheus_url):
    settings = load_settings({"PLUGIN_BACKEND_PROMETHEUS_URL": prometheus_url})
    return create_app(settings, telemetry=Telemetry(CollectorRegistry()))


@pytest.fixture
def client(app):
    return app.test_client()


def _query(client, payload, *, start_s, end_s, interval_ms=15_000, max_points=11_000, **extra):
    body = {
        "range": {"from": _iso(start_s), "to": _iso(end_s)},
        "intervalMs": interval_ms,
        "maxDataPoints": max_points,
        "targets": [{"refId": "A", "target": "promql", "payload": payload}],
        **extra,
    }
    return client.post("/datasource/query", json=body)


def test_save_and_test_reaches_prometheus(client):
    response = client.get("/datasource/")
    assert response.status_code == 200
    assert "Prometheus" in response.get_json()["source"]


def test_a_day_of_ten_series_at_15s(client):
    response = _query(
        client, {"expr": "bench_gauge"}, start_s=DATA_END_S - 86_400, end_s=DATA_END_S
    )
    assert response.status_code == 200
    frames = response.get_json()
    assert sorted(f["target"] for f in frames) == sorted(
        f'bench_gauge{{series="{i}"}}' for i in range(10)
    )
    for frame in frames:
        assert len(frame["datapoints"]) == 5_761
        assert frame["datapoints"][0][1] == (DATA_END_S - 86_400) * 1000
        assert frame["datapoints"][-1][1] == DATA_END_S * 1000


def test_ranges_over_11000_steps_are_split_and_joined_without_gaps(client):
    # Two days at 15 s is 11,521 points: more than Prometheus allows in one call.
    start = DATA_END_S - 2 * 86_400
    response = _query(
        client,
        {"expr": 'bench_gauge{series="3"}'},
        start_s=start,
        end_s=DATA_END_S,
        max_points=12_000,
    )
    assert response.status_code == 200, response.get_json()
    (frame,) = response.get_json()
    times = [t for _, t in frame["datapoints"]]
    assert len(times) == 11_521
    assert times == sorted(set(times))
    assert all(b - a == 15_000 for a, b in itertools.pairwise(times))


def test_nan_and_infinities_arrive_as_null(client):
    response = _query(
        client,
        {"expr": "weird_values", "legend": "{{case}}"},
        start_s=WEIRD_FROM_S - 600,
        end_s=WEIRD_FROM_S + 600,
    )
    frames = {f["target"]: f["datapoints"] for f in response.get_json()}
    for case in ("nan", "posinf", "neginf"):
        assert frames[case][0][0] == 1.0
        assert frames[case][-1][0] is None
    assert all(v == 1.0 for v, _ in frames["normal"])


def test_promql_functions_and_aggregations_pass_through(client):
    response = _query(
        client,
        {"expr": "sum by (service) (rate(http_requests_total[5m]))", "legend": "{{service}}"},
        start_s=DATA_END_S - 3600,
        end_s=DATA_END_S,
        interval_ms=60_000,
    )
    frames = {f["target"]: f["datapoints"] for f in response.get_json()}
    assert set(frames) == {"checkout", "payments"}
    assert all(v > 0 for v, _ in frames["checkout"])


def test_adhoc_filters_are_injected_into_every_selector(client):
    expr = 'sum(rate(http_requests_total{code="500"}[5m])) / sum(rate(http_requests_total[5m]))'
    filters = [{"key": "service", "operator": "=", "value": "payments"}]
    only_payments = _query(
        client,
        {"expr": expr},
        start_s=DATA_END_S - 3600,
        end_s=DATA_END_S,
        interval_ms=60_000,
        filters=filters,
    ).get_json()
    everything = _query(
        client, {"expr": expr}, start_s=DATA_END_S - 3600, end_s=DATA_END_S, interval_ms=60_000
    ).get_json()
    assert len(only_payments) == len(everything) == 1
    assert only_payments[0]["datapoints"] != everything[0]["datapoints"]
    ratio = only_payments[0]["datapoints"][-1][0]
    assert 0.005 < ratio < 0.05  # ~2 % errors


def test_table_format(client):
    frames = _query(
        client,
        {"expr": "node_cpu_usage_ratio", "format": "table"},
        start_s=DATA_END_S - 300,
        end_s=DATA_END_S,
    ).get_json()
    (table,) = frames
    header = [c["text"] for c in table["columns"]]
    assert header == ["Time", "__name__", "job", "node", "Value"]
    assert len(table["rows"]) == 2 * 21


def test_bad_promql_is_a_400_with_prometheus_message(client):
    response = _query(
        client, {"expr": "rate(http_requests_total[5m"}, start_s=DATA_END_S - 3600, end_s=DATA_END_S
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"]["code"] == "invalid_query"
    assert "parse error" in body["message"]


def test_execution_errors_are_422_with_prometheus_message(client):
    # Two series on each side with identical label sets after ignoring: many-to-many.
    expr = "http_requests_total + ignoring(code, instance) http_requests_total"
    response = _query(client, {"expr": expr}, start_s=DATA_END_S - 600, end_s=DATA_END_S)
    assert response.status_code == 422, response.get_json()
    assert "many-to-many" in response.get_json()["message"]


def test_payload_options_come_from_prometheus(client):
    metrics = client.post(
        "/datasource/metric-payload-options",
        json={"metric": "promql", "payload": {}, "name": "metric"},
    ).get_json()
    assert {"label": "bench_gauge", "value": "bench_gauge"} in metrics
    matchers = client.post(
        "/datasource/metric-payload-options",
        json={
            "metric": "promql",
            "payload": {"metric": "node_cpu_usage_ratio"},
            "name": "matchers",
        },
    ).get_json()
    assert {m["value"] for m in matchers} == {'job="node"', 'node="node-a"', 'node="node-b"'}


def test_variables_respect_the_time_range(client):
    def versions(start, end):
        body = {
            "payload": {"target": "label_values(app_build_info, version)"},
            "range": {"from": _iso(start), "to": _iso(end)},
        }
        return [v["text"] for v in client.post("/datasource/variable", json=body).get_json()]

    assert versions(DEPLOY_S - 7200, DEPLOY_S - 3600) == ["v1"]
    assert versions(DEPLOY_S + 3600, DEPLOY_S + 7200) == ["v2"]
    assert versions(DEPLOY_S - 3600, DEPLOY_S + 3600) == ["v1", "v2"]


def test_tag_keys_and_values(client):
    keys = [k["text"] for k in client.post("/datasource/tag-keys", json={}).get_json()]
    assert {"service", "node", "code", "series"} <= set(keys)
    values = [
        v["text"] for v in client.post("/datasource/tag-values", json={"key": "node"}).get_json()
    ]
    assert values == ["node-a", "node-b"]


def test_legacy_search_and_annotations(client):
    assert "bench_gauge" in client.post("/datasource/search", json={"target": "bench"}).get_json()
    body = {
        "annotation": {"name": "deploys", "query": 'app_build_info{version="v2"}'},
        "range": {"from": _iso(DEPLOY_S - 3600), "to": _iso(DEPLOY_S + 3600)},
    }
    (event,) = client.post("/datasource/annotations", json=body).get_json()
    assert abs(event["time"] - DEPLOY_S * 1000) <= 60_000
    assert "version:v2" in event["tags"]


def test_source_metrics_record_prometheus_calls(app, client):
    _query(client, {"expr": "up{"}, start_s=DATA_END_S - 60, end_s=DATA_END_S)
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'plugin_backend_source_request_duration_seconds_count{operation="query_range",source="prometheus"}'
        in text
    )
    assert (
        'plugin_backend_source_request_failures_total{code="invalid_query",operation="query_range",source="prometheus"}'
        in text
    )


def test_unreachable_prometheus_is_a_502_and_readyz_says_so():
    settings = load_settings(
        {
            "PLUGIN_BACKEND_PROMETHEUS_URL": "http://127.0.0.1:9",
            "PLUGIN_BACKEND_PROMETHEUS_RETRIES": "0",
        }
    )
    client = create_app(settings, telemetry=Telemetry(CollectorRegistry())).test_client()
    response = _query(client, {"expr": "up"}, start_s=DATA_END_S - 600, end_s=DATA_END_S)
    assert response.status_code == 502
    assert "127.0.0.1:9" in response.get_json()["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "unavailable"
    assert client.get("/healthz").status_code == 200
    save_and_test = client.get("/datasource/")
    assert save_and_test.status_code == 502
    assert save_and_test.get_json()["error"]["code"] == "prometheus_unavailable"


def test_paused_prometheus_times_out_as_504_then_recovers(prometheus):
    settings = load_settings(
        {
            "PLUGIN_BACKEND_PROMETHEUS_URL": prometheus.url,
            "PLUGIN_BACKEND_PROMETHEUS_TIMEOUT_S": "0.5",
            "PLUGIN_BACKEND_READINESS_TIMEOUT_S": "0.5",
        }
    )
    client = create_app(settings, telemetry=Telemetry(CollectorRegistry())).test_client()
    prometheus.pause()
    try:
        response = _query(
            client, {"expr": "bench_gauge"}, start_s=DATA_END_S - 600, end_s=DATA_END_S
        )
        assert response.status_code == 504
        assert response.get_json()["error"]["code"] == "prometheus_timeout"
        assert client.get("/readyz").status_code == 503
    finally:
        prometheus.resume()
    assert client.get("/readyz").status_code == 200
    response = _query(client, {"expr": "bench_gauge"}, start_s=DATA_END_S - 600, end_s=DATA_END_S)
    assert response.status_code == 200
