"""The simpod-json-datasource protocol, mounted at ``/datasource``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from plugin_backend.datasource import render
from plugin_backend.datasource.catalog import PromqlPayload, render_kinds
from plugin_backend.datasource.parse import (
    QueryLimits,
    parse_body,
    parse_panel_query,
    to_time_range,
)
from plugin_backend.datasource.step import choose_step
from plugin_backend.datasource.variables import parse_variable_query
from plugin_backend.datasource.wire import (
    AnnotationQueryBody,
    MetricPayloadOptionsBody,
    MetricsBody,
    SearchBody,
    TagValuesBody,
    VariableBody,
)
from plugin_backend.errors import InvalidTarget
from plugin_backend.service import DatasourceService, TargetResult
from plugin_backend.types import Series
from plugin_backend.web.http import json_body, json_response
from plugin_backend.web.limits import heavy_request

HEAVY_KINDS = frozenset({"anomaly_score", "band", "anomalies"})

__all__ = ["datasource_blueprint"]

datasource_blueprint = Blueprint("datasource", __name__, url_prefix="/datasource")


def _service() -> DatasourceService:
    service: DatasourceService = current_app.extensions["plugin_backend.datasource"]
    return service


def _limits() -> QueryLimits:
    limits: QueryLimits = current_app.extensions["plugin_backend.limits"]
    return limits


@datasource_blueprint.get("/")
def test_connection() -> Response:
    """ "Save & test": 200 when the series source answers, else its error (502/504)."""
    service = _service()
    service.check_ready(current_app.config["READINESS_TIMEOUT_S"])
    return json_response({"status": "ok", "source": service.source.describe()})


@datasource_blueprint.post("/metrics")
def list_metric_kinds() -> Response:
    parse_body(MetricsBody, json_body(empty_ok=True))
    return json_response(render_kinds(_service().metric_kinds()))


@datasource_blueprint.post("/metric-payload-options")
def metric_payload_options() -> Response:
    body = parse_body(MetricPayloadOptionsBody, json_body())
    options = _service().payload_options(body.metric, body.payload, body.name)
    return json_response([{"label": label, "value": value} for label, value in options])


@datasource_blueprint.post("/query")
def query() -> Response:
    panel_query = parse_panel_query(json_body(), _limits())
    if any(t.kind in HEAVY_KINDS for t in panel_query.targets):
        with heavy_request():
            results = _service().run_query(panel_query)
    else:
        results = _service().run_query(panel_query)
    frames: list[dict[str, Any]] = []
    for result in results:
        frames += _render_result(result)
    return json_response(frames)


def _render_result(result: TargetResult) -> list[dict[str, Any]]:
    kind, legend = result.target.kind, result.options.legend
    if kind == "incidents":
        link_base = current_app.extensions["plugin_backend.settings"].advertised_url()
        return [render.incidents_table(result.incidents, link_base)]
    if kind == "promql":
        if isinstance(result.options, PromqlPayload) and result.options.format == "table":
            return [render.table_frame(result.series)]
        return [
            render.timeseries_frame(render.legend_name(s.labels, legend), s) for s in result.series
        ]
    named = [(render.legend_name(a.labels, legend), a) for a in result.anomalies]
    shown = [(name, a.labels, s) for (name, a), s in zip(named, result.shown, strict=True)]
    if kind == "anomaly_score":
        return [
            render.timeseries_frame(name, Series(labels, s.timestamps_s, s.score))
            for name, labels, s in shown
        ]
    if kind == "band":
        return [
            render.timeseries_frame(
                f"{name}:{part}", Series(labels, s.timestamps_s, getattr(s, part))
            )
            for name, labels, s in shown
            for part in ("expected", "lower", "upper")
        ]
    return [render.windows_table([(name, w, a.scored) for name, a in named for w in a.windows])]


@datasource_blueprint.post("/variable")
def variable() -> Response:
    body = parse_body(VariableBody, json_body())
    payload = body.payload
    text = payload if isinstance(payload, str) else payload.get("target")
    if not isinstance(text, str) or not text.strip():
        raise InvalidTarget(
            "payload.target: a variable query such as label_values(job) is required"
        )
    time_range = to_time_range(body.range) if body.range is not None else None
    values = _service().variable_values(parse_variable_query(text), time_range)
    return json_response(render.metric_find_values(values))


@datasource_blueprint.post("/tag-keys")
def tag_keys() -> Response:
    json_body(empty_ok=True)
    return json_response([{"type": "string", "text": key} for key in _service().tag_keys()])


@datasource_blueprint.post("/tag-values")
def tag_values() -> Response:
    body = parse_body(TagValuesBody, json_body())
    return json_response([{"text": value} for value in _service().tag_values(body.key)])


@datasource_blueprint.post("/search")
def search() -> Response:
    """Legacy (plugin < 0.3): metric names for the old query editor."""
    body = parse_body(SearchBody, json_body(empty_ok=True))
    return json_response(_service().search_metrics(body.target))


@datasource_blueprint.post("/annotations")
def legacy_annotations() -> Response:
    """Legacy annotation queries: each run of non-zero values of the PromQL becomes one."""
    body = parse_body(AnnotationQueryBody, json_body())
    time_range = to_time_range(body.range)
    step_s = choose_step(
        time_range,
        interval_ms=None,
        max_data_points=1000,
        max_points=_limits().max_points_per_series,
        min_step_s=15.0,
    )
    regions = _service().annotation_regions(body.annotation.query, time_range, step_s)
    events = [
        render.annotation_event(
            time_s=region.start_s,
            time_end_s=region.end_s,
            title=body.annotation.name or region.series.name,
            text=region.series.name,
            tags=[f"{k}:{v}" for k, v in sorted(region.series.labels.items()) if k != "__name__"],
        )
        for region in regions
    ]
    return json_response(events)
