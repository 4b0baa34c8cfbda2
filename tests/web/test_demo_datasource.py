"""The datasource protocol end to end through Flask, over the built-in demo estate."""

from __future__ import annotations

import itertools

import pytest

HOUR_RANGE = {"from": "2026-01-01T12:00:00.000Z", "to": "2026-01-01T13:00:00.000Z"}


def _query(client, *targets, **extra):
    body = {"range": HOUR_RANGE, "intervalMs": 15_000, "maxDataPoints": 1_000}
    body["targets"] = [
        {"refId": chr(65 + i), "target": "promql", "payload": payload}
        for i, payload in enumerate(targets)
    ]
    body.update(extra)
    return client.post("/datasource/query", json=body)


def _assert_error(response, status, *fragments):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["message"] == body["error"]["message"]
    assert body["error"]["code"]
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_test_connection_answers_200(client):
    response = client.get("/datasource/")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_metric_kinds_offer_promql_with_its_payload_fields(client):
    kinds = client.post("/datasource/metrics", json={}).get_json()
    promql = next(k for k in kinds if k["value"] == "promql")
    names = [p["name"] for p in promql["payloads"]]
    assert names[0] == "expr"
    assert {"expr", "metric", "matchers", "legend", "format"} <= set(names)


def test_metrics_accepts_an_empty_body(client):
    assert client.post("/datasource/metrics").status_code == 200


def test_payload_options_list_metric_names_then_label_matchers(client):
    metrics = client.post(
        "/datasource/metric-payload-options",
        json={"metric": "promql", "payload": {}, "name": "metric"},
    ).get_json()
    assert {"label": "http_requests_per_second", "value": "http_requests_per_second"} in metrics
    matchers = client.post(
        "/datasource/metric-payload-options",
        json={
            "metric": "promql",
            "payload": {"metric": "http_requests_per_second"},
            "name": "matchers",
        },
    ).get_json()
    assert {"label": 'service="checkout"', "value": 'service="checkout"'} in matchers


def test_query_returns_one_named_series_per_result_on_the_step_grid(client):
    response = _query(client, {"expr": 'http_requests_per_second{service="checkout"}'})
    assert response.status_code == 200
    frames = response.get_json()
    assert frames, "the demo estate has checkout request rates"
    for frame in frames:
        assert frame["target"].startswith("http_requests_per_second{")
        assert 'service="checkout"' in frame["target"]
        times = [t for _, t in frame["datapoints"]]
        assert len(times) == 241  # one hour at 15 s, both ends included
        assert all(b - a == 15_000 for a, b in itertools.pairwise(times))
        assert all(v is not None and v >= 0 for v, _ in frame["datapoints"])


def test_builder_metric_and_matchers_replace_an_empty_expr(client):
    frames = _query(
        client,
        {"expr": "", "metric": "http_requests_per_second", "matchers": ['service="checkout"']},
    ).get_json()
    assert frames
    assert all('service="checkout"' in f["target"] for f in frames)


def test_legend_template_names_series(client):
    frames = _query(
        client, {"expr": "http_requests_per_second", "legend": "{{service}}/{{instance}}"}
    ).get_json()
    assert any(f["target"].startswith("checkout/") for f in frames)


def test_table_format_returns_a_table_with_array_rows(client):
    frames = _query(
        client, {"expr": 'http_requests_per_second{service="checkout"}', "format": "table"}
    ).get_json()
    assert len(frames) == 1
    table = frames[0]
    assert table["type"] == "table"
    assert table["columns"][0] == {"text": "Time", "type": "time"}
    assert table["columns"][-1]["text"] == "Value"
    assert isinstance(table["rows"][0], list)
    assert len(table["rows"][0]) == len(table["columns"])


def test_adhoc_filters_are_applied(client):
    filters = [{"key": "service", "operator": "=", "value": "payments"}]
    frames = _query(client, {"expr": "http_requests_per_second"}, filters=filters).get_json()
    assert frames
    assert all('service="payments"' in f["target"] for f in frames)


