"""The detector interface: a template method that validates input, asks the
subclass for a causal expected band, and turns the band into scores.

Conventions every detector keeps:

* **Causal**: ``band.expected[i]``, ``lower[i]``, ``upper[i]`` depend only on
  ``values[:i]`` (strictly earlier points) and timestamps up to ``i``. So the
  score of point ``i`` uses data up to ``i`` — what a live system knows.
* **Bounded memory**: nothing before ``i - context_points(step_s)`` influences
  point ``i`` (the band's ``history_points`` plus the score calibration's
  window); a cache may rescore only a tail with that much context.
* **Score**: ``0`` on the expected value, ``1`` on the band edge, ``> 1`` outside
  (alert rules stay ``> 1``). NaN where the value or the band is unknown
  (missing points, warm-up).
* **Views**: a detector may judge each point against several bands (``_views``,
  e.g. the transformer's forecast from the latest points and the one made a block
  earlier). The score is the largest against any of them, and the band reported
  is their overlap, so ``score <= 1`` still means inside the band shown. The
  calibration below widens all views by one factor, set on that combined score.
* **Calibrated to the series' habits**: if more than 1% of a series' last
  ``SCORE_CAL_WINDOW`` scores would page at once (``>= SCORE_CAL_EXCESS``, the
  window policy's instant threshold), its band is habitually too narrow — spikes
  are normal there — and is widened until that quantile lands on the threshold.
  Series whose band fits are untouched. (Measured on NAB dev corpora: the
  artificial corpus' spiky series stop paging on every spike; across settings of
  the three constants +-30% the gain holds.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from plugin_backend.errors import InsufficientData, InvalidTarget
from plugin_backend.types import FloatArray

__all__ = [
    "SCORE_CAL_WINDOW",
    "Band",
    "Detector",
    "ScoredSeries",
    "band_score",
    "calibrated_score",
    "check_int",
    "intersect_bands",
    "median_step_s",
    "score_divisor",
]

SCORE_CAL_WINDOW = 2000
SCORE_CAL_QUANTILE = 0.99
SCORE_CAL_MIN_POINTS = 100
SCORE_CAL_EXCESS = 3.0  # = WindowPolicy.instant_threshold


@dataclass(frozen=True, slots=True, eq=False)
class Band:
    """Expected value and the band around it, per point (NaN where unknown)."""

    expected: FloatArray
    lower: FloatArray
    upper: FloatArray


@dataclass(frozen=True, slots=True, eq=False)
class ScoredSeries:
    timestamps_s: FloatArray
    values: FloatArray
    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    #: An ensemble's members' own scores, one row per member (``scoring.ensemble``):
    #: the alarm layer then fits each member's tail on its own (``scoring.alarm_rate``).
    member_scores: FloatArray | None = None
    #: ... and their own expected values, which a refresh hands back to each member.
    member_expected: FloatArray | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])


def band_score(
    values: FloatArray, band: Band, *, sensitivity: float = 1.0, min_deviation: float = 0.0
) -> tuple[Band, FloatArray]:
    """Scale the band by ``sensitivity`` (2 = half as wide), floor each half-width at
    ``min_deviation`` (absolute units), and score each point against it."""
    expected = band.expected
    above = np.maximum(band.upper - expected, 0.0) / sensitivity
    below = np.maximum(expected - band.lower, 0.0) / sensitivity
    tiny = np.finfo(np.float64).eps * np.maximum(np.abs(expected), 1.0)
    above = np.maximum(above, max(min_deviation, 0.0)) + tiny
    below = np.maximum(below, max(min_deviation, 0.0)) + tiny
    deviation = values - expected
    with np.errstate(invalid="ignore"):
        score = np.where(deviation >= 0, deviation / above, -deviation / below)
    return Band(expected, expected - below, expected + above), score


def intersect_bands(bands: list[Band]) -> Band:
    """Where every band agrees: the highest lower and the lowest upper edge, so a
    point scores <= 1 against all of them exactly when it lies inside. Expected is the
    first band's, clipped into the intersection; where the bands do not overlap
    (just after a level shift, when a slower view still expects the old level),
    both edges collapse onto it."""
    expected = bands[0].expected
    lower = np.stack([b.lower for b in bands])
    upper = np.stack([b.upper for b in bands])
    known = np.isfinite(lower) & np.isfinite(upper)
    # A view without a band yet (warm-up) does not narrow the others.
    lo = np.max(np.where(known, lower, -np.inf), axis=0)
    hi = np.min(np.where(known, upper, np.inf), axis=0)
    any_known = known.any(axis=0)
    lo = np.where(any_known, lo, np.nan)
    hi = np.where(any_known, hi, np.nan)
    expected = np.where(np.isfinite(expected), expected, (lo + hi) / 2)
    overlap = lo <= hi
    centre = np.where(overlap, np.clip(expected, lo, hi), expected)
    return Band(centre, np.where(overlap, lo, centre), np.where(overlap, hi, centre))


def calibrated_score(values: FloatArray, bands: list[Band]) -> FloatArray:
    """The score at sensitivity 1 against several views, after the habitual-spike
    calibration: what ``Detector.score`` gives with default options."""
    unit_score = _combined_score(values, bands)
    return unit_score / score_divisor(unit_score)


def _combined_score(values: FloatArray, bands: list[Band]) -> FloatArray:
    """The largest of a point's scores against each band (NaN where none knows)."""
    score = band_score(values, bands[0])[1]
    for band in bands[1:]:
        score = np.fmax(score, band_score(values, band)[1])
    return score


