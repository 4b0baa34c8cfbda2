"""The metric kinds: one table drives the query editor (``POST /metrics``), payload
validation, the heavy-request gate, rendering and the OpenAPI document.

Adding a kind means adding one ``MetricKind`` to ``KINDS``: its editor fields, the
typed payload the service takes (``queries.py``), whether it is heavy (anomaly
scoring), how its results render, and its examples for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from plugin_backend.datasource import render
from plugin_backend.detection import SeriesAnomalies
from plugin_backend.errors import InvalidTarget
from plugin_backend.queries import (
    AnomalyPayload,
    IncidentsPayload,
    KindPayload,
    PromqlPayload,
)
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.registry import DEFAULT_DETECTOR, available
from plugin_backend.service import TargetResult
from plugin_backend.types import Series

__all__ = [
    "ALARM_OPTIONS",
    "ANOMALIES",
    "ANOMALY_SCORE",
    "BAND",
    "DIRECTION_OPTIONS",
    "FORMAT_OPTIONS",
    "INCIDENTS",
    "KINDS",
    "PROMQL",
    "STATIC_OPTIONS",
    "STATUS_OPTIONS",
    "MetricKind",
    "PayloadField",
    "kind_named",
    "render_kinds",
    "validate_payload",
]

Frames = list[dict[str, Any]]
#: ``render(result, link_base)``: the frames of one target (``link_base``: this
#: service's advertised URL, for links to incident pages).
Renderer = Callable[[TargetResult, str | None], Frames]
EXAMPLE_QUERY = 'http_request_duration_seconds_p99{service="checkout"}'


@dataclass(frozen=True, slots=True)
class PayloadField:
    name: str
    label: str
    type: Literal["select", "multi-select", "input", "textarea"] = "input"
    placeholder: str | None = None
    reload_metric: bool = False
    width: int | None = None
    # None: options are loaded from /metric-payload-options when the box opens.
    options: Sequence[tuple[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class MetricKind:
    value: str
    label: str
    description: str
    payloads: Sequence[PayloadField]
    #: the typed options the service takes for this kind
    payload: type[KindPayload]
    render: Renderer
    #: scored on request: holds a heavy-request slot (PLUGIN_BACKEND_MAX_CONCURRENT_HEAVY)
    heavy: bool = False
    #: OpenAPI request examples: name -> payload
    examples: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# -- renderers, one per kind --------------------------------------------------------------


def _render_promql(result: TargetResult, _link_base: str | None) -> Frames:
    options = result.target.options
    if isinstance(options, PromqlPayload) and options.format == "table":
        return [render.table_frame(result.series)]
    return [
        render.timeseries_frame(render.legend_name(s.labels, options.legend), s)
        for s in result.series
    ]


def _named(result: TargetResult) -> list[tuple[str, SeriesAnomalies]]:
    legend = result.target.options.legend
    return [(render.legend_name(a.labels, legend), a) for a in result.anomalies]


def _shown(result: TargetResult) -> list[tuple[str, SeriesAnomalies, ScoredSeries]]:
    """Each scored series as drawn at the panel's step (its windows stay on the grid)."""
    return [(name, a, s) for (name, a), s in zip(_named(result), result.shown, strict=True)]


def _render_score(result: TargetResult, _link_base: str | None) -> Frames:
    return [
        render.timeseries_frame(name, Series(a.labels, s.timestamps_s, s.score))
        for name, a, s in _shown(result)
    ]


def _render_band(result: TargetResult, _link_base: str | None) -> Frames:
    return [
        render.timeseries_frame(
            f"{name}:{part}", Series(a.labels, s.timestamps_s, getattr(s, part))
        )
        for name, a, s in _shown(result)
        for part in ("expected", "lower", "upper")
    ]


def _render_windows(result: TargetResult, _link_base: str | None) -> Frames:
    rows = [(name, w, a.scored) for name, a in _named(result) for w in a.windows]
    return [render.windows_table(rows)]


def _render_incidents(result: TargetResult, link_base: str | None) -> Frames:
    return [render.incidents_table(result.incidents, link_base)]


# -- the table ----------------------------------------------------------------------------

FORMAT_OPTIONS = (("Time series", "time_series"), ("Table", "table"))
DIRECTION_OPTIONS = (("Both", "both"), ("Above expected", "up"), ("Below expected", "down"))
ALARM_OPTIONS = (
    ("Server default (PLUGIN_BACKEND_ALARM_RATE_CONTROL)", "default"),
    ("Rate-controlled: about 1 per 3 days on a healthy series", "true"),
    ("At the band's edge", "false"),
)
STATUS_OPTIONS = (("All", "all"), ("Open", "open"), ("Closed", "closed"))
#: Select boxes whose options ``/metric-payload-options`` answers from this table.
STATIC_OPTIONS: Mapping[str, Sequence[tuple[str, str]]] = {
    "format": FORMAT_OPTIONS,
    "direction": DIRECTION_OPTIONS,
    "rate_control": ALARM_OPTIONS,
    "status": STATUS_OPTIONS,
}

