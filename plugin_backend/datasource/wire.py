"""Pydantic models of the request bodies the plugin sends (extra keys ignored).

Grafana and the plugin add keys between versions; models accept and drop
unknown keys, and validation errors name the field path (``targets.0.payload``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AdhocFilterBody",
    "AnnotationQueryBody",
    "AnnotationSpec",
    "MetricPayloadOptionsBody",
    "MetricsBody",
    "QueryBody",
    "RangeBody",
    "SearchBody",
    "TagValuesBody",
    "TargetBody",
    "VariableBody",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RangeBody(_Body):
    from_: datetime = Field(alias="from")
    to: datetime


class AdhocFilterBody(_Body):
    key: str
    operator: str = "="
    value: str | None = None
    #: the choices of Grafana's multi-value operators ``=|`` and ``!=|``
    values: list[str] | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float | bool) else value

    @field_validator("values", mode="before")
    @classmethod
    def _stringify_each(cls, values: Any) -> Any:
        if isinstance(values, list):
            return [str(v) if isinstance(v, int | float | bool) else v for v in values]
        return values


class TargetBody(_Body):
    target: str | None = None
    ref_id: str = Field("A", alias="refId")
    hide: bool = False
    # Plugin 0.6.x sends an object; older versions a JSON string (``data``).
    payload: dict[str, Any] | str | None = None
    data: dict[str, Any] | str | None = None


class QueryBody(_Body):
    range: RangeBody
    targets: list[TargetBody]
    # At most ten years: a step beyond that overflows millisecond grids (int64).
    interval_ms: float | None = Field(None, alias="intervalMs", gt=0, le=316_224_000_000)
    max_data_points: int | None = Field(None, alias="maxDataPoints", gt=0)
    filters: list[AdhocFilterBody] | None = None
    adhoc_filters: list[AdhocFilterBody] | None = Field(None, alias="adhocFilters")


class MetricsBody(_Body):
    metric: str | None = None
    payload: dict[str, Any] | None = None


class MetricPayloadOptionsBody(_Body):
    metric: str
    payload: dict[str, Any] = Field(default_factory=dict)
    name: str


class VariableBody(_Body):
    # 0.6.x: {"payload": {"target": "...", "variables": {...}}, "range": {...}};
    # some versions send the query string itself as ``payload``.
    payload: dict[str, Any] | str
    range: RangeBody | None = None


class TagValuesBody(_Body):
    key: str


class SearchBody(_Body):
    target: str = ""


class AnnotationSpec(_Body):
    query: str = ""
    name: str = ""


class AnnotationQueryBody(_Body):
    annotation: AnnotationSpec
    range: RangeBody