def test_grafana_multi_value_filters_select_any_of_their_values(client):
    expr = {"expr": "http_requests_per_second"}
    every = {f["target"] for f in _query(client, expr).get_json()}
    one_of = [{"key": "service", "operator": "=|", "value": "payments",
               "values": ["payments", "checkout"]}]  # fmt: skip
    chosen = {f["target"] for f in _query(client, expr, filters=one_of).get_json()}
    assert chosen
    assert chosen < every
    assert all('service="payments"' in t or 'service="checkout"' in t for t in chosen)
    assert any('service="checkout"' in t for t in chosen)
    none_of = [{**one_of[0], "operator": "!=|"}]
    rest = {f["target"] for f in _query(client, expr, filters=none_of).get_json()}
    assert rest == every - chosen


def test_several_targets_answer_in_order(client):
    frames = _query(
        client,
        {"expr": 'http_requests_per_second{service="checkout"}', "legend": "first"},
        {"expr": 'http_requests_per_second{service="payments"}', "legend": "second"},
    ).get_json()
    names = [f["target"] for f in frames]
    assert names.index("second") > names.index("first")


def test_hidden_targets_are_not_queried(client):
    body = {
        "range": HOUR_RANGE,
        "targets": [{"refId": "A", "target": "promql", "hide": True, "payload": {"expr": "nope{"}}],
    }
    response = client.post("/datasource/query", json=body)
    assert response.status_code == 200
    assert response.get_json() == []


def test_variable_queries(client):
    values = client.post(
        "/datasource/variable",
        json={
            "payload": {"target": "label_values(http_requests_per_second, service)"},
            "range": HOUR_RANGE,
        },
    ).get_json()
    texts = [v["__text"] for v in values]
    assert "checkout" in texts
    assert all(v["__value"] == v["__text"] == v["text"] == v["value"] for v in values)
    metrics = client.post("/datasource/variable", json={"payload": "metrics(^pg_)"}).get_json()
    assert metrics
    assert all(v["text"].startswith("pg_") for v in metrics)


def test_tag_keys_and_values_for_adhoc_filters(client):
    keys = client.post("/datasource/tag-keys", json={}).get_json()
    assert {"type": "string", "text": "service"} in keys
    assert all(k["text"] != "__name__" for k in keys)
    values = client.post("/datasource/tag-values", json={"key": "service"}).get_json()
    assert {"text": "checkout"} in values


def test_legacy_search_lists_metric_names(client):
    names = client.post("/datasource/search", json={"target": "pg_"}).get_json()
    assert names
    assert all("pg_" in n for n in names)


def test_legacy_annotations_turn_nonzero_runs_into_regions(client):
    body = {
        "annotation": {"name": "builds", "query": "app_build_info"},
        "range": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
    }
    events = client.post("/datasource/annotations", json=body).get_json()
    assert events
    for event in events:
        assert event["timeEnd"] >= event["time"]
        assert event["title"] == "builds"
        assert any(tag.startswith("version:") for tag in event["tags"])


# --- errors users can act on -------------------------------------------------------


def test_malformed_json_is_a_400_naming_json(client):
    response = client.post("/datasource/query", data="{not json", content_type="application/json")
    _assert_error(response, 400, "not valid JSON")


def test_missing_targets_is_named(client):
    response = client.post("/datasource/query", json={"range": HOUR_RANGE})
    _assert_error(response, 400, "targets", "Field required")


def test_unknown_metric_kind_is_named(client):
    body = {"range": HOUR_RANGE, "targets": [{"refId": "A", "target": "cpu_magic"}]}
    _assert_error(client.post("/datasource/query", json=body), 400, "cpu_magic")


def test_bad_format_option_is_named(client):
    response = _query(client, {"expr": "up", "format": "heatmap"})
    _assert_error(response, 400, "payload.format")


def test_empty_expression_is_explained(client):
    _assert_error(_query(client, {"expr": "  "}), 400, "payload.expr is empty")


