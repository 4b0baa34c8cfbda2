"""Parse Grafana's wire bodies into the typed queries the service takes (``queries.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from plugin_backend.datasource.catalog import validate_payload
from plugin_backend.datasource.step import align_range, choose_step
from plugin_backend.datasource.wire import AdhocFilterBody, QueryBody, RangeBody, TargetBody
from plugin_backend.errors import InvalidTarget, InvalidTimeRange, LimitExceeded, RequestError
from plugin_backend.promql import Matcher, matcher_from_filter
from plugin_backend.queries import PanelQuery, TargetQuery
from plugin_backend.timegrid import MAX_POINTS_PER_SERIES
from plugin_backend.types import TimeRange

__all__ = [
    "QueryLimits",
    "parse_body",
    "parse_panel_query",
    "to_time_range",
]

BodyT = TypeVar("BodyT", bound=BaseModel)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_targets: int = 50
    max_points_per_series: int = MAX_POINTS_PER_SERIES
    max_promql_length: int = 20_000


def parse_body(model: type[BodyT], body: Any) -> BodyT:
    """Validate a decoded JSON body, turning pydantic errors into one ``RequestError``."""
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {_json_type(body)}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestError(_describe_validation(exc)) from None


def to_time_range(body: RangeBody) -> TimeRange:
    start_s, end_s = _epoch_s(body.from_), _epoch_s(body.to)
    if end_s <= start_s:
        raise InvalidTimeRange(
            f"range.to ({body.to.isoformat()}) must be after range.from ({body.from_.isoformat()})"
        )
    return TimeRange(start_s, end_s)


def _epoch_s(value: datetime) -> float:
    """Unix seconds of any datetime pydantic accepts (years 1 to 9999); naive means UTC
    (``datetime.timestamp`` would read it as server-local time, and fail near year 1)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH).total_seconds()


def parse_panel_query(body: Any, limits: QueryLimits) -> PanelQuery:
    query = parse_body(QueryBody, body)
    time_range = to_time_range(query.range)
    visible = [t for t in query.targets if not t.hide and (t.target or "").strip()]
    if len(visible) > limits.max_targets:
        raise LimitExceeded(
            f"{len(visible)} targets in one query; the limit is {limits.max_targets} "
            "(PLUGIN_BACKEND_MAX_TARGETS)",
            limit="max_targets",
        )
    step_s = choose_step(
        time_range,
        interval_ms=query.interval_ms,
        max_data_points=query.max_data_points,
        max_points=limits.max_points_per_series,
    )
    payloads = [(t, _payload(t, i)) for i, t in enumerate(visible)]
    for target, payload in payloads:
        expr = payload.get("expr")
        if isinstance(expr, str) and len(expr) > limits.max_promql_length:
            raise LimitExceeded(
                f"targets[{target.ref_id}].payload.expr is {len(expr)} characters long; the "
                f"limit is {limits.max_promql_length} (PLUGIN_BACKEND_MAX_PROMQL_LENGTH)",
                limit="max_promql_length",
            )
    filters = tuple(_filter(f) for f in (query.filters or query.adhoc_filters or []))
    targets = tuple(_typed(target, payload) for target, payload in payloads)
    return PanelQuery(align_range(time_range, step_s), step_s, targets, filters)


def _typed(body: TargetBody, payload: dict[str, Any]) -> TargetQuery:
    kind = (body.target or "").strip()
    return TargetQuery(body.ref_id, kind, validate_payload(kind, body.ref_id, payload))


def _payload(body: TargetBody, index: int) -> dict[str, Any]:
    """The target's options as an object (older plugins send a JSON string)."""
    raw = body.payload if body.payload not in (None, "", {}) else body.data
    payload: dict[str, Any]
    if raw is None or raw == "":
        payload = {}
    elif isinstance(raw, str):
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidTarget(f"targets[{index}].payload is not valid JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise InvalidTarget(f"targets[{index}].payload must be a JSON object")
        payload = decoded
    else:
        payload = raw
    return payload


def _filter(body: AdhocFilterBody) -> Matcher:
    return matcher_from_filter(body.key, body.operator, body.value, body.values)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        loc = loc.replace("from_", "from")
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    suffix = f" (and {more} more)" if more > 0 else ""
    return "invalid request: " + "; ".join(parts) + suffix


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return type(value).__name__
