"""Classical, causal baselines: rolling robust z-score, block-refitted STL and a
robust Holt-Winters recursion.

All three follow :mod:`plugin_backend.scoring.base`: ``band[i]`` uses only
``values[:i]`` (and timestamps up to ``i``), nothing older than
``history_points(step_s)`` points matters, and the band is calibrated from the
detector's own past so that ~99% of ordinary points score ``<= 1``.

Band calibration (shared)
-------------------------
``half-width = max(BAND_K * sigma, floor)``. ``sigma`` is a robust scale of the
detector's own past residuals ``|value - expected|`` (for ``RobustZ``: of the
deviations from the window median): ``max(1.4826 * median, q75 / 1.150)``.
Both terms equal the standard deviation for Gaussian noise; the median (a MAD
taken about zero, so a systematic forecast bias widens the band too) ignores up
to half outliers, the 75% quantile keeps the band open where most residuals are
exactly zero (idle or quantised series) and still ignores an incident filling a
quarter of the window (a 90% quantile did not: one 30-minute incident in the
last five hours doubled the band for hours after it).

The residuals come from the trailing ``scale_window`` points or, once a daily
period is known and two earlier days exist, from the same hour (+-1 h) of the
last four days plus the last 2 h: busy hours get a wider band than quiet nights.

``BAND_K = 3.5`` (the 99.95% point of a Gaussian) is chosen for *ordinary*
metrics, whose tails are heavier. Measured share of points with score <= 1 on
20k points of pure noise: Gaussian 99.85-99.94%, Student-t(5) 99.0-99.3%,
Laplace 99.1-99.3%; on the NAB traffic series, outside labelled windows,
97.2-100% (the spiky travel-time sensors lowest; unlabelled incidents
included). ``sensitivity`` rescales it.

``floor`` keeps the band from collapsing on flat or quantised series: the
largest of (a) half the smallest change between consecutive points in the
trailing window that is above float noise (the series' quantum: a move of ``k``
quanta scores ``2k`` instead of ~1e6), (b) ``REL_FLOOR`` (1e-6) times the
magnitude of the expected value and (c) ``ABS_FLOOR``. A flat line with one
blip thus scores far above 1 at the blip while float noise (~1e-12 relative)
stays far below 1.

Time grid (STL and Holt-Winters)
--------------------------------
The step is the median interval of the input (the query step: Prometheus range
results are regular, missing samples only leave holes). Each point sits on the
absolute grid cell ``round(t / step)``, so missing timestamps and NaN values
look the same (a hole) and block boundaries fall on the same instants whatever
the query start, which is what lets a cache rescore only a tail.

Seasonality is daily (``m = 86400 / step`` cells) when ``8 <= m <= 20000``;
it is used for a block only once the detector's trailing history before that
block spans two days (the STL detector adds a weekly period after 15 days).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.base import Band, Detector, median_step_s
from plugin_backend.types import FloatArray

__all__ = [
    "ABS_FLOOR",
    "BAND_K",
    "LRU",
    "PHASE_DAYS",
    "REL_FLOOR",
    "HoltWinters",
    "RobustZ",
    "SeasonalSTL",
    "clear_caches",
    "flat_floor",
    "phase_correction",
    "row_order_stat",
    "sigma_before",
    "sorted_rows",
]

IntArray = npt.NDArray[np.int64]

#: Band half-width in robust standard deviations.
BAND_K = 3.5
#: MAD -> standard deviation for Gaussian noise.
MAD_TO_SIGMA = 1.4826
#: 75% quantile of |Z| -> standard deviation for Gaussian noise.
Q75_TO_SIGMA = 1.1503
#: Band floor relative to the magnitude of the expected value (float noise is ~1e-12).
REL_FLOOR = 1e-6
#: Absolute band floor (series sitting at exactly 0).
ABS_FLOOR = 1e-12
#: Residuals needed in the trailing window before a band exists (STL, Holt-Winters).
MIN_RESIDUALS = 8

DAY_S = 86_400.0
#: Daily period bounds in cells: above 3 h steps there is no daily shape to learn;
#: below ~4 s steps the per-block history would be too large.
MIN_PERIOD = 8
MAX_PERIOD = 20_000
#: Target cells per coarse daily period for STL (bins of ``m / 48`` points, 30 min at 5 min).
COARSE_PERIOD = 48
#: Cells per refit when no seasonality is in use (STL) and the trailing span it fits on.
SUB_BLOCK = 8
TREND_HISTORY = 64
#: Days of history before STL adds the weekly period (MSTL needs > 2 weeks).
WEEKLY_HISTORY_DAYS = 15
#: Fewest cells between two MSTL refits.
_MIN_EPOCH = 96
#: Weekly STL mode: cells behind the per-block level (the slope uses one day).
WEEKLY_LEVEL_HISTORY = 48
#: Days of same-time-of-day residuals behind the band width (with a daily period).
SCALE_DAYS = 4
#: Days whose residuals at the same phase must agree before STL corrects a phase.
PHASE_DAYS = 4
#: Fewest recent days whose misses beyond a forecast's band correct it (see phase_correction).
EARLY_PHASE_DAYS = 2
#: Residuals taken from each day (and from the recent past) for the pooled band width.
_POOL_PART = 25
#: Rows, and cells, per chunk in the sliding-window passes (~10 MB per temporary).
_CHUNK = 4096
_CHUNK_CELLS = 4096 * 300


# --------------------------------------------------------------------------- rolling


def _trailing_chunks(
    x: FloatArray, window: int, first: int = 0
) -> Iterator[tuple[slice, FloatArray]]:
    """Row ``i`` of the yielded views is ``x[i - window : i]`` (NaN-padded on the left):
    the trailing window *excluding* point ``i``; rows from ``first`` on."""
    n = x.shape[0]
    padded = np.concatenate((np.full(window, np.nan), x))
    view = sliding_window_view(padded, window)
    rows = max(1, min(_CHUNK, _CHUNK_CELLS // window))
    for start in range(max(first, 0), n, rows):
        stop = min(start + rows, n)
        yield slice(start, stop), view[start:stop]


def row_order_stat(srt: FloatArray, count: IntArray, q: float) -> FloatArray:
    """The ``q`` quantile (linear interpolation) of each sorted, NaN-last row."""
    pos = q * np.maximum(count - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    idx = np.arange(srt.shape[0])
    frac = pos - lo
    out: FloatArray = srt[idx, lo] * (1 - frac) + srt[idx, hi] * frac
    return out


def sorted_rows(rows: FloatArray) -> tuple[FloatArray, IntArray]:
    """Rows sorted with NaN last (numpy's SIMD sort beats ``np.partition`` with
    two kth values by ~7x here) and their finite counts."""
    count: IntArray = (rows.shape[1] - np.count_nonzero(np.isnan(rows), axis=1)).astype(np.int64)
    return np.sort(rows, axis=1), count


def _row_nanmedian(rows: FloatArray, min_count: int = 1) -> FloatArray:
    """Median of each row ignoring NaN (NaN where fewer than ``min_count`` are finite)."""
    srt, count = sorted_rows(rows)
    med = row_order_stat(srt, count, 0.5)
    med[count < max(min_count, 1)] = np.nan
    return med


def _row_sigma(deviations: FloatArray, min_count: int) -> FloatArray:
    """Robust standard deviation of each row of absolute deviations:
    ``max(1.4826 * median, q75 / 1.150)``, both equal to sigma for Gaussian noise.
    The 75% quantile keeps the band open when over half the deviations are exactly
    zero (quantised or mostly idle series) yet still ignores up to 25% outliers."""
    srt, count = sorted_rows(deviations)
    sigma = np.maximum(
        MAD_TO_SIGMA * row_order_stat(srt, count, 0.5),
        row_order_stat(srt, count, 0.75) / Q75_TO_SIGMA,
    )
    sigma[count < max(min_count, 1)] = np.nan
    return sigma


def sigma_before(
    deviations: FloatArray, ends: npt.NDArray[np.int64], window: int, min_count: int
) -> FloatArray:
    """Robust sigma (``_row_sigma``) of ``deviations[e - window : e]`` for each ``e`` in
    ``ends``: ``rolling_sigma`` at chosen points only."""
    padded = np.concatenate((np.full(window, np.nan), deviations))
    rows = sliding_window_view(padded, window)[np.asarray(ends, dtype=np.int64)]
    return _row_sigma(rows, min_count) if rows.shape[0] else np.empty(0)


def rolling_median(x: FloatArray, window: int, min_count: int) -> FloatArray:
    """Causal rolling median: ``out[i] = median(x[i - window : i])`` ignoring NaN."""
    out = np.full(x.shape[0], np.nan)
    for sl, rows in _trailing_chunks(x, window):
        out[sl] = _row_nanmedian(rows, min_count)
    return out


def rolling_sigma(
    deviations: FloatArray, window: int, min_count: int, first: int = 0
) -> FloatArray:
    """Causal rolling robust sigma (``_row_sigma``) of absolute deviations (NaN before
    row ``first``)."""
    out = np.full(deviations.shape[0], np.nan)
    for sl, rows in _trailing_chunks(deviations, window, first):
        out[sl] = _row_sigma(rows, min_count)
    return out


def rolling_median_sigma(
    x: FloatArray, window: int, min_count: int
) -> tuple[FloatArray, FloatArray]:
    """Causal rolling median and robust sigma of the deviations from it."""
    med = np.full(x.shape[0], np.nan)
    sigma = np.full(x.shape[0], np.nan)
    for sl, rows in _trailing_chunks(x, window):
        m = _row_nanmedian(rows, min_count)
        med[sl] = m
        sigma[sl] = _row_sigma(np.abs(rows - m[:, None]), min_count)
    return med, sigma


def _finite_diffs(values: FloatArray) -> FloatArray:
    """``|v[j] - v[previous finite j]|`` stored at ``j`` (NaN elsewhere)."""
    out = np.full(values.shape[0], np.nan)
    idx = np.flatnonzero(np.isfinite(values))
    if idx.size > 1:
        out[idx[1:]] = np.abs(np.diff(values[idx]))
    return out


def flat_floor(
    values: FloatArray, window: int, magnitude: FloatArray, first: int = 0
) -> FloatArray:
    """Lower bound of the band half-width (see the module docstring); rows before
    ``first`` get only the relative and absolute floors."""
    threshold = REL_FLOOR * np.abs(magnitude)
    diffs = _finite_diffs(values)
    quantum = np.zeros(values.shape[0])
    for sl, rows in _trailing_chunks(diffs, window, first):
        with np.errstate(invalid="ignore"):
            above = rows > threshold[sl, None]
        smallest = np.where(above, rows, np.inf).min(axis=1)
        quantum[sl] = np.where(np.isfinite(smallest), smallest, 0.0)
    return np.maximum(np.maximum(0.5 * quantum, threshold), ABS_FLOOR)


def residual_band(
    values: FloatArray,
    expected: FloatArray,
    window: int,
    *,
    cells: IntArray | None = None,
    period: int = 0,
    needed_from: int = 0,
) -> Band:
    """``expected +- max(BAND_K * sigma, floor)`` with ``sigma`` from this same
    forecast's past residuals (NaN until ``MIN_RESIDUALS`` exist). Rows before
    ``needed_from`` are left NaN (a cache already holds them): a refresh costs the
    new rows, not the whole history.

    ``sigma`` comes from the trailing ``window`` residuals; with a daily ``period``
    (in cells) and two earlier days of residuals it comes instead from the
    residuals within +-1 h of the same time of day on the last ``SCALE_DAYS``
    days plus the last 2 h, so noise that changes over the day (busy hours) and
    a model that misfits at a given hour get their own band width.
    """
    residuals = np.abs(values - expected)
    sigma = rolling_sigma(residuals, window, MIN_RESIDUALS, needed_from)
    if cells is not None and period >= MIN_PERIOD:
        pooled = _phase_pooled_sigma(residuals, cells, period, needed_from)
        sigma = np.where(np.isfinite(pooled), pooled, sigma)
    half = np.maximum(BAND_K * sigma, flat_floor(values, window, expected, needed_from))
    shown = np.where(np.isfinite(half), expected, np.nan)
    return Band(shown, shown - half, shown + half)


def phase_correction(
    cells: IntArray,
    values: FloatArray,
    expected: FloatArray,
    period: int,
    days: int = PHASE_DAYS,
    *,
    band: tuple[FloatArray, FloatArray] | None = None,
) -> FloatArray:
    """What a forecast keeps missing at the same time of day: where the residuals at
    this exact phase on each of the last ``days`` days (all present) share one sign, the
    smallest of them (signed); 0 elsewhere. Causal (earlier days only). A sharp daily
    step (a cron job, a batch window) that a smooth seasonal shape cuts across gets its
    misfit back; noise rarely agrees in sign on every day, and then by little.

    With the forecast's ``band`` (lower, upper), a point that has only the last
    ``EARLY_PHASE_DAYS`` to ``days - 1`` days (a young series, or one after a gap) is
    corrected too where on each of those days the value was outside that band on the
    same side: too few days for agreeing signs to mean much, but a miss beyond the
    band on each of them is no noise."""
    residuals = values - expected
    stacked = _same_phase(cells, residuals, period, days)
    complete = np.isfinite(stacked).all(axis=0)
    same_sign = complete & ((stacked > 0).all(axis=0) | (stacked < 0).all(axis=0))
    smallest = np.min(np.abs(np.where(complete, stacked, 0.0)), axis=0)
    correction = np.where(same_sign, np.sign(stacked[0]) * smallest, 0.0)
    if band is None or days <= EARLY_PHASE_DAYS:
        return correction
    # The days read: the run of present days just before this one; only points that
    # have two or three (and a forecast) are looked at.
    recent = np.cumprod(np.isfinite(stacked), axis=0).sum(axis=0)
    cols = np.flatnonzero(~complete & (recent >= EARLY_PHASE_DAYS) & np.isfinite(expected))
    if cols.size == 0:
        return correction
    lower, upper = band
    margins = np.where(residuals >= 0, upper - expected, expected - lower)
    margin = _same_phase(cells, margins, period, days, at=cols)
    misses = stacked[:, cols]
    read = np.arange(days)[:, None] < recent[cols][None, :]
    with np.errstate(invalid="ignore"):
        beyond = np.where(read, np.abs(misses) > margin, True).all(axis=0)
        above = np.where(read, misses > 0, True).all(axis=0)
        below = np.where(read, misses < 0, True).all(axis=0)
    nearest = np.min(np.where(read, np.abs(misses), np.inf), axis=0)
    early = beyond & (above | below)
    correction[cols[early]] = np.where(above, nearest, -nearest)[early]
    return correction


def _same_phase(
    cells: IntArray, series: FloatArray, period: int, days: int, at: IntArray | None = None
) -> FloatArray:
    """Row ``d - 1``: ``series`` at this exact cell ``d`` periods earlier (NaN if absent),
    for every point or for the points ``at``."""
    targets = cells if at is None else cells[at]
    stacked = np.full((days, targets.shape[0]), np.nan)
    for day in range(1, days + 1):
        earlier = targets - day * period
        idx = np.minimum(np.searchsorted(cells, earlier), cells.shape[0] - 1)
        stacked[day - 1] = np.where(cells[idx] == earlier, series[idx], np.nan)
    return stacked


def _scale_reach(window: int, season: _Season | None) -> int:
    """How far back ``residual_band`` looks (residuals and values), in points."""
    reach = window + 1
    if season is not None:
        half = max(1, round(season.period / 24))
        reach = max(reach, SCALE_DAYS * season.period + half + 1)
    return reach


def _phase_pooled_sigma(
    residuals: FloatArray, cells: IntArray, period: int, first: int = 0
) -> FloatArray:
    """Robust sigma (``_row_sigma``) of the residuals at the same time of day
    (+-``period/24`` points) on each of the ``SCALE_DAYS`` previous days and of the
    last ``period/12`` points; NaN unless two earlier days contribute. Each part is
    thinned to ~``_POOL_PART`` evenly spaced points so fine steps cost the same."""
    n = residuals.shape[0]
    half = max(1, round(period / 24))
    stride = max(1, math.ceil((2 * half + 1) / _POOL_PART))
    offsets = np.arange(-half, half + 1, stride)
    recent = max(MIN_RESIDUALS, 2 * half)
    padded = np.concatenate((np.full(recent, np.nan), residuals))
    recent_rows = sliding_window_view(padded, recent)[:, ::-1][:, ::stride]
    out = np.full(n, np.nan)
    for start in range(max(first, 0), n, _CHUNK):
        stop = min(start + _CHUNK, n)
        here = np.arange(start, stop)
        parts = [recent_rows[start:stop]]
        days_seen = np.zeros(stop - start, dtype=np.int64)
        for day in range(1, SCALE_DAYS + 1):
            centre = np.searchsorted(cells, cells[start:stop] - day * period)
            idx = centre[:, None] + offsets
            ok = (idx >= 0) & (idx < here[:, None] - recent)
            part = np.where(ok, residuals[np.clip(idx, 0, n - 1)], np.nan)
            days_seen += 2 * np.count_nonzero(np.isfinite(part), axis=1) > offsets.size
            parts.append(part)
        sigma = _row_sigma(np.concatenate(parts, axis=1), MIN_RESIDUALS)
        out[start:stop] = np.where(days_seen >= 2, sigma, np.nan)
    return out


# --------------------------------------------------------------------------- time grid


def _grid(timestamps_s: FloatArray) -> tuple[float, IntArray]:
    """The step and each point's absolute cell ``round(t / step)`` (non-decreasing)."""
    step = median_step_s(timestamps_s)
    if not step > 0:
        step = 1.0
    cells: IntArray = np.rint(timestamps_s / step).astype(np.int64)
    return step, cells