def test_empty_payload_names_both_ways_the_plugin_empties_it(client):
    # The plugin sends {} for a code-mode payload that is not valid JSON or holds null.
    _assert_error(_query(client, {}), 400, "payload.expr is empty", "not valid JSON", "null")


def test_reversed_time_range_is_named(client):
    body = {
        "range": {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        "targets": [{"refId": "A", "target": "promql", "payload": {"expr": "up"}}],
    }
    _assert_error(client.post("/datasource/query", json=body), 400, "range.to")


def test_too_many_points_is_a_4xx_naming_the_limit(client):
    body = {
        "range": {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        "intervalMs": 1000,
        "targets": [{"refId": "A", "target": "promql", "payload": {"expr": "up"}}],
    }
    _assert_error(client.post("/datasource/query", json=body), 422, "MAX_POINTS_PER_SERIES")


def test_oversized_body_is_a_413_naming_the_setting(client):
    response = client.post("/datasource/query", data="x" * 10_000, content_type="application/json")
    _assert_error(response, 413, "PLUGIN_BACKEND_MAX_BODY_BYTES")


def test_unsupported_demo_expression_says_what_the_demo_answers(client):
    response = _query(client, {"expr": "sum(rate(foo[5m]))"})
    _assert_error(response, 400, "PLUGIN_BACKEND_PROMETHEUS_URL")


def test_every_route_answers_with_and_without_trailing_slash_and_never_redirects(demo_app, client):
    # Grafana's proxy hands a redirect to the browser, which calls us without the token.
    checked = 0
    for rule in demo_app.url_map.iter_rules():
        if rule.arguments:
            continue
        base = rule.rule.rstrip("/") or "/"
        method = "GET" if "GET" in (rule.methods or ()) else "POST"
        doubled = "/" + base[1:].replace("/", "//")  # a URL saved with a trailing slash
        for path in {base, base + "/", doubled}:
            response = client.open(path, method=method, json={})
            assert not 300 <= response.status_code < 400, (path, response.headers)
            assert response.status_code != 404, path
            checked += 1
    assert checked >= 30
    assert client.get("/datasource").get_json()["status"] == "ok"


def test_a_datasource_url_without_its_suffix_fails_save_and_test_naming_it(client):
    # The plugin's GET <URL> prefers JSON; a 200 from the landing page would pass
    # Save & test while every panel then fails.
    plugin = {"Accept": "application/json, text/plain, */*"}
    _assert_error(client.get("/", headers=plugin), 404, "/datasource")
    for path in ("/query", "/metrics", "/variable", "/tag-keys", "/metric-payload-options"):
        _assert_error(client.post(path, json={}, headers=plugin), 404, "/datasource")
    assert client.get("/").status_code == 200  # browsers and curl still get the page
    assert "text/html" in client.get("/", headers={"Accept": "text/html"}).content_type
    assert client.get("/metrics").status_code == 200  # Prometheus' scrape is untouched


def test_unknown_path_and_wrong_method_answer_json(client):
    _assert_error(client.get("/datasource/nope"), 404)
    _assert_error(client.get("/datasource/query"), 405)


@pytest.mark.parametrize(
    "path", ["/datasource/metric-payload-options", "/datasource/tag-values", "/datasource/variable"]
)
def test_required_fields_are_named(client, path):
    response = client.post(path, json={})
    assert response.status_code == 400
    assert "Field required" in response.get_json()["message"]


# --- ops ---------------------------------------------------------------------------


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["source"] == "demo"


def test_self_metrics_count_requests_by_endpoint_and_status_class(client):
    _query(client, {"expr": "http_requests_per_second"})
    client.post("/datasource/query", data="{", content_type="application/json")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'plugin_backend_http_requests_total{endpoint="/datasource/query",method="POST",'
        'status_class="2xx"} 1.0' in text
    )
    assert 'endpoint="/datasource/query",method="POST",status_class="4xx"} 1.0' in text
    assert "plugin_backend_http_request_duration_seconds_bucket" in text
    assert 'plugin_backend_build_info{python_version="' in text
