"""The dashboards: generated, consistent, and every JSON-datasource query runs.

Each panel query, annotation query and template variable of the JSON datasource is
sent, as Grafana's plugin sends it, to the backend (built-in demo estate, real
gunicorn) over the last 18 hours, after substituting the variables with values the
backend's ``/datasource/variable`` returned. Prometheus-datasource queries run in
test_self_monitoring.py.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pytest

from testkit import dashboards as generator
from tests.stack.support import (
    DASHBOARDS,
    GRAFANA_BUILTIN_UIDS,
    PROVISIONING,
    all_panels,
    dashboards,
    iso,
    load_yaml,
    substitute,
    variable_names,
)

JSON_TYPE = "simpod-json-datasource"
# Variables Grafana defines itself.
BUILTIN_VARIABLES = {
    "__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms",
    "__from", "__to", "__dashboard", "__org", "__user", "__value", "__data", "__field",
    "__series", "__name", "timeFilter", "__timeFilter",
}  # fmt: skip
# 18 h: the demo's four faults take turns every 4 h and only some of them show on a
# given series; a full 16 h turn makes the table kinds' rows independent of the hour.
RANGE_S = 18 * 3600
INTERVAL_MS = 60_000  # what Grafana picks for 18 h on a ~1,000-pixel panel
MAX_DATA_POINTS = 1080
TABLE_KINDS = {"anomalies", "incidents"}
INCIDENTS_COLUMNS = [
    "time", "timeEnd", "title", "text", "tags", "id", "rule", "series", "status", "score",
    "cause", "link",
]  # fmt: skip


def _provisioned() -> dict[str, str]:
    """Datasource uid -> type, from the provisioning files."""
    found: dict[str, str] = {}
    for path in (PROVISIONING / "datasources").glob("*.y*ml"):
        for ds in load_yaml(path)["datasources"]:
            found[ds["uid"]] = ds["type"]
    return found


BOARDS = dashboards()


# --- static checks -----------------------------------------------------------------------


def test_committed_dashboards_are_the_generators_output() -> None:
    generated = generator.build_dashboards()
    assert sorted(generated) == [p.name for p in sorted(DASHBOARDS.glob("*.json"))]
    for name, board in generated.items():
        committed = (DASHBOARDS / name).read_text(encoding="utf-8")
        assert committed == generator.render(board), (
            f"{name} is stale: run `python -m testkit.dashboards`"
        )


def test_uids_titles_and_panel_ids() -> None:
    uids = [board["uid"] for board in BOARDS.values()]
    assert sorted(uids) == ["anomaly-overview", "incidents", "plugin-backend-self"]
    assert len({board["title"] for board in BOARDS.values()}) == len(BOARDS)
    for name, board in BOARDS.items():
        assert "id" not in board or board["id"] is None, name
        ids = [p["id"] for p in all_panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in all_panels(board):
            grid = panel["gridPos"]
            assert grid["x"] >= 0, (name, panel["id"])
            assert grid["x"] + grid["w"] <= 24, (name, panel["id"])


def test_panel_2_of_the_overview_is_the_raw_series_with_its_band() -> None:
    panel = next(p for p in BOARDS["anomaly-overview.json"]["panels"] if p["id"] == 2)
    assert panel["type"] == "timeseries"
    assert [t["target"] for t in panel["targets"]] == ["promql", "band"]
    assert panel["targets"][0]["payload"]["expr"] == panel["targets"][1]["payload"]["expr"]
    score = next(p for p in BOARDS["anomaly-overview.json"]["panels"] if p["id"] == 3)
    assert score["targets"][0]["target"] == "anomaly_score"
    assert score["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 1.0
    assert score["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_overview_annotations_are_anomaly_windows_and_root_cause_notes() -> None:
    annotations = BOARDS["anomaly-overview.json"]["annotations"]["list"]
    kinds = [a["target"]["target"] for a in annotations if a["datasource"]["type"] == JSON_TYPE]
    assert kinds == ["anomalies", "incidents"]


def test_incident_links_open_the_incident_page() -> None:
    tables = [
        p
        for board in BOARDS.values()
        for p in all_panels(board)
        if any(t.get("target") == "incidents" for t in p.get("targets", []))
    ]
    assert len(tables) == 2
    for panel in tables:
        links = [
            prop["value"]
            for override in panel["fieldConfig"]["overrides"]
            if override["matcher"] == {"id": "byName", "options": "link"}
            for prop in override["properties"]
            if prop["id"] == "links"
        ]
        assert links == [[{"title": "Open the incident page", "url": "${__value.raw}",
                           "targetBlank": True}]]  # fmt: skip


ANOMALIES_COLUMNS = [
    "time", "timeEnd", "title", "text", "tags", "series", "direction", "peak_score", "status",
]  # fmt: skip


def test_table_sorting_and_overrides_name_real_columns() -> None:
    columns = {"incidents": INCIDENTS_COLUMNS, "anomalies": ANOMALIES_COLUMNS}
    for board in BOARDS.values():
        for panel in all_panels(board):
            if panel["type"] != "table":
                continue
            names = set(columns[panel["targets"][0]["target"]])
            for transformation in panel["transformations"]:
                renames = transformation["options"].get("renameByName", {})
                names |= set(renames.values())
            for sort in panel["options"].get("sortBy", []):
                assert sort["displayName"] in names, (panel["title"], sort)
            for override in panel["fieldConfig"]["overrides"]:
                assert override["matcher"]["options"] in names, (panel["title"], override)


def _queries(board: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, datasource, query) of every panel target, annotation and variable."""
    out = []
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel["datasource"]
            out.append((f"panel {panel['id']} {target['refId']}", ds, target))
        if panel.get("targets"):
            out.append((f"panel {panel['id']}", panel["datasource"], {}))
    for annotation in board["annotations"]["list"]:
        out.append((f"annotation {annotation['name']}", annotation["datasource"], annotation))
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            out.append((f"variable {variable['name']}", variable["datasource"], variable))
    return out


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_datasource_resolves(name: str) -> None:
    provisioned = _provisioned()
    for where, ds, _ in _queries(BOARDS[name]):
        uid = ds["uid"]
        if uid in GRAFANA_BUILTIN_UIDS:
            continue
        assert uid in provisioned, f"{name} {where}: datasource {uid!r} is not provisioned"
        assert ds["type"] == provisioned[uid], f"{name} {where}: type {ds['type']!r}"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_template_variable_resolves(name: str) -> None:
    board = BOARDS[name]
    defined: set[str] = set()
    for variable in board["templating"]["list"]:
        text = str(variable.get("query", ""))
        assert variable_names(text) <= defined, f"{variable['name']} uses a later variable"
        defined.add(variable["name"])
    used = set()
    for _, _, query in _queries(board):
        used |= variable_names(str(query.get("payload", "")) + str(query.get("expr", "")))
        if "target" in query and isinstance(query["target"], dict):
            used |= variable_names(str(query["target"]))
    used |= variable_names(" ".join(p["title"] for p in all_panels(board)))
    assert used - BUILTIN_VARIABLES <= defined, f"{name}: undefined {used - defined}"


