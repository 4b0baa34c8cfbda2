"""Every panel query of the project's dashboards, sent by the plugin's own query() with
the dashboards' variables, as Grafana runs a dashboard; and the query editor's lists.

Issue 17, finding 6: the ``anomalies`` table names its state column ``status``.
"""

from __future__ import annotations

import math

import pytest

from tests.client.support import (
    column,
    dashboard,
    dashboard_names,
    ds,
    field_names,
    json_targets,
    query_step,
    redirects,
    variables,
)

pytestmark = pytest.mark.client

PANEL_QUERIES = [
    pytest.param(name, title, target, id=f"{name}:{title}:{target['refId']}")
    for name in dashboard_names()
    for title, target in json_targets(dashboard(name))
]
ANNOTATION_COLUMNS = {"time", "timeEnd", "title", "text", "tags"}


def _kinds(plugin, backend):
    answer = plugin.run({"op": "listMetrics", "ds": ds(backend), "target": ""})
    assert "error" not in answer, answer
    return answer


def test_the_query_editor_lists_every_kind_and_accepts_its_fields(plugin, backend):
    answer = _kinds(plugin, backend)
    kinds = [m["value"] for m in answer["metrics"]]
    assert kinds, answer
    assert all(m["label"] for m in answer["metrics"])
    # The builder's own zod check of each kind's payload fields (QueryBuilder.tsx).
    assert [c for c in answer["payloadCheck"] if not c["ok"]] == []
    assert redirects(answer) == []


def test_the_dashboards_query_every_kind(plugin, backend):
    kinds = {m["value"] for m in _kinds(plugin, backend)["metrics"]}
    used = {t["target"] for name in dashboard_names() for _, t in json_targets(dashboard(name))}
    assert kinds - used == set(), f"kinds no dashboard panel shows: {sorted(kinds - used)}"
    assert used - kinds == set(), f"dashboard kinds the backend does not offer: {used - kinds}"


def test_payload_options_fill_the_builders_select_boxes(plugin, backend):
    metric_names = plugin.run(
        {
            "op": "listMetricPayloadOptions",
            "ds": ds(backend),
            "name": "metric",
            "metric": "promql",
            "payload": {},
        }
    )
    assert "error" not in metric_names, metric_names
    values = {o["value"] for o in metric_names["options"]}
    assert "http_request_duration_seconds_p99" in values
    assert all(o["label"] for o in metric_names["options"])


def test_the_builder_payload_is_interpolated_with_the_dashboards_variables(plugin, backend):
    board = dashboard("anomaly-overview.json")
    (_, target), *_ = json_targets(board)
    answer = plugin.run(
        {"op": "processTarget", "ds": ds(backend), "variables": variables(board), "target": target}
    )
    assert answer["target"]["payload"]["expr"] == (
        'http_request_duration_seconds_p99{service="checkout"}'
    )


def _numbers(frame):
    return [v for f in frame["fields"] if f["type"] == "number" for v in f["values"]]


