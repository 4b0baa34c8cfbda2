"""The time grid anomalies are scored on, and the step a panel is drawn at.

Scores, bands and windows depend on the step a series is evaluated at. If that step
came from the panel (``intervalMs``, ``maxDataPoints``: the browser's width), the same
anomaly would get one window in a wide panel, another in the annotation query and a
third in the worker's incident. So anomalies are scored on one grid per series and
range, whatever the client asks for:

* **Step** (``scoring_step``): the finest step of ``LADDER_S`` that is not finer than
  the series' scrape interval (``floor_s``, Prometheus' default 15 s unless the caller
  knows better, e.g. a rule's ``step``) and puts at most ``MAX_VIEW_POINTS`` points in
  the range: 15 s up to a day and a half, 1 min for a week, 5 min for a month. Every
  ladder step divides the next coarser ones and the anchor, so grids nest.
* **Points** (``align_range``): multiples of the step since the epoch, so every request
  on the same grid gets the same timestamps.
* **History** (``fetch_range``): the history fetched before the range starts on an
  absolute ``ANCHOR_S`` boundary, so requests whose range ends in the same anchor
  period (a dashboard's panels, its annotation query, a worker cycle at about the same
  time) fetch, and so score, exactly the same points. (A detector whose memory the
  budget cuts short -- the default's weekly season at 15 s -- scores a point a little
  differently once the start moves on; a process's score cache keeps what it scored.)

Panels then get the scored series at their own step (``resample``): a score panel
shows each bucket's highest score, so it never hides a point the windows table lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from plugin_backend.errors import LimitExceeded
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.types import TimeRange

__all__ = [
    "ANCHOR_S",
    "DEFAULT_SCRAPE_S",
    "LADDER_S",
    "MAX_POINTS_PER_SERIES",
    "MAX_VIEW_POINTS",
    "ScoringGrid",
    "align_range",
    "fetch_range",
    "points_in",
    "resample",
    "scoring_grid",
    "scoring_step",
]

#: Scoring steps, seconds. Each divides every coarser one up to an hour, and 6 h.
LADDER_S = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    21_600.0,
    43_200.0,
    86_400.0,
)
#: Prometheus' default ``scrape_interval``: no finer grid unless told otherwise.
DEFAULT_SCRAPE_S = 15.0
#: Most points a scored range may hold: 24 h at 15 s (5,761) and 7 d at 1 min
#: (10,081) fit, as in ``python -m benchmarks scoring``.
MAX_VIEW_POINTS = 11_000
#: Most points of one series a query fetches (``PLUGIN_BACKEND_MAX_POINTS_PER_SERIES``'s
#: default): the range and the history before it. 8.7 days at 15 s hold a 6 h panel, the
#: alarm threshold's 3.5 days before it and the default detector's context.
MAX_POINTS_PER_SERIES = 50_000
#: Fetched history starts on a multiple of this (or of the step, when coarser).
ANCHOR_S = 21_600.0


@dataclass(frozen=True, slots=True)
class ScoringGrid:
    """Where to score: the step, the range on the grid, and what to fetch for it."""

    step_s: float
    view: TimeRange  # the asked range, its start snapped down onto the grid
    fetch: TimeRange  # view plus the history before it (start anchored)

    @property
    def history_points(self) -> int:
        return round((self.view.start_s - self.fetch.start_s) / self.step_s)


def scoring_step(time_range: TimeRange, *, floor_s: float = DEFAULT_SCRAPE_S) -> float:
    """The finest ladder step ``>= floor_s`` giving at most ``MAX_VIEW_POINTS`` points
    over ``time_range`` (``floor_s`` itself when it is not a ladder step but fits)."""
    if not (math.isfinite(floor_s) and floor_s > 0):
        raise ValueError(f"floor_s must be a positive number of seconds, got {floor_s}")
    candidates = [floor_s, *(s for s in LADDER_S if s > floor_s)]
    for step_s in candidates:
        if points_in(time_range, step_s) <= MAX_VIEW_POINTS:
            return step_s
    raise LimitExceeded(
        f"a range of {time_range.duration_s / 86_400:.0f} days is too long to score "
        f"(more than {MAX_VIEW_POINTS} points at a one-day step): shorten it",
        limit="max_points_per_series",
    )


def scoring_grid(
    time_range: TimeRange, step_s: float, *, history_points: int, max_points: int
) -> ScoringGrid:
    """``time_range`` on the grid of ``step_s`` (``scoring_step``), with up to
    ``history_points`` points of history before it, at most ``max_points`` in all."""
    view = align_range(time_range, step_s)
    fetch = fetch_range(view, step_s, history_points=history_points, max_points=max_points)
    return ScoringGrid(step_s, view, fetch)


def fetch_range(
    view: TimeRange, step_s: float, *, history_points: int, max_points: int
) -> TimeRange:
    """``view`` (start on the grid) plus the history before it: ``history_points``
    points where the budget of ``max_points`` allows, else as many whole anchor periods
    as fit before the anchor period the view ends in. Either way the start is an anchor
    boundary, so it stays put while the range's end moves within one anchor period."""
    anchor = float(math.lcm(round(ANCHOR_S), round(step_s))) if step_s >= 1 else ANCHOR_S
    wanted = math.floor((view.start_s - max(history_points, 0) * step_s) / anchor) * anchor
    # Whole anchor periods that fit the budget with the current, partial one.
    periods = math.floor((max_points - 1) * step_s / anchor) - 1
    if periods >= 0:
        earliest = math.floor(view.end_s / anchor) * anchor - periods * anchor
    else:  # a budget shorter than two anchor periods: as much as fits, unanchored
        earliest = math.ceil((view.end_s - (max_points - 1) * step_s) / step_s) * step_s
    return TimeRange(min(max(wanted, earliest), view.start_s), view.end_s)


