"""Bad input typed into Grafana reaches the backend through the plugin and comes back as a
400 whose message the panel shows (Grafana's toDataQueryError), naming the problem.

Issue 17, finding 3: the plugin replaces a code-mode payload that is not valid JSON, or
that holds ``null``, with ``{}``; the message must name both possibilities.
"""

from __future__ import annotations

import pytest

from tests.client.support import dashboard, ds, query_step, time_range, variables

pytestmark = pytest.mark.client

OVERVIEW = dashboard("anomaly-overview.json")


def _code(payload: str, kind: str = "promql") -> dict[str, object]:
    return {"refId": "A", "editorMode": "code", "target": kind, "payload": payload}


def _builder(kind: str, **payload: object) -> dict[str, object]:
    return {"refId": "A", "editorMode": "builder", "target": kind, "payload": payload}


def _shown(plugin, backend, target) -> str:
    answer = plugin.run(query_step(backend, [target], board=OVERVIEW))
    assert "error" in answer, answer
    error = answer["error"]
    assert error["status"] == 400, error
    message: str = error["message"]
    assert message not in ("Bad Request", "Query error"), error
    assert "Traceback" not in message
    return message


@pytest.mark.parametrize(
    "payload",
    ['{"expr": "http_request_duration_seconds_p99"', "expr: up", "null"],
    ids=["unclosed-json", "not-json", "null"],
)
def test_a_code_mode_payload_the_plugin_dropped_is_explained(plugin, backend, payload):
    message = _shown(plugin, backend, _code(payload))
    assert "payload.expr" in message
    assert "JSON" in message, message
    assert "null" in message, message


def test_a_code_mode_payload_with_variables_works(plugin, backend):
    target = _code('{"expr": "http_request_duration_seconds_p99{service=\\"$service\\"}"}')
    answer = plugin.run(query_step(backend, [target], board=OVERVIEW))
    assert "error" not in answer, answer
    assert [f["name"] for f in answer["frames"]] == [
        'http_request_duration_seconds_p99{job="demo", service="checkout"}'
    ]


@pytest.mark.parametrize(
    ("target", "named"),
    [
        (_builder("no_such_kind", expr="up"), ["no_such_kind", "promql"]),
        (_builder("anomaly_score", expr="up", detector="magic"), ["magic", "robust_z"]),
        (_builder("band", expr="up", direction="sideways"), ["direction"]),
        (_builder("anomaly_score", expr="up", sensitivity="0"), ["sensitivity"]),
        (_builder("promql", expr='http_requests_total{service="checkout"'), ["'{'", "'}'"]),
        (_builder("promql", expr='http_requests_total{service=~"("}'), ["regular expression"]),
        (_builder("incidents", status="maybe"), ["status"]),
    ],
    ids=["unknown-kind", "unknown-detector", "bad-direction", "bad-sensitivity",
         "promql-syntax", "promql-regex", "bad-status"],
)  # fmt: skip
def test_bad_panel_options_get_a_400_naming_them(plugin, backend, target, named):
    message = _shown(plugin, backend, target)
    for word in named:
        assert word in message, message


def test_a_bad_variable_query_gets_a_readable_400(plugin, backend):
    answer = plugin.run(
        {
            "op": "metricFindQuery",
            "ds": ds(backend),
            "variables": variables(OVERVIEW),
            "range": time_range(OVERVIEW),
            "query": {"query": "label_values(", "format": "string"},
        }
    )
    error = answer["error"]
    assert error["status"] == 400, error
    assert "label_values" in error["message"], error


def test_an_unknown_ad_hoc_operator_gets_a_readable_400(plugin, backend):
    target = _builder("promql", expr="http_request_duration_seconds_p99")
    filters = [{"key": "service", "operator": "<>", "value": "checkout"}]
    answer = plugin.run(query_step(backend, [target], filters=filters))
    error = answer["error"]
    assert error["status"] == 400, error
    assert "<>" in error["message"], error
    assert "=~" in error["message"], error  # says what is accepted
