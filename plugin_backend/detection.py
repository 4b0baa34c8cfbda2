"""The detect use case: fetch a series with enough history, score it (reusing
cached scores), trim to the asked range, and find its anomaly windows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from plugin_backend.datasource.step import align_range, points_in
from plugin_backend.errors import InsufficientData, LimitExceeded
from plugin_backend.ports import SeriesSource
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.scoring.registry import get_detector
from plugin_backend.scoring.windows import AnomalyWindow, find_windows, pager_policy
from plugin_backend.types import FloatArray, Labels, TimeRange

__all__ = ["DetectOptions", "DetectionService", "SeriesAnomalies"]


@dataclass(frozen=True, slots=True)
class DetectOptions:
    detector: str
    direction: str = "both"
    sensitivity: float = 1.0
    min_deviation: float = 0.0
    #: False: page at the band's edge instead of the rate-controlled threshold.
    rate_control: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class SeriesAnomalies:
    labels: Labels
    scored: ScoredSeries
    windows: list[AnomalyWindow]


class DetectionService:
    def __init__(
        self,
        source: SeriesSource,
        *,
        cache: ScoreCache | None = None,
        max_history_points: int = 11_000,
        max_series: int = 50,
        observe_scoring: Callable[[str, float], None] | None = None,
    ) -> None:
        self.source = source
        self.cache = cache if cache is not None else ScoreCache()
        self.max_history_points = max_history_points
        self.max_series = max_series
        self.observe_scoring = observe_scoring

    def detect(
        self, expr: str, time_range: TimeRange, step_s: float, options: DetectOptions
    ) -> list[SeriesAnomalies]:
        detector = get_detector(
            options.detector, sensitivity=options.sensitivity, min_deviation=options.min_deviation
        )
        # History before the range lets the first panel point be scored; the whole fetch
        # stays within the points budget (a short panel gets the most history).
        budget = self.max_history_points - points_in(time_range, step_s)
        history = max(min(detector.context_points(step_s), budget), 0)
        fetch = align_range(
            TimeRange(time_range.start_s - history * step_s, time_range.end_s), step_s
        )
        found = self.source.query_range(expr, fetch, step_s)
        if len(found) > self.max_series:
            raise LimitExceeded(
                f"the expression returns {len(found)} series; anomaly detection scores at most "
                f"{self.max_series} per target (PLUGIN_BACKEND_MAX_SCORED_SERIES): aggregate or "
                "filter it",
                limit="max_scored_series",
            )
        # Sensitivity widens or narrows the band and scales the alarms per day the
        # rate-controlled threshold allows (``scoring.alarm_rate``).
        policy = pager_policy(
            options.direction,  # type: ignore[arg-type]
            options.sensitivity,
            rate_control=options.rate_control,
        )
        results = []
        too_short: InsufficientData | None = None
        for series in found:
            key = (expr, options, step_s, tuple(sorted(series.labels.items())))
            started = time.perf_counter()
            try:
                scored = self.cache.score(key, detector, series.timestamps_s, series.values, step_s)
            except InsufficientData as exc:  # one short series must not blank the panel
                too_short = exc
                continue
            if self.observe_scoring is not None:
                self.observe_scoring(options.detector, time.perf_counter() - started)
            in_range = scored.timestamps_s >= time_range.start_s
            trimmed = ScoredSeries(*(getattr(scored, f)[in_range] for f in _FIELDS))
            if _never_negative(series.values):
                trimmed = _clip_at_zero(trimmed)
            found_windows = find_windows(scored, policy, fit_memo=self.cache.fit_memo(key))
            windows = [w for w in found_windows if w.end_s >= time_range.start_s]
            results.append(SeriesAnomalies(series.labels, trimmed, windows))
        if not results and too_short is not None:
            raise too_short
        return results


_FIELDS = ("timestamps_s", "values", "expected", "lower", "upper", "score")


def _never_negative(values: FloatArray) -> bool:
    """Whether a series never went below zero in its fetched history (latencies, rates,
    counts): its band then stays non-negative too."""
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(finite.min() >= 0.0)


def _clip_at_zero(scored: ScoredSeries) -> ScoredSeries:
    """The band and expected value floored at zero. Scores are unchanged: a value that is
    never negative cannot fall below a lower edge of zero or less."""
    return ScoredSeries(
        scored.timestamps_s,
        scored.values,
        np.maximum(scored.expected, 0.0),
        np.maximum(scored.lower, 0.0),
        np.maximum(scored.upper, 0.0),
        scored.score,
    )
