"""The typed queries the datasource use cases take (pure values).

The wire edge (``datasource/``) parses Grafana's JSON into these; the service
(``service.py``) reads only these, never Grafana's payloads. Each payload model
validates its own fields, so a bad option is named in the 400 the edge answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plugin_backend.promql import Matcher
from plugin_backend.scoring.registry import DEFAULT_DETECTOR, available
from plugin_backend.types import TimeRange

__all__ = [
    "AnomalyPayload",
    "ExprPayload",
    "IncidentsPayload",
    "KindPayload",
    "PanelQuery",
    "PromqlPayload",
    "TargetQuery",
    "VariableQuery",
]


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
    #: None (empty or "default"): the server's ``PLUGIN_BACKEND_ALARM_RATE_CONTROL``.
    rate_control: bool | None = None

    @field_validator("rate_control", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        empty = value is None or (isinstance(value, str) and value in {"", "default"})
        return None if empty else value

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        if value not in available():
            raise ValueError(f"unknown detector {value!r}; available: {', '.join(available())}")
        return value


class IncidentsPayload(_Payload):
    """Options of ``incidents`` (README: "Metric kinds"): filters, all optional."""

    rule: str = Field("", max_length=128)
    service: str = Field("", max_length=256)
    status: Literal["all", "open", "closed"] = "all"
    legend: str = ""  # unused; lets every kind share the editor's legend field


#: What one target asks for: raw series, scored series, or stored incidents.
KindPayload = PromqlPayload | AnomalyPayload | IncidentsPayload


@dataclass(frozen=True, slots=True)
class TargetQuery:
    """One visible target: its metric kind and its validated options."""

    ref_id: str
    kind: str
    options: KindPayload


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """A ``/query`` request: range (aligned to the step), step, targets, ad-hoc filters."""

    time_range: TimeRange
    step_s: float
    targets: tuple[TargetQuery, ...]
    filters: tuple[Matcher, ...]


@dataclass(frozen=True, slots=True)
class VariableQuery:
    """A template-variable query, in the Prometheus datasource's functions."""

    function: Literal["label_values", "label_names", "metrics"]
    label: str = ""
    selector: str = ""
    regex: str = ""