def score_divisor(
    score: FloatArray,
    *,
    window: int = SCORE_CAL_WINDOW,
    q: float = SCORE_CAL_QUANTILE,
    min_points: int = SCORE_CAL_MIN_POINTS,
    excess: float = SCORE_CAL_EXCESS,
    chunk: int = 512,
) -> FloatArray:
    """Causal per-point divisor >= 1: ``max(1, Q_q(score[i-window:i]) / excess)``,
    ``Q_q`` the k-th largest finite trailing score, ``k = ceil((1 - q) * count)``.
    Only series with at least ``k`` trailing scores above ``excess`` pay for a sort."""
    n = score.shape[0]
    out = np.ones(n)
    finite = np.isfinite(score)
    big = np.where(finite & (score > excess), score, 0.0)
    count_finite = np.concatenate([[0], np.cumsum(finite)])
    count_big = np.concatenate([[0], np.cumsum(big > 0)])
    i = np.arange(n)
    lo = np.maximum(i - window, 0)
    n_finite, n_big = count_finite[i] - count_finite[lo], count_big[i] - count_big[lo]
    k = np.ceil((1 - q) * n_finite - 1e-9).astype(np.int64)
    need = np.flatnonzero((n_finite >= min_points) & (k >= 1) & (n_big >= k))
    padded = np.concatenate([np.zeros(window), big])
    rows_view = sliding_window_view(padded, window)  # row i = big[i - window : i]
    for start in range(0, need.size, chunk):
        rows = need[start : start + chunk]
        kth = -np.partition(-rows_view[rows], k[rows].max() - 1, axis=1)
        ordered = -np.sort(-kth[:, : k[rows].max()], axis=1)
        out[rows] = ordered[np.arange(rows.size), k[rows] - 1] / excess
    return np.maximum(out, 1.0)


