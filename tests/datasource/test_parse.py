import pytest

from plugin_backend.datasource.parse import QueryLimits, parse_panel_query
from plugin_backend.errors import InvalidTarget, InvalidTimeRange, LimitExceeded, RequestError

LIMITS = QueryLimits(max_targets=3, max_points_per_series=11_000, max_promql_length=100)


def _body(**overrides):
    body = {
        "range": {"from": "2026-01-01T00:00:00.000Z", "to": "2026-01-01T01:00:00.000Z"},
        "intervalMs": 15_000,
        "maxDataPoints": 1_000,
        "targets": [{"refId": "A", "target": "promql", "payload": {"expr": "up"}}],
    }
    body.update(overrides)
    return body


def test_a_grafana_query_becomes_range_step_and_targets():
    query = parse_panel_query(_body(), LIMITS)
    assert query.step_s == 15.0
    assert query.time_range.start_s == 1_767_225_600.0
    assert query.time_range.duration_s == 3600.0
    assert [(t.ref_id, t.kind, t.options.expr) for t in query.targets] == [("A", "promql", "up")]


def test_unknown_keys_are_ignored():
    body = _body(panelId=7, scopedVars={"__interval": {"text": "15s"}}, somethingNew=[1])
    body["targets"][0]["datasource"] = {"uid": "x"}
    assert len(parse_panel_query(body, LIMITS).targets) == 1


def test_hidden_and_empty_targets_are_dropped():
    body = _body(
        targets=[
            {"refId": "A", "target": "promql", "payload": {"expr": "up"}, "hide": True},
            {"refId": "B"},
            {"refId": "C", "target": "  "},
            {"refId": "D", "target": "promql", "payload": {"expr": "up"}},
        ]
    )
    assert [t.ref_id for t in parse_panel_query(body, LIMITS).targets] == ["D"]


def test_payload_sent_as_json_string_is_decoded():
    body = _body(targets=[{"refId": "A", "target": "promql", "payload": '{"expr": "up"}'}])
    assert parse_panel_query(body, LIMITS).targets[0].options.expr == "up"


def test_payload_that_is_not_json_names_the_target():
    body = _body(targets=[{"refId": "A", "target": "promql", "payload": "{expr"}])
    with pytest.raises(InvalidTarget, match=r"targets\[0\]\.payload is not valid JSON"):
        parse_panel_query(body, LIMITS)


def test_missing_range_is_named():
    body = _body()
    del body["range"]
    with pytest.raises(RequestError, match="range: Field required"):
        parse_panel_query(body, LIMITS)


def test_unparsable_time_is_named():
    with pytest.raises(RequestError, match=r"range\.from"):
        parse_panel_query(_body(range={"from": "yesterday", "to": "now"}), LIMITS)


def test_reversed_range_is_refused():
    reversed_range = {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    with pytest.raises(InvalidTimeRange, match="must be after"):
        parse_panel_query(_body(range=reversed_range), LIMITS)


def test_targets_must_be_a_list():
    with pytest.raises(RequestError, match="targets"):
        parse_panel_query(_body(targets={"refId": "A"}), LIMITS)


def test_body_must_be_an_object():
    with pytest.raises(RequestError, match="must be a JSON object, got an array"):
        parse_panel_query([1, 2], LIMITS)


def test_too_many_targets_is_a_named_limit():
    targets = [{"refId": str(i), "target": "promql", "payload": {"expr": "up"}} for i in range(4)]
    with pytest.raises(LimitExceeded, match="PLUGIN_BACKEND_MAX_TARGETS"):
        parse_panel_query(_body(targets=targets), LIMITS)


def test_too_long_promql_is_a_named_limit():
    body = _body(targets=[{"refId": "A", "target": "promql", "payload": {"expr": "x" * 101}}])
    with pytest.raises(LimitExceeded, match="PLUGIN_BACKEND_MAX_PROMQL_LENGTH"):
        parse_panel_query(body, LIMITS)


def test_adhoc_filters_from_either_key_become_matchers():
    filters = [{"key": "service", "operator": "=", "value": "checkout"}]
    for key in ("filters", "adhocFilters"):
        query = parse_panel_query(_body(**{key: filters}), LIMITS)
        assert [str(m) for m in query.filters] == ['service="checkout"']


def test_epoch_millisecond_ranges_are_accepted():
    body = _body(range={"from": 1_767_225_600_000, "to": 1_767_229_200_000})
    assert parse_panel_query(body, LIMITS).time_range.duration_s == 3600.0
