"""Use cases behind the Grafana datasource endpoints.

Receives its ports in the constructor; knows nothing of HTTP or JSON.
Detection (``detection.py``) and root cause (``explain.py``) are use cases of their own;
the worker's are in ``watch.py``, ``alert_handling.py`` and ``delivery.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugin_backend.detection import DetectionService, DetectOptions, SeriesAnomalies
from plugin_backend.errors import InvalidQuery, InvalidTarget
from plugin_backend.incidents import Incident
from plugin_backend.ports import IncidentReader, SeriesSource
from plugin_backend.promql import (
    Matcher,
    inject_matchers,
    is_valid_label_name,
    is_valid_metric_name,
    parse_selector,
)
from plugin_backend.queries import (
    AnomalyPayload,
    ExprPayload,
    IncidentsPayload,
    PanelQuery,
    TargetQuery,
    VariableQuery,
)
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.timegrid import resample
from plugin_backend.types import Series, TimeRange

__all__ = ["ActiveRegion", "DatasourceService", "TargetResult"]

MAX_OPTIONS = 1000


@dataclass(frozen=True, slots=True)
class TargetResult:
    """Raw series (``promql``), scored series with their windows (anomaly kinds), or
    stored incidents (``incidents``)."""

    target: TargetQuery
    series: list[Series] = field(default_factory=list)
    anomalies: list[SeriesAnomalies] = field(default_factory=list)
    #: Each of ``anomalies``' scored series at the panel's step (windows stay on the grid).
    shown: list[ScoredSeries] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ActiveRegion:
    """A run of non-zero points of a series (legacy annotation queries)."""

    series: Series
    start_s: float
    end_s: float


class DatasourceService:
    def __init__(
        self,
        source: SeriesSource,
        detection: DetectionService | None = None,
        incidents: IncidentReader | None = None,
        *,
        max_incidents: int = 500,
        default_rate_control: bool = True,
    ) -> None:
        self.source = source
        #: The alarms of an anomaly target that leaves ``rate_control`` to the server.
        self.default_rate_control = default_rate_control
        self.detection = detection if detection is not None else DetectionService(source)
        self.incidents = incidents
        self.max_incidents = max_incidents

    # --- query editor -------------------------------------------------------
    def metric_names(self) -> list[str]:
        """Metric names for the builder's select box (at most ``MAX_OPTIONS``)."""
        return self.source.label_values("__name__")[:MAX_OPTIONS]

    def label_matchers(self, metric: str) -> list[str]:
        """``label="value"`` matchers of the series of ``metric`` (at most ``MAX_OPTIONS``)."""
        if not metric:
            return []
        pairs = sorted(
            {
                (k, v)
                for labels in self.source.series([_selector(metric, [])])
                for k, v in labels.items()
                if k != "__name__"
            }
        )
        return [str(Matcher(k, "=", v)) for k, v in pairs[:MAX_OPTIONS]]

    # --- panels ---------------------------------------------------------------
    def run_query(self, query: PanelQuery) -> list[TargetResult]:
        results = []
        for target in query.targets:
            options = target.options
            if isinstance(options, IncidentsPayload):
                found_incidents = self._incidents(options, query.time_range)
                results.append(TargetResult(target, incidents=found_incidents))
                continue
            expr = inject_matchers(promql_of(options, target.ref_id), query.filters)
            if isinstance(options, AnomalyPayload):
                detect = DetectOptions(
                    options.detector,
                    options.direction,
                    options.sensitivity,
                    options.min_deviation,
                    rate_control=(
                        self.default_rate_control
                        if options.rate_control is None
                        else options.rate_control
                    ),
                )
                # Scored on the series' grid whatever the panel's step; drawn at the latter.
                found = self.detection.detect(expr, query.time_range, detect)
                shown = [resample(a.known, query.time_range, query.step_s) for a in found]
                results.append(TargetResult(target, anomalies=found, shown=shown))
            else:
                series = self.source.query_range(expr, query.time_range, query.step_s)
                results.append(TargetResult(target, series=series))
        return results

    def _incidents(self, options: IncidentsPayload, time_range: TimeRange) -> list[Incident]:
        if self.incidents is None:
            raise InvalidTarget("the incidents kind needs the store (PLUGIN_BACKEND_STORE_URL)")
        return self.incidents.list_incidents(
            rule=options.rule or None,
            service=options.service or None,
            status=None if options.status == "all" else options.status,
            since_s=time_range.start_s,
            until_s=time_range.end_s,
            limit=self.max_incidents,
        )

    def annotation_regions(
        self, expr: str, time_range: TimeRange, step_s: float
    ) -> list[ActiveRegion]:
        """Each run of non-zero values becomes a region (Prometheus datasource semantics)."""
        if not expr.strip():
            raise InvalidTarget("annotation.query: a PromQL expression is required")
        regions = []
        for series in self.source.query_range(expr, time_range, step_s):
            regions += [
                ActiveRegion(series, start, end)
                for start, end in active_runs(series.timestamps_s, series.values, step_s)
            ]
        return sorted(regions, key=lambda r: r.start_s)

    # --- variables and ad-hoc filters -------------------------------------------
    def variable_values(self, query: VariableQuery, time_range: TimeRange | None) -> list[str]:
        matchers = [query.selector] if query.selector else []
        if query.function == "label_values":
            if matchers and time_range is not None:
                # The series API filters by chunk time; label-values only by block,
                # so a deploy's old version would linger for the whole block.
                found = self.source.series(matchers, time_range)
                return sorted({labels[query.label] for labels in found if query.label in labels})
            return self.source.label_values(query.label, matchers, time_range)
        if query.function == "label_names":
            return self.source.labels(matchers, time_range)
        names = self.source.label_values("__name__", (), time_range)
        pattern = re.compile(query.regex)
        return [n for n in names if pattern.search(n)]

    def tag_keys(self) -> list[str]:
        return [k for k in self.source.labels() if k != "__name__"]

    def tag_values(self, key: str) -> list[str]:
        if not is_valid_label_name(key):
            raise InvalidTarget(f"{key!r} is not a valid label name")
        return self.source.label_values(key)

    def search_metrics(self, target: str) -> list[str]:
        names = self.source.label_values("__name__")
        needle = target.strip()
        return [n for n in names if needle in n][:MAX_OPTIONS] if needle else names[:MAX_OPTIONS]

    def check_ready(self, timeout_s: float) -> None:
        self.source.check_ready(timeout_s)


