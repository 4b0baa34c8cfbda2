"""The metric kinds offered to the query editor (``POST /metrics``) and their payloads.

Each kind has a pydantic model for its payload, so bad options get a 400 that
names the field, and a list of editor fields the plugin renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.registry import DEFAULT_DETECTOR, available

__all__ = [
    "ALARM_OPTIONS",
    "ANOMALIES",
    "ANOMALY_SCORE",
    "BAND",
    "FORMAT_OPTIONS",
    "INCIDENTS",
    "KINDS",
    "PROMQL",
    "AnomalyPayload",
    "ExprPayload",
    "IncidentsPayload",
    "MetricKind",
    "PayloadField",
    "PromqlPayload",
    "render_kinds",
    "validate_payload",
]


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


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ExprPayload(_Payload):
    """A PromQL expression, typed or built from a metric and label filters."""

    expr: str = ""
    metric: str = ""
    matchers: list[str] = Field(default_factory=list)
    legend: str = ""

    @field_validator("matchers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None or value == "":
            return []
        return [value] if isinstance(value, str) else value


class PromqlPayload(ExprPayload):
    """Options of the ``promql`` kind (README: "Metric kinds")."""

    format: Literal["time_series", "table"] = "time_series"


class AnomalyPayload(ExprPayload):
    """Options of ``anomaly_score``, ``band`` and ``anomalies`` (README: "Metric kinds")."""

    detector: str = DEFAULT_DETECTOR
    direction: Literal["both", "up", "down"] = "both"
    sensitivity: float = Field(1.0, gt=0, le=100)
    min_deviation: float = Field(0.0, ge=0)
    #: False: windows at the band's edge instead of the rate-controlled alarm threshold.
    rate_control: bool = True

    @field_validator("rate_control", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return True if value is None or value == "" else value

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        if value not in available():
            raise ValueError(f"unknown detector {value!r}; available: {', '.join(available())}")
        return value


FORMAT_OPTIONS = (("Time series", "time_series"), ("Table", "table"))
DIRECTION_OPTIONS = (("Both", "both"), ("Above expected", "up"), ("Below expected", "down"))
ALARM_OPTIONS = (
    ("Rate-controlled: about 1 per 3 days on a healthy series", "true"),
    ("At the band's edge", "false"),
)

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
        "rate_control", "Alarms", "select", placeholder="rate-controlled", options=ALARM_OPTIONS
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
)
ANOMALY_SCORE = MetricKind(
    value="anomaly_score",
    label="Anomaly score",
    description="How abnormal each point is: <= 1 inside the expected band, > 1 outside.",
    payloads=(*_EXPR_FIELDS, *_DETECTOR_FIELDS),
)
BAND = MetricKind(
    value="band",
    label="Expected band",
    description="Three series per input series: <name>:expected, <name>:lower, <name>:upper.",
    payloads=(*_EXPR_FIELDS, *_DETECTOR_FIELDS),
)
ANOMALIES = MetricKind(
    value="anomalies",
    label="Anomaly windows",
    description="Anomalous windows as a table (time, timeEnd, title, text, tags: annotations).",
    payloads=(*_EXPR_FIELDS, *_DETECTOR_FIELDS),
)
STATUS_OPTIONS = (("All", "all"), ("Open", "open"), ("Closed", "closed"))


class IncidentsPayload(_Payload):
    """Options of ``incidents`` (README: "Metric kinds"): filters, all optional."""

    rule: str = Field("", max_length=128)
    service: str = Field("", max_length=256)
    status: Literal["all", "open", "closed"] = "all"
    legend: str = ""  # unused; lets every kind share the editor's legend field


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
)
KINDS = (PROMQL, ANOMALY_SCORE, BAND, ANOMALIES, INCIDENTS)

_PAYLOAD_MODELS: Mapping[str, type[_Payload]] = {
    "promql": PromqlPayload,
    "anomaly_score": AnomalyPayload,
    "band": AnomalyPayload,
    "anomalies": AnomalyPayload,
    "incidents": IncidentsPayload,
}


def validate_payload(kind: str, ref_id: str, payload: Mapping[str, Any]) -> _Payload:
    model = _PAYLOAD_MODELS.get(kind)
    if model is None:
        known = ", ".join(_PAYLOAD_MODELS)
        raise InvalidTarget(f"unknown metric kind {kind!r}; available: {known}")
    try:
        return model.model_validate(dict(payload))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidTarget(f"target {ref_id}: payload.{field}: {err['msg']}") from None


def render_kinds(kinds: Sequence[MetricKind]) -> list[dict[str, Any]]:
    return [
        {
            "label": kind.label,
            "value": kind.value,
            "payloads": [_render_field(f) for f in kind.payloads],
        }
        for kind in kinds
    ]


def _render_field(field: PayloadField) -> dict[str, Any]:
    out: dict[str, Any] = {"name": field.name, "label": field.label, "type": field.type}
    if field.placeholder:
        out["placeholder"] = field.placeholder
    if field.reload_metric:
        out["reloadMetric"] = True
    if field.width is not None:
        out["width"] = field.width
    if field.options is not None:
        out["options"] = [{"label": label, "value": value} for label, value in field.options]
    return out