# --- the JSON-datasource queries, executed -----------------------------------------------


@dataclass(frozen=True)
class JsonQuery:
    board: str
    where: str
    kind: str  # panel | annotation
    panel_id: int | None
    target: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.board}:{self.where}"


def _json_queries() -> list[JsonQuery]:
    found = []
    for _, board in sorted(BOARDS.items()):
        uid = board["uid"]
        for panel in all_panels(board):
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel["datasource"]
                if ds["type"] == JSON_TYPE:
                    where = f"panel {panel['id']} ({panel['title']}) {target['refId']}"
                    found.append(JsonQuery(uid, where, "panel", panel["id"], target))
        for annotation in board["annotations"]["list"]:
            if annotation["datasource"]["type"] == JSON_TYPE:
                where = f"annotation {annotation['name']}"
                found.append(JsonQuery(uid, where, "annotation", None, annotation["target"]))
    return found


JSON_QUERIES = _json_queries()


def _regex(grafana_regex: str) -> re.Pattern[str] | None:
    """A variable's ``/pattern/flags`` regex as Python's."""
    if not grafana_regex:
        return None
    match = re.fullmatch(r"/(.*)/([gimsuy]*)", grafana_regex)
    assert match is not None, grafana_regex
    flags = re.IGNORECASE if "i" in match.group(2) else 0
    return re.compile(match.group(1), flags)


@pytest.fixture(scope="module")
def time_range() -> dict[str, Any]:
    now = time.time()
    return {
        "from": iso(now - RANGE_S),
        "to": iso(now),
        "raw": {"from": "now-18h", "to": "now"},
    }


@pytest.fixture(scope="module")
def kinds(demo_backend) -> set[str]:
    response = demo_backend.http.post(demo_backend.url + "/datasource/metrics", json={}, timeout=10)
    assert response.status_code == 200, response.text
    return {kind["value"] for kind in response.json()}


@pytest.fixture(scope="module")
def variable_values(demo_backend, time_range) -> dict[str, dict[str, str]]:
    """Board uid -> variable -> the value used (the dashboard's default, which must exist)."""
    out: dict[str, dict[str, str]] = {}
    for board in BOARDS.values():
        values: dict[str, str] = {}
        for variable in board["templating"]["list"]:
            current = variable["current"]["value"]
            if variable["type"] == "query":
                query = substitute(variable["query"]["query"], values)
                response = demo_backend.http.post(
                    demo_backend.url + "/datasource/variable",
                    json={"payload": {"target": query}, "range": time_range},
                    timeout=30,
                )
                assert response.status_code == 200, (variable["name"], response.text)
                options = [item["__value"] for item in response.json()]
                assert all(item["__text"] for item in response.json())
                pattern = _regex(variable.get("regex", ""))
                if pattern is not None:
                    options = [o for o in options if pattern.search(o)]
                assert options, f"{board['uid']}: variable {variable['name']} has no values"
                assert current in options, (variable["name"], current, options)
            else:
                options = [o["value"] for o in variable["options"]]
                assert current in options
            values[variable["name"]] = current
        out[board["uid"]] = values
    return out