def check_int(name: str, value: object, low: int, high: int) -> int:
    """A detector option that must be an integer in ``[low, high]`` (``InvalidTarget``
    naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidTarget(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise InvalidTarget(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def median_step_s(timestamps_s: FloatArray) -> float:
    """The typical sampling interval (robust to gaps)."""
    if timestamps_s.shape[0] < 2:
        return 0.0
    return float(np.median(np.diff(timestamps_s)))


class Detector(ABC):
    """Base class: subclasses implement ``_band`` (and ``history_points``)."""

    name: ClassVar[str]
    #: Finite points needed before the first point can be scored.
    min_points: ClassVar[int] = 8

    def __init__(self, *, sensitivity: float = 1.0, min_deviation: float = 0.0) -> None:
        if not sensitivity > 0:
            raise InvalidTarget(f"sensitivity must be > 0, got {sensitivity}")
        if min_deviation < 0:
            raise InvalidTarget(f"min_deviation must be >= 0, got {min_deviation}")
        self.sensitivity = float(sensitivity)
        self.min_deviation = float(min_deviation)

    def score(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> ScoredSeries:
        """Score every point; with ``needed_from`` the caller (a cache) only needs points
        from that index on, and a detector may leave earlier ones NaN to save time.
        ``prior_expected`` (NaN where unknown) holds expected values already computed
        for these points, which block forecasters may reuse instead of refitting (with
        several views, the shown ones: only single-view detectors may rely on it)."""
        ts = np.asarray(timestamps_s, dtype=np.float64)
        vs = np.asarray(values, dtype=np.float64)
        if ts.ndim != 1 or ts.shape != vs.shape:
            raise InvalidTarget(f"timestamps {ts.shape} and values {vs.shape} must be equal 1-D")
        if ts.size and not np.all(np.isfinite(ts)):
            raise InvalidTarget("timestamps must be finite")
        if ts.size > 1 and not np.all(np.diff(ts) > 0):
            raise InvalidTarget("timestamps must be strictly increasing")
        finite = int(np.count_nonzero(np.isfinite(vs)))
        if finite < self.min_points:
            raise InsufficientData(self.min_points, finite)
        clean = np.where(np.isfinite(vs), vs, np.nan)
        # The score calibration looks back SCORE_CAL_WINDOW points before needed_from.
        views = self._views(
            ts,
            clean,
            needed_from=max(needed_from - SCORE_CAL_WINDOW, 0),
            prior_expected=prior_expected,
        )
        # Calibrate at sensitivity 1 on the combined score (so at most ~1% of points
        # page at once however many views), then apply the user's sensitivity and
        # floor, so both keep their meaning on series the calibration widened.
        divisor = score_divisor(_combined_score(clean, views))
        finals: list[Band] = []
        score = np.full(clean.shape[0], np.nan)
        for view in views:
            unit = band_score(clean, view)[0]
            e = unit.expected
            widened = Band(e, e - (e - unit.lower) * divisor, e + (unit.upper - e) * divisor)
            final, view_score = band_score(
                clean, widened, sensitivity=self.sensitivity, min_deviation=self.min_deviation
            )
            finals.append(final)
            score = np.fmax(score, view_score)
        shown = finals[0] if len(finals) == 1 else intersect_bands(finals)
        return ScoredSeries(ts, clean, shown.expected, shown.lower, shown.upper, score)

    def context_points(self, step_s: float) -> int:
        """Earlier points that influence one point's score: band history + calibration."""
        return self.history_points(step_s) + SCORE_CAL_WINDOW

    def _views(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> list[Band]:
        """The bands each point is judged against (the first is the primary one).
        A point is out of band when it is outside any of them: its score is the
        largest of its scores against each. Default: the one band of ``_band``."""
        return [
            self._band(timestamps_s, values, needed_from=needed_from, prior_expected=prior_expected)
        ]

    def _slowest_view(
        self, timestamps_s: FloatArray, values: FloatArray, *, needed_from: int = 0
    ) -> Band:
        """The view that follows the latest points least (the last of ``_views``);
        what a detector lends an ensemble."""
        return self._views(timestamps_s, values, needed_from=needed_from)[-1]

    @abstractmethod
    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        """Causal expected band; ``values`` has NaN where points are missing. Points
        before ``needed_from`` may be left NaN (their band is already known), and
        finite ``prior_expected`` values may be used as the expected values."""

    @abstractmethod
    def history_points(self, step_s: float) -> int:
        """How many earlier points can influence one point's band at this step."""
