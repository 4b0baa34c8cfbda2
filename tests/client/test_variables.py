"""Template variables and ad-hoc filters through the plugin: metricFindQuery, the
CustomVariableSupport Grafana 11 calls, getTagKeys/getTagValues, and the filters Grafana
adds to every query, including its multi-value operators ``=|`` and ``!=|``.

Issue 17, finding 4: ``=|`` / ``!=|`` become ``=~"a|b"`` / ``!~"a|b"``, values regex-escaped.
"""

from __future__ import annotations

import re

import pytest

from tests.client.support import (
    dashboard,
    ds,
    json_targets,
    json_variables,
    query_step,
    redirects,
    time_range,
    variables,
)

pytestmark = pytest.mark.client

OVERVIEW = dashboard("anomaly-overview.json")
OVERVIEW_SERVICE = "checkout"


def _variable(name):
    return next(v for v in json_variables(OVERVIEW) if v["name"] == name)


def _texts(answer):
    assert "error" not in answer, answer
    return [v["text"] for v in answer["values"]]


def _service_variable_values(plugin, backend, op="metricFindQuery"):
    answer = plugin.run(
        {
            "op": op,
            "ds": ds(backend),
            "variables": variables(OVERVIEW),
            "range": time_range(OVERVIEW),
            "query": _variable("service")["query"],
        }
    )
    assert all(v["value"] == v["text"] for v in answer["values"])
    assert redirects(answer) == []
    return set(_texts(answer))


@pytest.mark.parametrize("op", ["metricFindQuery", "variableQuery"])
def test_the_service_variable_lists_the_estates_services(plugin, backend, op):
    services = _service_variable_values(plugin, backend, op)
    assert OVERVIEW_SERVICE in services  # the dashboard's saved choice
    assert len(services) >= 3, services


@pytest.mark.parametrize("op", ["metricFindQuery", "variableQuery"])
def test_the_metric_variable_follows_the_chosen_service(plugin, backend, op):
    metric = _variable("metric")
    answer = plugin.run(
        {
            "op": op,
            "ds": ds(backend),
            "variables": variables(OVERVIEW),  # $service = checkout
            "range": time_range(OVERVIEW),
            "query": metric["query"],
        }
    )
    names = _texts(answer)
    assert "http_request_duration_seconds_p99" in names
    # Grafana keeps what the variable's regex matches: the panels' metrics must remain.
    pattern = re.compile(metric["regex"].strip("/"))
    kept = [n for n in names if pattern.search(n)]
    assert metric["current"]["value"] in kept


def test_a_variable_query_in_json_format(plugin, backend):
    answer = plugin.run(
        {
            "op": "metricFindQuery",
            "ds": ds(backend),
            "variables": variables(OVERVIEW),
            "range": time_range(OVERVIEW),
            "query": {"query": '{"target": "label_values(service)"}', "format": "json"},
        }
    )
    assert set(_texts(answer)) == _service_variable_values(plugin, backend)


def test_ad_hoc_filter_keys_and_values(plugin, backend):
    keys = plugin.run({"op": "getTagKeys", "ds": ds(backend)})
    assert "error" not in keys, keys
    assert "service" in {k["text"] for k in keys["values"]}
    values = plugin.run({"op": "getTagValues", "ds": ds(backend), "options": {"key": "service"}})
    assert "error" not in values, values
    assert {v["text"] for v in values["values"]} == _service_variable_values(plugin, backend)


# --- filters on queries -------------------------------------------------------------------

# The overview's observed-latency panel query, for every service: the filters pick.
ALL_SERVICES_TARGET = {
    "refId": "A",
    "editorMode": "builder",
    "target": "promql",
    "payload": {"expr": "http_request_duration_seconds_p99"},
}


def _services(plugin, backend, filters):
    answer = plugin.run(query_step(backend, [ALL_SERVICES_TARGET], filters=filters))
    assert "error" not in answer, answer["error"]
    found = set()
    for frame in answer["frames"]:
        match = re.search(r'service="([^"]*)"', frame["name"])
        assert match, frame["name"]
        found.add(match.group(1))
    return found


@pytest.fixture(scope="module")
def latency_services(plugin, backend):
    """The services whose latency the unfiltered query returns (the demo estate's)."""
    found = _services(plugin, backend, None)
    assert "checkout" in found
    assert len(found) >= 3, found
    return found


def _other(services):
    return sorted(services - {"checkout"})[0]


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("=", "checkout", lambda every: {"checkout"}),
        ("!=", "checkout", lambda every: every - {"checkout"}),
        ("=~", "check.*|pay.*", lambda every: {s for s in every if s.startswith(("check", "pay"))}),
        ("!~", "check.*", lambda every: {s for s in every if not s.startswith("check")}),
    ],
)
def test_single_value_filter_operators(
    plugin, backend, latency_services, operator, value, expected
):
    filters = [{"key": "service", "operator": operator, "value": value}]
    assert _services(plugin, backend, filters) == expected(latency_services)


def _multi(operator, values):
    # Grafana's multi-value filter: the choices in `values`, the first also in `value`.
    return [{"key": "service", "operator": operator, "value": values[0], "values": values}]


def test_multi_value_equals_matches_any_of_the_values(plugin, backend, latency_services):
    chosen = {"checkout", _other(latency_services)}
    assert _services(plugin, backend, _multi("=|", sorted(chosen))) == chosen


def test_multi_value_not_equals_excludes_all_of_the_values(plugin, backend, latency_services):
    chosen = {"checkout", _other(latency_services)}
    found = _services(plugin, backend, _multi("!=|", sorted(chosen)))
    assert found == latency_services - chosen


def test_multi_value_values_are_literal_not_regex(plugin, backend, latency_services):
    # As regexes "check.ut" would match checkout and "<xy>.*" another service: escaped,
    # each matches only a value spelled so, which no service is.
    other = _other(latency_services)
    assert _services(plugin, backend, _multi("=|", ["check.ut", other])) == {other}
    found = _services(plugin, backend, _multi("!=|", ["check.ut", other[:2] + ".*"]))
    assert found == latency_services


def test_filters_apply_to_the_dashboards_anomaly_queries(plugin, backend):
    score = next(t for _, t in json_targets(OVERVIEW) if t["target"] == "anomaly_score")
    target = dict(score, payload=dict(score["payload"], expr="http_request_duration_seconds_p99"))
    answer = plugin.run(
        query_step(
            backend,
            [target],
            board=OVERVIEW,
            filters=[{"key": "service", "operator": "!=", "value": "checkout"}],
        )
    )
    assert "error" not in answer, answer
    names = [f["name"] for f in answer["frames"]]
    assert len(names) == 2, names
    assert all(re.search(r'service="(frontend|payments)"', n) for n in names), names