def _cell_values(cells: IntArray, values: FloatArray, start: int, stop: int) -> FloatArray:
    """Values on cells ``[start, stop)``, NaN where no point sits (last point wins)."""
    out = np.full(stop - start, np.nan)
    lo, hi = np.searchsorted(cells, (start, stop))
    out[cells[lo:hi] - start] = values[lo:hi]
    return out


def _recent_finite(
    finite_cells: IntArray, finite_values: FloatArray, start: int, count: int
) -> FloatArray:
    """The last ``count`` finite values before cell ``start`` (from the series' finite
    points and their cells), oldest first, NaN-padded on the left: a warm-up that
    spans gaps instead of waiting for new points."""
    out = np.full(count, np.nan)
    hi = int(np.searchsorted(finite_cells, start))
    recent = finite_values[max(hi - count, 0) : hi]
    out[count - recent.size :] = recent
    return out


def _history_span(finite_cells: IntArray, start: int, lookback: int) -> tuple[int, int]:
    """(cells from the first finite point in ``[start - lookback, start)`` to ``start``,
    finite points in that range)."""
    lo, hi = np.searchsorted(finite_cells, (start - lookback, start))
    if hi <= lo:
        return 0, 0
    return int(start - finite_cells[lo]), int(hi - lo)


@dataclass(frozen=True, slots=True)
class _Season:
    period: int  # cells per day
    coarse: int  # cells per STL bin
    block: int  # cells per refit