def test_every_variable_query_answers_with_its_default(variable_values) -> None:
    assert variable_values["anomaly-overview"]["service"] == "checkout"
    assert variable_values["anomaly-overview"]["metric"] == "http_request_duration_seconds_p99"


def _grafana_body(query: JsonQuery, target: dict[str, Any], time_range: dict[str, Any],
                  values: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """The ``/query`` body the plugin sends for one target (panel or annotation)."""
    body: dict[str, Any] = {
        "app": "dashboard",
        "requestId": f"SQR{abs(hash(query.id)) % 1000}",
        "timezone": "browser",
        "dashboardUID": query.board,
        "range": time_range,
        "rangeRaw": time_range["raw"],
        "interval": f"{INTERVAL_MS // 1000}s",
        "intervalMs": INTERVAL_MS,
        "maxDataPoints": MAX_DATA_POINTS,
        "targets": [target],
        "scopedVars": {name: {"text": value, "value": value} for name, value in values.items()},
        "startTime": int(time.time() * 1000),
        "filters": [],
        "adhocFilters": [],
    }
    if query.panel_id is not None:
        body["panelId"] = query.panel_id
    return body


def _check_frames(query: JsonQuery, kind: str, frames: Any) -> None:
    assert isinstance(frames, list)
    if kind in TABLE_KINDS:
        (table,) = frames
        assert table["type"] == "table"
        names = [c["text"] for c in table["columns"]]
        assert names[:5] == ["time", "timeEnd", "title", "text", "tags"]  # annotation fields
        if kind == "incidents":
            assert names == INCIDENTS_COLUMNS
        for row in table["rows"]:
            assert len(row) == len(names)
        # The demo estate injects an incident every 4 hours; the worker replayed 18 h.
        assert table["rows"], f"{query.id}: no rows in 18 h of the demo estate"
        return
    assert query.kind == "panel", f"{query.id}: a time-series kind as an annotation"
    assert frames, f"{query.id}: no series"
    for frame in frames:
        assert isinstance(frame["target"], str)
        points = frame["datapoints"]
        assert points, f"{query.id}: {frame['target']} has no points"
        assert all(len(p) == 2 for p in points)
        finite = [v for v, _ in points if v is not None]
        assert finite, f"{query.id}: {frame['target']} has only nulls"
    if kind == "band":
        parts = sorted(f["target"].rsplit(":", 1)[1] for f in frames)
        assert parts == ["expected", "lower", "upper"] * (len(frames) // 3)


@pytest.mark.parametrize("query", JSON_QUERIES, ids=lambda q: q.id)
def test_json_datasource_query_runs(
    query: JsonQuery, demo_backend, demo_worker, kinds, variable_values, time_range
) -> None:
    values = dict(variable_values[query.board])
    target = substitute(query.target, values)
    assert not variable_names(str(target["payload"])) - BUILTIN_VARIABLES, target
    kind = target["target"]
    assert kind in kinds, f"{query.id}: the backend no longer offers the kind {kind!r}"
    body = _grafana_body(query, target, time_range, values)
    response = demo_backend.http.post(demo_backend.url + "/datasource/query", json=body, timeout=60)
    assert response.status_code == 200, f"{query.id}: {response.text}"
    _check_frames(query, kind, response.json())


def test_the_plugins_save_and_test_works(demo_backend) -> None:
    response = demo_backend.http.get(demo_backend.url + "/datasource/", timeout=10)
    assert response.status_code == 200, response.text


def test_the_worker_annotates_panel_2_of_the_overview(demo_worker, fake_grafana) -> None:
    """What Grafana's built-in annotation query of the overview then shows."""
    deadline = time.monotonic() + 30
    while not fake_grafana.annotations() and time.monotonic() < deadline:
        time.sleep(0.2)
    annotations = fake_grafana.annotations()
    assert annotations, demo_worker.log_tail()
    for annotation in annotations:
        assert annotation["dashboardUID"] == "anomaly-overview"
        assert annotation["panelId"] == 2
        assert "/incidents/" in annotation["text"]


def test_incident_links_point_at_the_backends_incident_page(
    demo_backend, demo_worker, time_range
) -> None:
    body = {
        "range": time_range,
        "intervalMs": INTERVAL_MS,
        "maxDataPoints": MAX_DATA_POINTS,
        "targets": [{"refId": "A", "target": "incidents", "payload": {"status": "all"}}],
    }
    response = demo_backend.http.post(demo_backend.url + "/datasource/query", json=body)
    assert response.status_code == 200, response.text
    (table,) = response.json()
    columns = [c["text"] for c in table["columns"]]
    row = dict(zip(columns, table["rows"][0], strict=True))
    assert row["link"] == f"{demo_backend.url}/incidents/{row['id']}"
    page = demo_backend.http.get(row["link"], timeout=30)
    assert page.status_code == 200, page.text[:500]
    assert row["id"] in page.text
