"""The detect use case: fetch a series with enough history on its scoring grid
(``timegrid``: chosen from the series and the range, never from the panel's width),
score it (reusing cached scores), trim to the asked range, and find its anomaly
windows. Whoever asks -- a panel of any width, an annotation query, the worker --
gets the same scores and windows for the same series and range."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from plugin_backend.errors import InsufficientData, LimitExceeded
from plugin_backend.ports import SeriesSource
from plugin_backend.scoring.alarm_rate import RatePolicy
from plugin_backend.scoring.base import Detector, ScoredSeries
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.scoring.registry import DetectorFactory
from plugin_backend.scoring.windows import AnomalyWindow, WindowPolicy, find_windows, pager_policy
from plugin_backend.timegrid import (
    DEFAULT_SCRAPE_S,
    MAX_POINTS_PER_SERIES,
    ScoringGrid,
    scoring_grid,
    scoring_step,
)
from plugin_backend.types import FloatArray, Labels, TimeRange

__all__ = [
    "DetectOptions",
    "DetectionService",
    "SeriesAnomalies",
    "alarm_block_points",
    "alarm_lookback_points",
]


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
    """One series' scores over the asked range, on its scoring grid (``step_s``), and
    the anomaly windows that reach into the range."""

    labels: Labels
    scored: ScoredSeries
    windows: list[AnomalyWindow]
    step_s: float
    #: ``scored`` with the scores before the range the windows were found on.
    known: ScoredSeries


class DetectionService:
    def __init__(
        self,
        source: SeriesSource,
        *,
        cache: ScoreCache | None = None,
        max_history_points: int = MAX_POINTS_PER_SERIES,
        max_series: int = 50,
        observe_scoring: Callable[[str, float], None] | None = None,
        scrape_s: float = DEFAULT_SCRAPE_S,
        detectors: DetectorFactory | None = None,
    ) -> None:
        self.source = source
        self.cache = cache if cache is not None else ScoreCache()
        self.detectors = detectors if detectors is not None else DetectorFactory()
        self.max_history_points = max_history_points
        #: The finest scoring step (the sources' scrape interval).
        self.scrape_s = scrape_s
        self.max_series = max_series
        self.observe_scoring = observe_scoring

    def detect(
        self,
        expr: str,
        time_range: TimeRange,
        options: DetectOptions,
        *,
        floor_s: float | None = None,
    ) -> list[SeriesAnomalies]:
        """Score ``expr`` over ``time_range`` on its grid (no finer than ``floor_s``, by
        default the scrape interval) and find its windows."""
        detector = self.detectors.create(
            options.detector, sensitivity=options.sensitivity, min_deviation=options.min_deviation
        )
        policy = _policy(options)
        grid = self._grid(time_range, detector, policy, floor_s)
        step_s = grid.step_s
        found = self.source.query_range(expr, grid.fetch, step_s)
        if len(found) > self.max_series:
            raise LimitExceeded(
                f"the expression returns {len(found)} series; anomaly detection scores at most "
                f"{self.max_series} per target (PLUGIN_BACKEND_MAX_SCORED_SERIES): aggregate or "
                "filter it",
                limit="max_scored_series",
            )
        results = []
        too_short: InsufficientData | None = None
        # Scores are needed over the range and, before it, over the alarm threshold's
        # trailing window: the history before that is only the detector's context.
        # On the threshold's block grid, so ranges that start a little apart share it.
        block_s = alarm_block_points(policy, step_s) * step_s
        scored_from_s = (
            math.floor(
                (grid.view.start_s - alarm_lookback_points(policy, step_s) * step_s) / block_s
            )
            * block_s
        )
        for series in found:
            # What the scores depend on (direction and rate control only pick windows),
            # so every panel of a series shares one entry.
            key = (
                expr,
                options.detector,
                options.sensitivity,
                options.min_deviation,
                step_s,
                tuple(sorted(series.labels.items())),
            )
            needed_from = int(np.searchsorted(series.timestamps_s, scored_from_s))
            started = time.perf_counter()
            try:
                scored = self.cache.score(
                    key,
                    detector,
                    series.timestamps_s,
                    series.values,
                    step_s,
                    needed_from=needed_from,
                )
            except InsufficientData as exc:  # one short series must not blank the panel
                too_short = exc
                continue
            if self.observe_scoring is not None:
                self.observe_scoring(options.detector, time.perf_counter() - started)
            ts = scored.timestamps_s
            known = _slice(scored, int(np.searchsorted(ts, scored_from_s)))
            found_windows = find_windows(known, policy, fit_memo=self.cache.fit_memo(key))
            windows = [w for w in found_windows if w.end_s >= grid.view.start_s]
            if _never_negative(series.values):
                known = _clip_at_zero(known)
            trimmed = _slice(known, int(np.searchsorted(known.timestamps_s, grid.view.start_s)))
            results.append(SeriesAnomalies(series.labels, trimmed, windows, step_s, known))
        if not results and too_short is not None:
            raise too_short
        return results

    def grid(
        self, time_range: TimeRange, options: DetectOptions, *, floor_s: float | None = None
    ) -> ScoringGrid:
        """Where ``detect`` scores ``time_range``: the grid's step (``timegrid``: from the
        range and ``floor_s``, by default the scrape interval) and the fetched span."""
        return self._grid(
            time_range, self.detectors.create(options.detector), _policy(options), floor_s
        )

    def _grid(
        self,
        time_range: TimeRange,
        detector: Detector,
        policy: WindowPolicy,
        floor_s: float | None,
    ) -> ScoringGrid:
        step_s = scoring_step(time_range, floor_s=self.scrape_s if floor_s is None else floor_s)
        return scoring_grid(
            time_range,
            step_s,
            # History before the range lets its first alarm threshold be fitted on
            # scores with their full context; the whole fetch stays within the points
            # budget (a short range gets the most history).
            history_points=alarm_lookback_points(policy, step_s)
            + alarm_block_points(policy, step_s)
            + detector.context_points(step_s),
            max_points=self.max_history_points,
        )


def alarm_lookback_points(policy: WindowPolicy, step_s: float) -> int:
    """Scores before a range that its first alarm thresholds (and runs) are fitted on, at
    ``step_s``: the threshold's window, one block and one run, each a span of time
    (``scoring.alarm_rate``: 2,072 samples of 5 min at any step of 5 min or finer)."""
    rate = policy.rate
    if rate is None:
        return 0
    samples = rate.window_points + rate.block_points + rate.run_points
    return samples * rate.points_per_sample(step_s)


def alarm_block_points(policy: WindowPolicy, step_s: float) -> int:
    """Points in one block of the alarm threshold's refits at ``step_s``."""
    rate = policy.rate or RatePolicy()
    return rate.block_points * rate.points_per_sample(step_s)


def _policy(options: DetectOptions) -> WindowPolicy:
    """Sensitivity widens or narrows the band and scales the alarms per day the
    rate-controlled threshold allows (``scoring.alarm_rate``)."""
    return pager_policy(
        options.direction,  # type: ignore[arg-type]
        options.sensitivity,
        rate_control=options.rate_control,
    )


def _slice(scored: ScoredSeries, first: int) -> ScoredSeries:
    """``scored`` from row ``first`` on (views, not copies), an ensemble's members' rows
    too: the alarm layer fits each member's tail on its own (``scoring.alarm_rate``)."""
    members, member_expected = scored.member_scores, scored.member_expected
    return ScoredSeries(
        scored.timestamps_s[first:],
        scored.values[first:],
        scored.expected[first:],
        scored.lower[first:],
        scored.upper[first:],
        scored.score[first:],
        member_scores=None if members is None else members[:, first:],
        member_expected=None if member_expected is None else member_expected[:, first:],
    )


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
        member_scores=scored.member_scores,
        member_expected=scored.member_expected,
    )