def points_in(time_range: TimeRange, step_s: float) -> int:
    """Number of evaluation points Prometheus produces for this range and step."""
    return math.floor(time_range.duration_s / step_s + 1e-9) + 1


def align_range(time_range: TimeRange, step_s: float) -> TimeRange:
    """Snap the start down onto the step grid, as Grafana's Prometheus datasource does,
    so refreshed panels ask for (and get) the same timestamps."""
    start_s = math.floor(time_range.start_s / step_s) * step_s
    return TimeRange(start_s, time_range.end_s)


def resample(scored: ScoredSeries, time_range: TimeRange, step_s: float) -> ScoredSeries:
    """``scored`` drawn at a panel's ``step_s`` over ``time_range`` (start on the panel's
    grid). Each panel point ``t`` stands for the grid points after the previous panel
    point, up to and including ``t`` (as Prometheus answers the latest sample): it
    shows the latest of them (value, expected value and band) with the highest score
    among them, so a score panel never hides a point the windows table lists. Grid
    points before ``time_range`` fill the first panel point; panel points with no grid
    point are left out. A step no coarser than the grid's keeps the grid's points."""
    ts = scored.timestamps_s
    if ts.size < 2 or step_s <= float(np.median(np.diff(ts))) + 1e-9:
        within = (ts >= time_range.start_s) & (ts <= time_range.end_s)
        return _take(scored, np.flatnonzero(within))
    start = math.floor(time_range.start_s / step_s) * step_s
    # Bucket k holds grid points in (start + (k - 1) * step, start + k * step].
    bucket = np.ceil((ts - start) / step_s - 1e-9).astype(np.int64)
    inside = np.flatnonzero((bucket >= 0) & (start + bucket * step_s <= time_range.end_s + 1e-9))
    if inside.size == 0:
        return _take(scored, inside)
    bucket = bucket[inside]
    firsts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    lasts = np.r_[firsts[1:], bucket.size] - 1
    latest = _take(scored, inside[lasts])
    with np.errstate(invalid="ignore"):  # an all-NaN bucket stays NaN
        peak = np.fmax.reduceat(scored.score[inside], firsts)
    return ScoredSeries(
        (start + bucket[firsts] * step_s).astype(np.float64),
        latest.values,
        latest.expected,
        latest.lower,
        latest.upper,
        np.asarray(peak, dtype=np.float64),
    )


def _take(scored: ScoredSeries, at: np.ndarray) -> ScoredSeries:
    return ScoredSeries(
        *(
            getattr(scored, f)[at]
            for f in ("timestamps_s", "values", "expected", "lower", "upper", "score")
        )
    )