def _season(step_s: float) -> _Season | None:
    period = round(DAY_S / step_s) if step_s > 0 else 0
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        return None
    coarse = max(1, period // COARSE_PERIOD)
    # ~period/8 (36 cells = 3 h at 5 min), >= 8 cells, a multiple of two STL bins.
    unit = 2 * coarse
    block = unit * max(1, math.ceil(max(SUB_BLOCK, period / 8) / unit))
    return _Season(period, coarse, block)


def _known_blocks(cells: IntArray, block: int, prior_expected: FloatArray | None) -> set[int]:
    """Block starts whose every point already has a finite prior expected value."""
    if prior_expected is None:
        return set()
    known: set[int] = set()
    for lo, hi in _group_bounds(cells // block):
        if np.isfinite(prior_expected[lo:hi]).all():
            known.add(int(cells[lo] // block) * block)
    return known


def _group_bounds(keys: IntArray) -> list[tuple[int, int]]:
    """``[lo, hi)`` index ranges of equal consecutive keys."""
    if keys.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(keys)) + 1
    edges = [0, *cuts.tolist(), int(keys.size)]
    return list(itertools.pairwise(edges))


def _level_trend_forecast(
    cells: IntArray,
    values: FloatArray,
    start: int,
    targets: IntArray,
    *,
    history: int = TREND_HISTORY,
    level_history: int = TREND_HISTORY,
) -> FloatArray | None:
    """Robust level + linear trend before cell ``start``, extrapolated to ``targets``
    (None with fewer than 8 finite points): the slope is the median-of-halves slope of
    the last ``history`` cells, the level the median of the detrended last
    ``level_history`` cells (at least 8 points)."""
    lo, hi = np.searchsorted(cells, (start - history, start))
    x = cells[lo:hi]
    y = values[lo:hi]
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if y.size < SUB_BLOCK:
        return None
    half = y.size // 2
    dx = float(np.median(x[half:]) - np.median(x[:half]))
    slope = float(np.median(y[half:]) - np.median(y[:half])) / dx if dx > 0 else 0.0
    ref = start - 1
    recent = min(int(np.searchsorted(x, start - level_history)), y.size - SUB_BLOCK)
    level = float(np.median(y[recent:] - slope * (x[recent:] - ref)))
    return level + slope * (targets - ref).astype(np.float64)


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidTarget(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise InvalidTarget(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


# --------------------------------------------------------------------------- RobustZ


class RobustZ(Detector):
    """Rolling median +- ``BAND_K`` robust sigmas of the trailing ``window`` points
    (sigma = max(1.4826 * MAD, q75 / 1.150) of the deviations from that median):
    the classic robust z-score, no seasonality -- a daily swing sits inside its band.

    Cost: O(n * window log window) as sorted row blocks (numpy SIMD sort),
    ~0.27 s per 100k points at the default window (~370k points/s). Point ``i``
    is scored once 7 earlier finite points exist in its window.
    """

    name: ClassVar[str] = "robust_z"
    min_points: ClassVar[int] = 8

    def __init__(
        self, *, window: int = 288, sensitivity: float = 1.0, min_deviation: float = 0.0
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        self.window = _check_int("window", window, self.min_points, 100_000)

    def history_points(self, step_s: float) -> int:
        return self.window + 1  # the floor's quantum looks at one more point

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        med, sigma = rolling_median_sigma(values, self.window, self.min_points - 1)
        half = np.maximum(BAND_K * sigma, flat_floor(values, self.window, med))
        return Band(med, med - half, med + half)


# --------------------------------------------------------------------------- STL


def _stl_windows(period: int) -> dict[str, int]:
    """statsmodels' default STL windows with R's default jumps (ceil(window / 10)):
    LOESS is evaluated every ``jump`` points and interpolated, ~5x faster."""
    seasonal = 7
    trend = math.ceil(1.5 * period / (1 - 1.5 / seasonal))
    trend += 1 - trend % 2
    low_pass = period + 1
    low_pass += 1 - low_pass % 2
    return {
        "seasonal": seasonal,
        "trend": trend,
        "low_pass": low_pass,
        "seasonal_jump": 1,
        "trend_jump": math.ceil(trend / 10),
        "low_pass_jump": math.ceil(low_pass / 10),
    }


#: Robust STL with 3 robustness passes (statsmodels' default is 15: 4.4 ms a fit at 4 days
#: of 48 bins against 1.5 ms here); enough to give an anomalous day in the history zero
#: weight, which plain STL would smear into the seasonal profile for the next 4 days.
_STL_INNER = 2
_STL_OUTER = 3


@dataclass(frozen=True, slots=True)
class _Decomposition:
    """A trend + seasonal fit on bins of ``coarse`` cells, bin 0 starting at ``origin``."""

    origin: int
    coarse: int
    trend: FloatArray
    seasonal: tuple[tuple[FloatArray, int], ...]  # (component per bin, its period in bins)

    def positions(self, targets: IntArray) -> FloatArray:
        """Targets in bin coordinates (bin ``k`` is centred on ``k``)."""
        return (targets - self.origin - (self.coarse - 1) / 2).astype(np.float64) / self.coarse

    def seasonal_at(self, targets: IntArray) -> FloatArray:
        """Each component at the same phase in its last full period (linear between bins)."""
        pos = self.positions(targets)
        out = np.zeros(pos.shape[0])
        for component, period in self.seasonal:
            n = component.shape[0]
            xp = np.arange(n - period, n, dtype=np.float64)
            out += np.interp(pos, xp, component[n - period :], period=period)
        return out

    def trend_at(self, targets: IntArray) -> FloatArray:
        """The last trend value plus its slope over the last 1/8 day."""
        period = self.seasonal[0][1]
        lag = max(1, period // 8)
        slope = (self.trend[-1] - self.trend[-1 - lag]) / lag
        horizon = self.positions(targets) - (self.trend.shape[0] - 1)
        out: FloatArray = self.trend[-1] + slope * horizon
        return out


def _decompose(
    cells: IntArray,
    values: FloatArray,
    *,
    coarse: int,
    periods: tuple[int, ...],
    bins: int,
    end: int,
) -> _Decomposition | None:
    """(M)STL on ``bins`` bin medians of ``coarse`` cells ending at cell ``end``
    (holes interpolated; None when fewer than half the bins hold data). Bin medians
    keep single spikes in the history from bending the fit."""
    from statsmodels.tsa.seasonal import MSTL, STL

    origin = end - bins * coarse
    raw = _cell_values(cells, values, origin, end)
    binned = _row_nanmedian(raw.reshape(bins, coarse)) if coarse > 1 else raw
    ok = np.isfinite(binned)
    if np.count_nonzero(ok) < bins // 2:
        return None
    if not ok.all():
        pos = np.arange(bins, dtype=np.float64)
        binned = np.interp(pos, pos[ok], binned[ok])
    windows = _stl_windows(periods[0])
    fit: Any
    if len(periods) == 1:
        stl = STL(binned, period=periods[0], robust=True, seasonal_deg=0, **windows)
        fit = stl.fit(inner_iter=_STL_INNER, outer_iter=_STL_OUTER)
    else:
        # One set of jumps serves both periods; a third of the daily windows keeps the
        # weekly pass (trend window ~13 days) cheap: 4.8 ms a fit instead of 11 ms.
        kwargs: dict[str, int | bool] = {
            "seasonal_jump": 1,
            "trend_jump": math.ceil(windows["trend"] / 3),
            "low_pass_jump": math.ceil(windows["low_pass"] / 3),
            "robust": True,
            "seasonal_deg": 0,
            "inner_iter": _STL_INNER,
            "outer_iter": _STL_OUTER,
        }
        fit = MSTL(binned, periods=periods, iterate=1, stl_kwargs=kwargs).fit()
    seasonal = np.asarray(fit.seasonal, dtype=np.float64).reshape(bins, -1)
    return _Decomposition(
        origin=origin,
        coarse=coarse,
        trend=np.asarray(fit.trend, dtype=np.float64),
        seasonal=tuple(
            (seasonal[:, i].copy(), period) for i, period in enumerate(periods[: seasonal.shape[1]])
        ),
    )


class SeasonalSTL(Detector):
    """STL baseline refitted block by block on a trailing window.

    Every block of ``~period/8`` cells (36 points = 3 h at a 5 min step) gets a
    fresh fit on the history *before* it, binned to ~48 medians a day (so single
    spikes in the history barely move the fit):

    * >= 2 days of history: robust statsmodels ``STL`` (3 robustness passes,
      local-constant seasonal smoother, so an anomalous last day is down-weighted
      instead of being copied into tomorrow) on the last ``history_periods``
      days; the block is ``trend_end + slope * h`` plus the seasonal value at the
      same phase one period earlier (interpolated between bins).
    * >= 15 days (``weekly=True``): robust ``MSTL`` with daily and weekly periods
      on the last 15 days at ~24 bins a day. It costs ~5 ms, so it is refitted
      once a day (every >= 96 cells) and each block adds to its seasonal
      components a robust trend (slope over the last day, level over the last
      48 cells) of the deseasonalised history.
    * less: sub-blocks of 8 cells forecast by a robust level + trend of the last
      64 cells (Theil-Sen-like: median-of-halves slope, median level); after a gap
      that leaves fewer than 8 points there, the median of the last 64 observed
      points (a slope across a gap is a guess).
    * then, with a daily period, each forecast gets back what it kept missing at
      that exact time of day (``phase_correction``: the residuals at the same phase
      on each of the last ``phase_days`` days agree in sign; ``phase_days=0`` turns
      it off). Bins smooth a sharp daily step (a cron job, a batch window) over half
      an hour, which paged every day at the step's edge; on the NAB artificial
      corpus this lifted stl from 80.3 to 88.7 (realTraffic 69.0 -> 68.6, synthetic
      seeds 1-3 60.4, 57.8, 59.6 -> 59.5, 57.8, 59.5).

    Expected values with the correction are not the forecasts it is computed from,
    so they cannot be reused from ``prior_expected``; instead each block's forecast
    is kept in ``_STL_BLOCKS`` under a digest of what it reads (``_block_key``), so
    a refresh (or an ensemble, which has no ``prior_expected``) refits only new
    blocks: ``python -m benchmarks scoring`` refresh p50 at 24 h x 15 s 11.6 ms for
    stl, 26.4 ms for the default ensemble (67 ms before the cache; 65 ms since the
    ensemble also judges a day back and adds a sustained view, see ``ensemble``).

    Cost: O(n / block) STL fits of O(bins * window / jump) each (~1.5 ms for a
    daily fit), O(n / max(period, 96)) MSTL fits (~5 ms), O(n) sub-block fits
    and the O(n log window) band -- per point about independent of the step
    because bins keep ~48 a day. Measured: 10k points at 5 min in 0.25 s
    (~40k points/s; 100k in 2.2 s), 10k at 1 h in 0.4 s, 100k at 15 s in 0.4 s.
    The first call also pays ~0.7 s to import statsmodels.
    Bin resolution: daily shapes finer than ~30 min are smoothed (their misfit
    widens the band instead).
    """

    name: ClassVar[str] = "stl"
    min_points: ClassVar[int] = 24

    def __init__(
        self,
        *,
        history_periods: int = 4,
        weekly: bool = True,
        scale_window: int = 288,
        phase_days: int = PHASE_DAYS,
        sensitivity: float = 1.0,
        min_deviation: float = 0.0,
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        self.history_periods = _check_int("history_periods", history_periods, 2, 8)
        if not isinstance(weekly, bool):
            raise InvalidTarget(f"weekly must be true or false, got {weekly!r}")
        self.weekly = weekly
        self.scale_window = _check_int("scale_window", scale_window, MIN_RESIDUALS, 100_000)
        self.phase_days = _check_int("phase_days", phase_days, 0, 8)

    def history_points(self, step_s: float) -> int:
        season = _season(step_s)
        if season is None:
            return TREND_HISTORY + SUB_BLOCK + _scale_reach(self.scale_window, None)
        longest = max(self.history_periods * season.period, TREND_HISTORY + SUB_BLOCK)
        if self.weekly:
            epoch = _weekly_epoch(season)
            longest = max(longest, WEEKLY_HISTORY_DAYS * season.period + epoch)
        return longest + season.block + self._expected_reach(season)

    def _expected_reach(self, season: _Season | None) -> int:
        """How far back a band reads forecasts: the scale window, each of its residuals
        corrected from ``phase_days`` days before it."""
        phase = self.phase_days * season.period if season is not None else 0
        return _scale_reach(self.scale_window, season) + phase

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        step, cells = _grid(timestamps_s)
        season = _season(step)
        expected = np.full(values.shape[0], np.nan)
        finite = np.isfinite(values)
        finite_cells, finite_values = cells[finite], values[finite]
        block = season.block if season is not None else SUB_BLOCK
        weekly_fits: dict[int, _Decomposition | None] = {}
        correct = season is not None and self.phase_days > 0
        # Shown expected values include the phase correction, so they cannot stand in
        # for the forecasts it is computed from (those come from _STL_BLOCKS).
        known = set() if correct else _known_blocks(cells, block, prior_expected)
        # Rows before needed_from may stay NaN; the band of the rows from there looks
        # back _scale_reach residuals (each corrected from phase_days days before it),
        # so blocks ending before that are not needed.
        first_cell = (
            cells[needed_from] - self._expected_reach(season)
            if 0 < needed_from < cells.size
            else None
        )
        digests = _BlockDigests(cells, values, block)
        for lo, hi in _group_bounds(cells // block):
            start = int(cells[lo] // block) * block
            targets = cells[lo:hi]
            if first_cell is not None and start + block <= first_cell:
                continue
            if start in known:
                assert prior_expected is not None
                expected[lo:hi] = prior_expected[lo:hi]
                continue
            key = self._block_key(finite_cells, season, start, digests)
            forecast = _STL_BLOCKS.get(key)
            if forecast is None:
                forecast = self._block_forecast(
                    cells,
                    values,
                    finite_cells,
                    finite_values,
                    season,
                    start=start,
                    targets=targets,
                    weekly_fits=weekly_fits,
                )
                _STL_BLOCKS.put(key, forecast)
            expected[lo:hi] = forecast
        period = season.period if season is not None else 0
        if correct:
            expected = expected + phase_correction(cells, values, expected, period, self.phase_days)
        return residual_band(
            values,
            expected,
            self.scale_window,
            cells=cells,
            period=period,
            needed_from=needed_from,
        )

    def _block_forecast(
        self,
        cells: IntArray,
        values: FloatArray,
        finite_cells: IntArray,
        finite_values: FloatArray,
        season: _Season | None,
        *,
        start: int,
        targets: IntArray,
        weekly_fits: dict[int, _Decomposition | None],
    ) -> FloatArray:
        """The block's forecast (NaN where none): from the weekly fit (refitted once an
        epoch, kept in ``weekly_fits``), else a daily fit, else a robust level + trend
        per sub-block."""
        if season is not None and self.weekly:
            fit_end = _weekly_fit_end(start, season)
            if fit_end not in weekly_fits:
                weekly_fits[fit_end] = self._weekly_fit(
                    cells, values, finite_cells, season, fit_end
                )
            fit = weekly_fits[fit_end]
            if fit is not None:
                forecast = _deseasonalised_forecast(
                    cells,
                    values,
                    fit,
                    start,
                    targets,
                    history=season.period,
                    level_history=WEEKLY_LEVEL_HISTORY,
                )
                if forecast is not None:
                    return forecast
        if season is not None:
            forecast = self._daily_forecast(
                cells, values, finite_cells, season, start=start, targets=targets
            )
            if forecast is not None:
                return forecast
        out = np.full(targets.shape[0], np.nan)
        for slo, shi in _group_bounds(targets // SUB_BLOCK):
            sub_start = max(start, int(targets[slo] // SUB_BLOCK) * SUB_BLOCK)
            trend = _level_trend_forecast(cells, values, sub_start, targets[slo:shi])
            if trend is None:  # a gap: the level of the points before it, no trend
                recent = _recent_finite(finite_cells, finite_values, sub_start, TREND_HISTORY)
                if np.count_nonzero(np.isfinite(recent)) >= SUB_BLOCK:
                    trend = np.full(shi - slo, float(np.nanmedian(recent)))
            if trend is not None:
                out[slo:shi] = trend
        return out

    def _block_key(
        self, finite_cells: IntArray, season: _Season | None, start: int, digests: _BlockDigests
    ) -> bytes:
        """What the block's forecast depends on: which forecast it gets (the history
        checks of ``_block_forecast``), the first cell any of them reads, and the data
        from there to the block's end. A refresh that only appends points and drops old
        ones finds every finished block's forecast in ``_STL_BLOCKS``."""
        recent = int(np.searchsorted(finite_cells, start)) - TREND_HISTORY
        reads = start - TREND_HISTORY
        if finite_cells.size:  # the level after a gap: the last 64 finite points
            reads = min(reads, int(finite_cells[max(recent, 0)]))
        kind = 0  # a level + trend per sub-block
        if season is not None:
            period = season.period
            span, count = _history_span(finite_cells, start, self.history_periods * period)
            days = min(self.history_periods, span // period)
            daily_from = start - days * max(2, round(period / season.coarse)) * season.coarse
            if self.weekly and _weekly_history(
                finite_cells, season, _weekly_fit_end(start, season)
            ):
                kind = 1  # the weekly fit (or a daily one, within its history)
                weekly_from = _weekly_fit_end(start, season) - WEEKLY_HISTORY_DAYS * period
                reads = min(reads, weekly_from, _weekly_origin(start, season), daily_from)
            elif days >= 2 and count >= days * period // 2:
                kind = 2  # a daily fit on ``days`` days
                reads = min(reads, daily_from, start - days * period)
        head = np.asarray(
            [kind, reads, start, self.history_periods, int(self.weekly), *_season_tuple(season)],
            dtype=np.int64,
        )
        return digests.key(head.tobytes(), reads, start)

    def _weekly_fit(
        self, cells: IntArray, values: FloatArray, finite_cells: IntArray, season: _Season, end: int
    ) -> _Decomposition | None:
        if not _weekly_history(finite_cells, season, end):
            return None
        coarse, per_day = _weekly_bins(season)
        return _decompose(
            cells,
            values,
            coarse=coarse,
            periods=(per_day, 7 * per_day),
            bins=WEEKLY_HISTORY_DAYS * per_day,
            end=end,
        )

    def _daily_forecast(
        self,
        cells: IntArray,
        values: FloatArray,
        finite_cells: IntArray,
        season: _Season,
        *,
        start: int,
        targets: IntArray,
    ) -> FloatArray | None:
        period = season.period
        span, count = _history_span(finite_cells, start, self.history_periods * period)
        days = min(self.history_periods, span // period)
        if days < 2 or count < days * period // 2:
            return None
        per_day = max(2, round(period / season.coarse))
        fit = _decompose(
            cells, values, coarse=season.coarse, periods=(per_day,), bins=days * per_day, end=start
        )
        if fit is None:
            return None
        return fit.trend_at(targets) + fit.seasonal_at(targets)


def _weekly_history(finite_cells: IntArray, season: _Season, end: int) -> bool:
    """Whether the ``WEEKLY_HISTORY_DAYS`` before cell ``end`` hold enough for MSTL."""
    lookback = WEEKLY_HISTORY_DAYS * season.period
    span, count = _history_span(finite_cells, end, lookback)
    return span >= lookback - season.block and count >= lookback // 2


def _weekly_bins(season: _Season) -> tuple[int, int]:
    """The weekly fit's (cells per bin, bins per day)."""
    coarse = 2 * season.coarse
    return coarse, max(2, round(season.period / coarse))


def _weekly_fit_end(start: int, season: _Season) -> int:
    """The end of the weekly fit a block starting at cell ``start`` uses."""
    return start - start % _weekly_epoch(season)


def _weekly_origin(start: int, season: _Season) -> int:
    """The first cell the weekly fit of a block starting at ``start`` bins."""
    coarse, per_day = _weekly_bins(season)
    return _weekly_fit_end(start, season) - WEEKLY_HISTORY_DAYS * per_day * coarse


def _season_tuple(season: _Season | None) -> tuple[int, int, int]:
    return (season.period, season.coarse, season.block) if season is not None else (0, 0, 0)


class _BlockDigests:
    """A digest of each block's cells and values, so a key over a long range of
    blocks costs one hash of their digests."""

    def __init__(self, cells: IntArray, values: FloatArray, block: int) -> None:
        self.cells, self.values, self.block = cells, values, block
        self.first = int(cells[0] // block) if cells.size else 0
        count = int(cells[-1] // block) - self.first + 1 if cells.size else 0
        table = bytearray(20 * count)
        for lo, hi in _group_bounds(cells // block):
            digest = hashlib.blake2b(cells[lo:hi].tobytes(), digest_size=20)
            digest.update(values[lo:hi].tobytes())
            at = 20 * (int(cells[lo] // block) - self.first)
            table[at : at + 20] = digest.digest()
        self.table = bytes(table)

    def key(self, head: bytes, reads: int, start: int) -> bytes:
        """``head`` plus the data on cells ``[reads, start + block)``: the partial block
        at ``reads`` exactly, the whole blocks after it by their digests."""
        digest = hashlib.blake2b(head, digest_size=20)
        whole = -(-reads // self.block) * self.block
        lo, hi = np.searchsorted(self.cells, (reads, min(whole, start + self.block)))
        digest.update(self.cells[lo:hi].tobytes())
        digest.update(self.values[lo:hi].tobytes())
        first = max(whole // self.block - self.first, 0)
        last = start // self.block - self.first + 1
        if last > first:
            digest.update(self.table[20 * first : 20 * last])
        return digest.digest()


def _weekly_epoch(season: _Season) -> int:
    """Cells between MSTL refits: whole blocks, a day but at least ``_MIN_EPOCH`` cells
    (at 1 h steps a refit every 4 days keeps the cost per point bounded)."""
    return season.block * max(1, math.ceil(max(season.period, _MIN_EPOCH) / season.block))


def _deseasonalised_forecast(
    cells: IntArray,
    values: FloatArray,
    fit: _Decomposition,
    start: int,
    targets: IntArray,
    *,
    history: int = TREND_HISTORY,
    level_history: int = TREND_HISTORY,
) -> FloatArray | None:
    """``fit``'s seasonal components plus a fresh robust level + trend of the
    deseasonalised ``TREND_HISTORY`` cells before ``start``."""
    history = max(TREND_HISTORY, history)
    lo, hi = np.searchsorted(cells, (start - history, start))
    recent = cells[lo:hi]
    deseasonalised = values[lo:hi] - fit.seasonal_at(recent)
    trend = _level_trend_forecast(
        recent, deseasonalised, start, targets, history=history, level_history=level_history
    )
    if trend is None:
        return None
    return trend + fit.seasonal_at(targets)


# --------------------------------------------------------------------------- Holt-Winters

_V = TypeVar("_V")

#: Candidate smoothing parameters (level alpha, trend beta, seasonal gamma), chosen
#: per block by the lowest clipped one-step error on the window before the block.
_ALPHAS = (0.05, 0.15, 0.4)
_BETAS = (0.0, 0.1)
_GAMMAS = (0.05, 0.2)
#: Per-step trend damping (the trend's whole future contribution is <= 49 steps of it).
DAMPING = 0.98
#: Errors are clipped at CLIP * sigma before they update the state (Huber-type robust HW).
CLIP = 3.0
#: Smoothing of the running error scale, and E[min(Z^2, CLIP^2)] for Z ~ N(0, 1).
_SCALE_RATE = 0.05
_CLIPPED_VAR = 0.9707
#: Cells per block without a daily period.
_PLAIN_BLOCK = 64
#: Observed points a lane needs before it forecasts (when it starts without history).
_WARM = 8
#: Blocks per vectorised pass (bounds memory: lanes x period seasonal states).
_BLOCKS_PER_PASS = 256


@dataclass(frozen=True, slots=True)
class _Lanes:
    """One recursion per lane, all lanes stepped together over the same T cells."""

    data: FloatArray  # (lanes, T)
    level: FloatArray  # (lanes,) NaN: start at the first finite point
    seasonal: FloatArray | None  # (lanes, period), phase 0 at step ``phase0``
    sigma: FloatArray  # (lanes,) inf: no clipping
    seen: IntArray  # (lanes,) observations behind the initial state
    alpha: FloatArray
    beta: FloatArray
    gamma: FloatArray


@dataclass(slots=True)
class _LaneState:
    """The recursion's state between two steps (one row per lane)."""

    level: FloatArray
    trend: FloatArray
    seasonal: FloatArray | None
    sigma: FloatArray
    seen: IntArray
    loss: FloatArray
    loss_n: FloatArray

    def take(self, rows: slice) -> _LaneState:
        return _LaneState(
            self.level[rows].copy(),
            self.trend[rows].copy(),
            self.seasonal[rows].copy() if self.seasonal is not None else None,
            self.sigma[rows].copy(),
            self.seen[rows].copy(),
            self.loss[rows].copy(),
            self.loss_n[rows].copy(),
        )

    @staticmethod
    def stack(parts: list[_LaneState]) -> _LaneState:
        seasonals = [p.seasonal for p in parts if p.seasonal is not None]
        return _LaneState(
            np.concatenate([p.level for p in parts]),
            np.concatenate([p.trend for p in parts]),
            np.concatenate(seasonals) if seasonals else None,
            np.concatenate([p.sigma for p in parts]),
            np.concatenate([p.seen for p in parts]),
            np.concatenate([p.loss for p in parts]),
            np.concatenate([p.loss_n for p in parts]),
        )


def _initial_state(lanes: _Lanes) -> _LaneState:
    n_lanes = lanes.data.shape[0]
    return _LaneState(
        level=lanes.level.copy(),
        trend=np.zeros(n_lanes),
        seasonal=lanes.seasonal.copy() if lanes.seasonal is not None else None,
        sigma=lanes.sigma.copy(),
        seen=lanes.seen.copy(),
        loss=np.zeros(n_lanes),
        loss_n=np.zeros(n_lanes),
    )


def _hw_recursion(
    lanes: _Lanes,
    *,
    damping: float,
    phase0: int,
    loss_from: int,
    loss_to: int,
    steps: range | None = None,
    state: _LaneState | None = None,
) -> tuple[FloatArray, FloatArray, _LaneState]:
    """Additive damped Holt-Winters in error-correction form, one lane per row.

    ``yhat_t = l + phi*b + s[phase]``; with ``e = y_t - yhat_t`` clipped to
    ``+- CLIP*sigma``: ``l = l + phi*b + alpha*e``, ``b = phi*b + alpha*beta*e``,
    ``s[phase] += gamma*e`` -- statsmodels'
    ``ExponentialSmoothing(trend="add", damped_trend=True, seasonal="add")`` when
    nothing is clipped. Missing points leave the state coasting.
    Runs ``steps`` (every column by default) from ``state`` (the lanes' initial
    state by default). Returns the one-step forecasts (NaN until a lane is warm, and
    outside ``steps``), each lane's mean clipped absolute error over steps
    ``[loss_from, loss_to)``, and the state after the last step.
    """
    data = lanes.data
    n_lanes, total = data.shape
    steps = steps if steps is not None else range(total)
    s = state.take(slice(None)) if state is not None else _initial_state(lanes)
    level, trend, seasonal, sigma, seen = s.level, s.trend, s.seasonal, s.sigma, s.seen
    loss, loss_n = s.loss, s.loss_n
    period = seasonal.shape[1] if seasonal is not None else 1
    sigma0 = lanes.sigma
    alpha, beta, gamma = lanes.alpha, lanes.beta, lanes.gamma
    forecasts = np.full((n_lanes, total), np.nan)
    for t in steps:
        y = data[:, t]
        phase = (t - phase0) % period
        season_t = seasonal[:, phase] if seasonal is not None else 0.0
        yhat = level + damping * trend + season_t
        forecasts[:, t] = np.where(seen >= _WARM, yhat, np.nan)
        observed = np.isfinite(y)
        fresh = observed & np.isnan(level)
        error = np.where(observed & ~fresh, y - yhat, 0.0)
        bound = CLIP * sigma
        clipped = np.clip(error, -bound, bound)
        if loss_from <= t < loss_to:
            scored = observed & ~fresh & (seen >= _WARM)
            loss += np.where(scored, np.minimum(np.abs(error), CLIP * sigma0), 0.0)
            loss_n += scored
        level = np.where(fresh, y - season_t, level + damping * trend + alpha * clipped)
        trend = damping * trend + alpha * beta * clipped
        if seasonal is not None:
            seasonal[:, phase] += gamma * clipped
        update = observed & ~fresh & np.isfinite(sigma)
        sigma = np.where(
            update,
            np.sqrt(
                (1 - _SCALE_RATE) * sigma**2
                + _SCALE_RATE * np.minimum(error**2, bound**2) / _CLIPPED_VAR
            ),
            sigma,
        )
        seen += observed
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_loss = np.where(loss_n > 0, loss / loss_n, np.inf)
    return forecasts, mean_loss, _LaneState(level, trend, seasonal, sigma, seen, loss, loss_n)


def _seasonal_init(history: FloatArray, period: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Classical decomposition of ``(blocks, days * period)`` histories: centred
    moving average over one period, per-phase median of the detrended values over
    the days, centred. Returns (profile, deseasonalised history, robust sigma)."""
    blocks, cells = history.shape
    days = cells // period
    ok = np.isfinite(history)
    filled = np.where(ok, history, 0.0)
    csum = np.concatenate((np.zeros((blocks, 1)), np.cumsum(filled, axis=1)), axis=1)
    ccount = np.concatenate((np.zeros((blocks, 1)), np.cumsum(ok, axis=1)), axis=1)
    half = period // 2
    centre = np.arange(half, cells - (period - half) + 1)
    total = csum[:, centre + (period - half)] - csum[:, centre - half]
    count = ccount[:, centre + (period - half)] - ccount[:, centre - half]
    moving = np.full((blocks, cells), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        moving[:, centre] = np.where(count >= period / 2, total / count, np.nan)
    detrended = (history - moving).reshape(blocks, days, period)
    rows = detrended.transpose(0, 2, 1).reshape(blocks * period, days)
    profile = _row_nanmedian(rows).reshape(blocks, period)
    known = np.isfinite(profile)
    centre_level = np.where(known, profile, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    profile = np.where(known, profile - centre_level[:, None], 0.0)
    deseason = history - np.tile(profile, (1, days))
    remainder = np.abs(detrended.reshape(blocks, cells) - np.tile(profile, (1, days)))
    sigma = MAD_TO_SIGMA * _row_nanmedian(remainder)
    return profile, deseason, sigma


def _diff_sigma(history: FloatArray) -> FloatArray:
    """Robust noise scale from first differences (``inf`` where unknown)."""
    diffs = np.abs(np.diff(history, axis=1))
    sigma = MAD_TO_SIGMA * _row_nanmedian(diffs, SUB_BLOCK) / math.sqrt(2)
    return np.where(np.isfinite(sigma), sigma, np.inf)


class HoltWinters(Detector):
    """Robust damped Holt-Winters, re-initialised and re-tuned every block.

    Why not statsmodels ``ExponentialSmoothing`` per block: one fit on four days
    of 5 min data takes ~0.3 s (measured), i.e. ~80 s per 10k points at one fit
    per 36-point block, and its optimiser often lands on degenerate parameters
    (alpha ~ 0.002, gamma = 0). Fitting only once on the first window would break
    the bounded-memory rule (a cache rescoring a tail would get other parameters).
    So the recursion is hand-rolled (the same equations as statsmodels'
    additive damped HW, verified against it in the tests) and vectorised over
    *lanes*: for every block and every candidate (alpha, beta, gamma) a lane
    starts from a classical decomposition of the ``history_periods`` days before
    the block (seasonal profile by per-phase median), runs one period of
    recursion up to the block, and the candidate with the lowest clipped one-step
    error on that period forecasts the block one step ahead (updating with every
    in-block point). Errors are clipped at 3 sigma (running robust scale), so a
    spike in the history barely moves the level or the seasonal profile.
    Without two days of history, lanes run Holt's damped trend warmed up on the 64
    observed points before the block (no seasonality; points, not cells, so the
    first points after a gap are scored too).

    Cost: O(n / block * candidates * (period + block)) lane-steps, done as
    ``period + block`` numpy steps per 256 blocks: ~130k points/s at 5 min
    (100k in 0.75 s), ~65k points/s at 15 s steps (5760-cell days).
    """

    name: ClassVar[str] = "holt_winters"
    min_points: ClassVar[int] = 24

    def __init__(
        self,
        *,
        history_periods: int = 4,
        scale_window: int = 288,
        sensitivity: float = 1.0,
        min_deviation: float = 0.0,
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        self.history_periods = _check_int("history_periods", history_periods, 2, 8)
        self.scale_window = _check_int("scale_window", scale_window, MIN_RESIDUALS, 100_000)

    def history_points(self, step_s: float) -> int:
        season = _season(step_s)
        if season is None:
            return TREND_HISTORY + _PLAIN_BLOCK + _scale_reach(self.scale_window, None)
        longest = max(self.history_periods * season.period, TREND_HISTORY)
        return longest + season.block + _scale_reach(self.scale_window, season)

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        step, cells = _grid(timestamps_s)
        season = _season(step)
        block = season.block if season is not None else _PLAIN_BLOCK
        expected = np.full(values.shape[0], np.nan)
        finite_cells = cells[np.isfinite(values)]
        starts = np.unique(cells // block) * block
        if 0 < needed_from < cells.size:
            # Rows before needed_from may stay NaN; the band of the rows from there looks
            # back _scale_reach residuals, so blocks ending before that are not needed.
            first_cell = cells[needed_from] - _scale_reach(self.scale_window, season)
            starts = starts[starts + block > first_cell]
        seasonal_starts: list[int] = []
        plain_starts: list[int] = []
        for start in starts.tolist():
            if season is not None and self._has_seasonal_history(finite_cells, season, start):
                seasonal_starts.append(start)
            else:
                plain_starts.append(start)
        known = _known_blocks(cells, block, prior_expected)
        seasonal_starts = [s for s in seasonal_starts if s not in known]
        plain_starts = [s for s in plain_starts if s not in known]
        forecasts: dict[int, FloatArray] = {}
        for i in range(0, len(seasonal_starts), _BLOCKS_PER_PASS):
            chunk = seasonal_starts[i : i + _BLOCKS_PER_PASS]
            assert season is not None
            forecasts.update(self._seasonal_pass(cells, values, season, block, chunk))
        for i in range(0, len(plain_starts), _BLOCKS_PER_PASS):
            chunk = plain_starts[i : i + _BLOCKS_PER_PASS]
            forecasts.update(_plain_pass(cells, values, block, chunk))
        for lo, hi in _group_bounds(cells // block):
            start = int(cells[lo] // block) * block
            if start in known:
                assert prior_expected is not None
                expected[lo:hi] = prior_expected[lo:hi]
            elif start in forecasts:  # else: a block before what is needed (stays NaN)
                expected[lo:hi] = forecasts[start][cells[lo:hi] - start]
        period = season.period if season is not None else 0
        return residual_band(
            values,
            expected,
            self.scale_window,
            cells=cells,
            period=period,
            needed_from=needed_from,
        )

    def _has_seasonal_history(self, finite_cells: IntArray, season: _Season, start: int) -> bool:
        lookback = self.history_periods * season.period
        span, count = _history_span(finite_cells, start, lookback)
        days = min(self.history_periods, span // season.period)
        return days >= 2 and count >= days * season.period // 2

    def _seasonal_pass(
        self,
        cells: IntArray,
        values: FloatArray,
        season: _Season,
        block: int,
        starts: list[int],
    ) -> dict[int, FloatArray]:
        period = season.period
        days = self.history_periods
        history = np.stack([_cell_values(cells, values, s - days * period, s) for s in starts])
        profile, deseason, sigma = _seasonal_init(history, period)
        run = period  # recursion warm-up before the block: one period
        data = np.stack([_cell_values(cells, values, s - run, s + block) for s in starts])
        level0 = _row_nanmedian(deseason[:, days * period - run : days * period - run + 16])
        floor = np.fmax(REL_FLOOR * np.abs(level0), ABS_FLOOR)
        sigma = np.where(np.isfinite(sigma), np.maximum(sigma, floor), np.inf)
        grid = [(a, b, g) for a in _ALPHAS for b in _BETAS for g in _GAMMAS if g <= 1 - a]
        # Phase 0 of the profile is the first history cell, ``s - days * period``;
        # recursion step 0 is ``s - run``: phase(t) = (t - run) mod period.
        return _run_blocks(
            data,
            level0=level0,
            profile=profile,
            sigma=sigma,
            seen=np.where(np.isfinite(level0), _WARM, 0).astype(np.int64),
            grid=grid,
            starts=starts,
            run=run,
            phase0=run % period,
        )


def _plain_pass(
    cells: IntArray, values: FloatArray, block: int, starts: list[int]
) -> dict[int, FloatArray]:
    run = TREND_HISTORY
    # Warm-up on the last ``run`` observed points, not cells: after a gap a lane starts
    # from the points before it instead of leaving the block's first points unscored.
    finite = np.isfinite(values)
    finite_cells, finite_values = cells[finite], values[finite]
    data = np.stack(
        [
            np.concatenate(
                (
                    _recent_finite(finite_cells, finite_values, s, run),
                    _cell_values(cells, values, s, s + block),
                )
            )
            for s in starts
        ]
    )
    sigma = _diff_sigma(data[:, :run])
    grid = [(a, b, 0.0) for a in _ALPHAS for b in _BETAS]
    blocks = len(starts)
    return _run_blocks(
        data,
        level0=np.full(blocks, np.nan),
        profile=None,
        sigma=sigma,
        seen=np.zeros(blocks, dtype=np.int64),
        grid=grid,
        starts=starts,
        run=run,
        phase0=0,
    )


def _run_blocks(
    data: FloatArray,
    *,
    level0: FloatArray,
    profile: FloatArray | None,
    sigma: FloatArray,
    seen: IntArray,
    grid: list[tuple[float, float, float]],
    starts: list[int],
    run: int,
    phase0: int,
) -> dict[int, FloatArray]:
    """``_run_lanes`` for the blocks not forecast before: a block's forecast depends only
    on its warm-up inputs and its own data, so a finished block (data unchanged) is
    taken from ``_BLOCK_FORECASTS`` -- what lets a caller without ``prior_expected``
    (the ensemble) refresh at the cost of the new block."""
    warm_keys = [
        _warm_key(
            data,
            level0=level0,
            sigma=sigma,
            seen=seen,
            profile=profile,
            row=i,
            grid=grid,
            run=run,
            phase0=phase0,
        )
        for i in range(len(starts))
    ]
    keys = [
        hashlib.blake2b(
            warm + np.ascontiguousarray(data[i, run:]).tobytes(), digest_size=20
        ).digest()
        for i, warm in enumerate(warm_keys)
    ]
    out: dict[int, FloatArray] = {}
    todo: list[int] = []
    for i, key in enumerate(keys):
        known = _BLOCK_FORECASTS.get(key)
        if known is None:
            todo.append(i)
        else:
            out[starts[i]] = known
    if todo:
        rows = np.asarray(todo)
        fresh = _run_lanes(
            data[rows],
            level0=level0[rows],
            profile=profile[rows] if profile is not None else None,
            sigma=sigma[rows],
            seen=seen[rows],
            grid=grid,
            starts=[starts[i] for i in todo],
            run=run,
            phase0=phase0,
            warm_keys=[warm_keys[i] for i in todo],
        )
        for i in todo:
            out[starts[i]] = fresh[starts[i]]
            _BLOCK_FORECASTS.put(keys[i], fresh[starts[i]])
    return out


def _run_lanes(
    data: FloatArray,
    *,
    level0: FloatArray,
    profile: FloatArray | None,
    sigma: FloatArray,
    seen: IntArray,
    grid: list[tuple[float, float, float]],
    starts: list[int],
    run: int,
    phase0: int,
    warm_keys: list[bytes],
) -> dict[int, FloatArray]:
    """Step every (block, candidate) lane and keep the best candidate per block.

    The ``run`` warm-up steps before a block see only data before it, which a later
    refresh of the same (still growing) block sees unchanged: the lanes' state after
    the warm-up of each pass's latest block is kept in ``_WARM_STATES`` (keyed by
    everything it depends on), so a refresh steps only the block itself."""
    blocks = len(starts)
    k = len(grid)
    lane_block = np.repeat(np.arange(blocks), k)
    params = np.tile(np.asarray(grid, dtype=np.float64), (blocks, 1))

    def lanes_of(rows: IntArray) -> _Lanes:
        block_of = lane_block[rows]
        return _Lanes(
            data=data[block_of],
            level=level0[block_of],
            seasonal=profile[block_of] if profile is not None else None,
            sigma=sigma[block_of],
            seen=seen[block_of],
            alpha=params[rows, 0],
            beta=params[rows, 1],
            gamma=params[rows, 2],
        )

    keys = warm_keys  # from _run_blocks: what each block's warm-up depends on
    warm: list[_LaneState | None] = [_WARM_STATES.get(key) for key in keys]
    missing = [i for i, state in enumerate(warm) if state is None]
    if missing:
        rows = np.concatenate([np.arange(i * k, (i + 1) * k) for i in missing])
        _, _, state = _hw_recursion(
            lanes_of(rows),
            damping=DAMPING,
            phase0=phase0,
            loss_from=run // 4,
            loss_to=run,
            steps=range(run),
        )
        for j, i in enumerate(missing):
            warm[i] = state.take(slice(j * k, (j + 1) * k))
        latest = max(missing, key=lambda i: starts[i])
        _WARM_STATES.put(
            keys[latest],
            state.take(slice(missing.index(latest) * k, (missing.index(latest) + 1) * k)),
        )
    forecasts, loss, _ = _hw_recursion(
        lanes_of(np.arange(blocks * k)),
        damping=DAMPING,
        phase0=phase0,
        loss_from=run // 4,
        loss_to=run,
        steps=range(run, data.shape[1]),
        state=_LaneState.stack([w for w in warm if w is not None]),
    )
    loss = loss.reshape(blocks, k)
    default = k // 2
    best = np.where(np.isfinite(loss).any(axis=1), np.argmin(loss, axis=1), default)
    chosen = forecasts.reshape(blocks, k, -1)[np.arange(blocks), best, run:]
    # Copies: a cached row that is a view would keep the whole pass's array alive.
    return {start: chosen[i].copy() for i, start in enumerate(starts)}


def _warm_key(
    data: FloatArray,
    *,
    level0: FloatArray,
    sigma: FloatArray,
    seen: IntArray,
    profile: FloatArray | None,
    row: int,
    grid: list[tuple[float, float, float]],
    run: int,
    phase0: int,
) -> bytes:
    """Everything the warm-up of block ``row`` depends on, hashed."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(np.ascontiguousarray(data[row, :run]).tobytes())
    head = [level0[row], sigma[row], float(seen[row]), float(run), float(phase0)]
    digest.update(np.asarray(head, dtype=np.float64).tobytes())
    digest.update(np.asarray(grid, dtype=np.float64).tobytes())
    if profile is not None:
        digest.update(np.ascontiguousarray(profile[row]).tobytes())
    return digest.digest()


class LRU(Generic[_V]):
    """A small thread-safe LRU."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[bytes, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> _V | None:
        with self._lock:
            state = self._items.get(key)
            if state is not None:
                self._items.move_to_end(key)
            return state

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def put(self, key: bytes, value: _V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)


#: Lanes' state after each pass's latest warm-up (~0.5 MB each at 15 s steps).
_WARM_STATES: LRU[_LaneState] = LRU(64)
#: Chosen forecast of each block (a block's cells, ~6 kB at 15 s steps).
_BLOCK_FORECASTS: LRU[FloatArray] = LRU(2048)
#: STL's forecast of each block before the phase correction (~6 kB at 15 s steps).
_STL_BLOCKS: LRU[FloatArray] = LRU(4096)


def clear_caches() -> None:
    """Forget Holt-Winters' warm-up states and block forecasts and STL's block
    forecasts (a cold start)."""
    _WARM_STATES.clear()
    _BLOCK_FORECASTS.clear()
    _STL_BLOCKS.clear()