def _check_frames(kind, frames):
    if kind in ("promql", "anomaly_score", "band"):
        assert frames, f"{kind}: no series"
        for frame in frames:
            assert [f["type"] for f in frame["fields"]] == ["time", "number"], frame["name"]
            assert frame["length"] > 10, frame["name"]
            assert 'service="checkout"' in frame["name"], frame["name"]
        if kind == "anomaly_score":
            assert all(v is None or v >= 0 for v in _numbers(frames[0]))
        if kind == "band":
            parts = sorted(frame["name"].rsplit(":", 1)[1] for frame in frames)
            assert parts == ["expected", "lower", "upper"] * (len(frames) // 3)
            named = {frame["name"].rsplit(":", 1)[1]: _numbers(frame) for frame in frames[:3]}
            pairs = zip(named["lower"], named["upper"], strict=True)
            assert all(lo <= up for lo, up in pairs if lo is not None and up is not None)
        return
    assert len(frames) == 1, f"{kind}: one table expected"
    names = field_names(frames[0])
    assert set(names) >= ANNOTATION_COLUMNS, names
    assert "status" in names, f"{kind}: no status column in {names}"
    assert "open" not in names, f"{kind}: a column named 'open' holding open/closed: {names}"
    assert set(column(frames[0], "status")) <= {"open", "closed"}


@pytest.mark.parametrize(("name", "title", "target"), PANEL_QUERIES)
def test_each_dashboard_panel_query(plugin, backend, name, title, target):
    board = dashboard(name)
    answer = plugin.run(query_step(backend, [target], board=board))
    assert "error" not in answer, (title, answer["error"])
    _check_frames(target["target"], answer["frames"])
    assert [(e["via"], e["method"], e["path"], e["status"]) for e in answer["exchanges"]] == [
        ("proxy", "POST", "/datasource/query", 200)
    ]


def test_anomalies_table_flags_windows_on_the_demo_estate(plugin, backend):
    board = dashboard("anomaly-overview.json")  # alarms: server default
    target = next(t for _, t in json_targets(board) if t["target"] == "anomalies")
    answer = plugin.run(query_step(backend, [target], board=board, span="now-24h"))
    assert "error" not in answer, answer
    (table,) = answer["frames"]
    assert table["length"] >= 1, "the demo's injected faults left no anomaly window in 24 h"
    starts, ends = column(table, "time"), column(table, "timeEnd")
    assert all(s <= e for s, e in zip(starts, ends, strict=True))
    assert all(isinstance(t, str) and t for t in column(table, "title"))
    assert all(math.isfinite(p) and p > 1 for p in column(table, "peak_score"))


def test_a_panel_with_every_query_of_the_overview_at_once(plugin, backend):
    board = dashboard("anomaly-overview.json")
    targets = [dict(t, refId=f"Q{i}") for i, (_, t) in enumerate(json_targets(board))]
    answer = plugin.run(query_step(backend, targets, board=board))
    assert "error" not in answer, answer
    # promql and anomaly_score give a series or more each, band three, the tables one each.
    assert len(answer["frames"]) >= len(targets) + 2, [f["name"] for f in answer["frames"]]


def test_a_datasource_url_with_trailing_slash_queries_the_same(plugin, backend):
    board = dashboard("anomaly-overview.json")
    (_, target), *_ = json_targets(board)
    plain = plugin.run(query_step(backend, [target], board=board))
    slashed = plugin.run(
        query_step(backend, [target], board=board, url=backend.datasource_url + "/")
    )
    assert "error" not in slashed, slashed
    assert [f["name"] for f in slashed["frames"]] == [f["name"] for f in plain["frames"]]
    assert slashed["exchanges"][0]["path"] == "/datasource/query"
    assert redirects(slashed) == []


def test_the_incidents_table_lists_what_the_worker_found(plugin, backend):
    board = dashboard("incidents.json")
    (_, target), *_ = json_targets(board)
    answer = plugin.run(query_step(backend, [target], board=board, span="now-24h"))
    assert "error" not in answer, answer
    (table,) = answer["frames"]
    assert table["length"] >= 1, "the worker's 18 h replay stored no incident"
    assert set(column(table, "rule")) == {"checkout-latency"}
    assert all(link.startswith("http") for link in column(table, "link"))


def test_the_query_builders_fields_as_the_editor_fills_them(plugin, backend):
    # The builder sends every value through the template service as a string, lists too.
    target = {
        "refId": "A",
        "editorMode": "builder",
        "target": "anomaly_score",
        "payload": {
            "metric": "http_request_duration_seconds_p99",
            "matchers": ['service="checkout"'],
            "sensitivity": 2,
            "min_deviation": 0.01,
            "direction": "up",
            "detector": "robust_z",
            "legend": "{{service}}",
        },
    }
    answer = plugin.run(query_step(backend, [target]))
    assert "error" not in answer, answer
    assert [f["name"] for f in answer["frames"]] == ["checkout"]


def test_promql_as_a_table(plugin, backend):
    target = {
        "refId": "A",
        "editorMode": "builder",
        "target": "promql",
        "payload": {"expr": 'http_request_duration_seconds_p99{service="checkout"}'},
    }
    target["payload"]["format"] = "table"
    answer = plugin.run(query_step(backend, [target]))
    assert "error" not in answer, answer
    (table,) = answer["frames"]
    assert table["length"] > 10
    assert set(column(table, "service")) == {"checkout"}
    assert {"Time", "Value"} <= set(field_names(table))