_EXPR_FIELDS = (
    PayloadField(
        "expr",
        "PromQL",
        "textarea",
        placeholder='rate(http_requests_total{job="api"}[5m]) (or pick a metric below)',
    ),
    PayloadField(
        "metric", "Metric", "select", placeholder="builder: metric name", reload_metric=True
    ),
    PayloadField("matchers", "Label filters", "multi-select", placeholder='builder: label="value"'),
    PayloadField("legend", "Legend", "input", placeholder="{{service}} {{instance}}"),
)
_DETECTOR_FIELDS = (
    PayloadField(
        "detector",
        "Detector",
        "select",
        placeholder=f"default: {DEFAULT_DETECTOR}",
        options=tuple((name, name) for name in available()),
    ),
    PayloadField("direction", "Direction", "select", options=DIRECTION_OPTIONS, width=20),
    PayloadField("sensitivity", "Sensitivity", "input", placeholder="1 (2 = twice the alarms)"),
    PayloadField(
        "min_deviation", "Min. deviation", "input", placeholder="0 (in the series' own units)"
    ),
    PayloadField(
        "rate_control", "Alarms", "select", placeholder="server default", options=ALARM_OPTIONS
    ),
)

PROMQL = MetricKind(
    value="promql",
    label="PromQL (raw Prometheus series)",
    description="Any PromQL expression, evaluated over the panel's range at its resolution.",
    payloads=(
        *_EXPR_FIELDS,
        PayloadField("format", "Format", "select", options=FORMAT_OPTIONS, width=20),
    ),
    payload=PromqlPayload,
    render=_render_promql,
    examples={
        "promql": {"expr": EXAMPLE_QUERY},
        "table": {"expr": "pg_connections_in_use", "format": "table"},
    },
)
ANOMALY_SCORE = MetricKind(
    value="anomaly_score",
    label="Anomaly score",
    description="How abnormal each point is: <= 1 inside the expected band, > 1 outside.",
    payloads=(*_EXPR_FIELDS, *_DETECTOR_FIELDS),
    payload=AnomalyPayload,
    render=_render_score,
    heavy=True,
)
BAND = MetricKind(
    value="band",
    label="Expected band",
    description="Three series per input series: <name>:expected, <name>:lower, <name>:upper.",
    payloads=(*_EXPR_FIELDS, *_DETECTOR_FIELDS),
    payload=AnomalyPayload,
    render=_render_band,
    heavy=True,
    examples={"band": {"expr": "pg_connections_in_use", "detector": "robust_z"}},
)
ANOMALIES = MetricKind(
    value="anomalies",
    label="Anomaly windows",
    description="Anomalous windows as a table (time, timeEnd, title, text, tags: annotations).",
    payloads=(*_EXPR_FIELDS, *_DETECTOR_FIELDS),
    payload=AnomalyPayload,
    render=_render_windows,
    heavy=True,
    examples={"anomalies": {"expr": EXAMPLE_QUERY, "detector": "robust_z"}},
)
INCIDENTS = MetricKind(
    value="incidents",
    label="Incidents (root-cause notes)",
    description=(
        "Stored incidents overlapping the range, with their root-cause notes, as a table: "
        "time, timeEnd, title, text, tags (annotations) and id, rule, series, status, "
        "score, cause, link."
    ),
    payloads=(
        PayloadField("rule", "Rule", "input", placeholder="any watch rule", width=30),
        PayloadField("service", "Service", "input", placeholder="any service label", width=30),
        PayloadField("status", "Status", "select", options=STATUS_OPTIONS, width=20),
    ),
    payload=IncidentsPayload,
    render=_render_incidents,
    examples={"incidents": {"status": "all"}},
)
KINDS = (PROMQL, ANOMALY_SCORE, BAND, ANOMALIES, INCIDENTS)
_BY_VALUE = {kind.value: kind for kind in KINDS}


def kind_named(value: str) -> MetricKind:
    """The kind called ``value``; ``InvalidTarget`` naming the known ones otherwise."""
    kind = _BY_VALUE.get(value)
    if kind is None:
        known = ", ".join(_BY_VALUE)
        raise InvalidTarget(f"unknown metric kind {value!r}; available: {known}")
    return kind


def validate_payload(kind: str, ref_id: str, payload: Mapping[str, Any]) -> KindPayload:
    """The kind's typed options; ``InvalidTarget`` naming the kind or the bad field."""
    model = kind_named(kind).payload
    try:
        return model.model_validate(dict(payload))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidTarget(f"target {ref_id}: payload.{where}: {err['msg']}") from None


def render_kinds(kinds: Sequence[MetricKind]) -> list[dict[str, Any]]:
    return [
        {
            "label": kind.label,
            "value": kind.value,
            "payloads": [_render_field(f) for f in kind.payloads],
        }
        for kind in kinds
    ]


def _render_field(box: PayloadField) -> dict[str, Any]:
    out: dict[str, Any] = {"name": box.name, "label": box.label, "type": box.type}
    if box.placeholder:
        out["placeholder"] = box.placeholder
    if box.reload_metric:
        out["reloadMetric"] = True
    if box.width is not None:
        out["width"] = box.width
    if box.options is not None:
        out["options"] = [{"label": label, "value": value} for label, value in box.options]
    return out