def promql_of(options: ExprPayload, ref_id: str) -> str:
    """The expression a ``promql`` target asks for: ``expr``, else the builder's pick."""
    if options.expr.strip():
        return options.expr
    if options.metric:
        return _selector(options.metric, options.matchers)
    raise InvalidTarget(
        f"target {ref_id}: payload.expr is empty: enter a PromQL expression or pick a metric. "
        "If you typed an expression in code mode, the payload was not valid JSON or held "
        'null, and the plugin sent {} instead: write it as a JSON object, e.g. {"expr": "up"}'
    )


def _selector(metric: str, matchers: Sequence[str]) -> str:
    if not is_valid_metric_name(metric):
        raise InvalidTarget(f"{metric!r} is not a valid metric name")
    parsed: list[Matcher] = []
    for text in matchers:
        try:
            _, found = parse_selector("{" + text + "}")
        except InvalidQuery as exc:
            raise InvalidTarget(f"label filter {text!r} is not a matcher: {exc.message}") from None
        parsed += found
    if not parsed:
        return metric
    return metric + "{" + ", ".join(str(m) for m in parsed) + "}"


def active_runs(
    timestamps_s: np.ndarray[Any, np.dtype[np.float64]],
    values: np.ndarray[Any, np.dtype[np.float64]],
    step_s: float,
) -> list[tuple[float, float]]:
    """(start, end) of each run of finite non-zero values; a gap over one step ends a run."""
    active = np.isfinite(values) & (values != 0)
    runs: list[tuple[float, float]] = []
    start: float | None = None
    last = -math.inf
    for ts, on in zip(timestamps_s.tolist(), active.tolist(), strict=True):
        if on and start is not None and ts - last > step_s * 1.5:
            runs.append((start, last))
            start = None
        if on:
            start = ts if start is None else start
            last = ts
        elif start is not None:
            runs.append((start, last))
            start = None
    if start is not None:
        runs.append((start, last))
    return runs
