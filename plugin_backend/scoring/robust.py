"""Robust statistics shared by every detector's band: the MAD constant, the band
width, rolling medians and robust scales, and the band's floor.

Band calibration
----------------
``half-width = max(BAND_K * sigma, floor)``. ``sigma`` is a robust scale of the
detector's own past residuals ``|value - expected|`` (for ``RobustZ``: of the
deviations from the window median): ``max(1.4826 * median, q75 / 1.150)``.
Both terms equal the standard deviation for Gaussian noise; the median (a MAD
taken about zero, so a systematic forecast bias widens the band too) ignores up
to half outliers, the 75% quantile keeps the band open where most residuals are
exactly zero (idle or quantised series) and still ignores an incident filling a
quarter of the window (a 90% quantile did not: one 30-minute incident in the
last five hours doubled the band for hours after it).

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
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from plugin_backend.types import FloatArray

__all__ = [
    "ABS_FLOOR",
    "BAND_K",
    "CHUNK",
    "MAD_TO_SIGMA",
    "Q75_TO_SIGMA",
    "REL_FLOOR",
    "IntArray",
    "flat_floor",
    "rolling_median_sigma",
    "rolling_sigma",
    "rolling_sigma_at",
    "row_nanmedian",
    "row_order_stat",
    "row_sigma",
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
#: Rows, and cells, per chunk in the sliding-window passes (~10 MB per temporary).
CHUNK = 4096
_CHUNK_CELLS = 4096 * 300


def _trailing_chunks(
    x: FloatArray, window: int, first: int = 0
) -> Iterator[tuple[slice, FloatArray]]:
    """Row ``i`` of the yielded views is ``x[i - window : i]`` (NaN-padded on the left):
    the trailing window *excluding* point ``i``; rows from ``first`` on."""
    n = x.shape[0]
    padded = np.concatenate((np.full(window, np.nan), x))
    view = sliding_window_view(padded, window)
    rows = max(1, min(CHUNK, _CHUNK_CELLS // window))
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


def row_nanmedian(rows: FloatArray, min_count: int = 1) -> FloatArray:
    """Median of each row ignoring NaN (NaN where fewer than ``min_count`` are finite)."""
    srt, count = sorted_rows(rows)
    med = row_order_stat(srt, count, 0.5)
    med[count < max(min_count, 1)] = np.nan
    return med


def row_sigma(deviations: FloatArray, min_count: int) -> FloatArray:
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


def rolling_sigma(
    deviations: FloatArray, window: int, min_count: int, first: int = 0
) -> FloatArray:
    """Causal rolling robust sigma (``row_sigma``) of absolute deviations (NaN before
    row ``first``)."""
    out = np.full(deviations.shape[0], np.nan)
    for sl, rows in _trailing_chunks(deviations, window, first):
        out[sl] = row_sigma(rows, min_count)
    return out


def rolling_sigma_at(
    deviations: FloatArray, window: int, min_count: int, rows: npt.NDArray[np.intp]
) -> FloatArray:
    """``rolling_sigma`` at ``rows`` only (each row's sigma is its own window's)."""
    padded = np.concatenate((np.full(window, np.nan), deviations))
    view = sliding_window_view(padded, window)
    out = np.full(rows.shape[0], np.nan)
    per_chunk = max(1, min(CHUNK, _CHUNK_CELLS // window))
    for start in range(0, rows.shape[0], per_chunk):
        part = rows[start : start + per_chunk]
        out[start : start + part.shape[0]] = row_sigma(view[part], min_count)
    return out


def rolling_median_sigma(
    x: FloatArray, window: int, min_count: int
) -> tuple[FloatArray, FloatArray]:
    """Causal rolling median and robust sigma of the deviations from it."""
    med = np.full(x.shape[0], np.nan)
    sigma = np.full(x.shape[0], np.nan)
    for sl, rows in _trailing_chunks(x, window):
        m = row_nanmedian(rows, min_count)
        med[sl] = m
        sigma[sl] = row_sigma(np.abs(rows - m[:, None]), min_count)
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
    # A row whose smallest positive change in the window is above its threshold has
    # that as its smallest change above the threshold: one rolling minimum serves every
    # such row (the usual case); the others compare each change with their threshold.
    with np.errstate(invalid="ignore"):
        positive = np.where(diffs > 0, diffs, np.inf)
    for sl, rows in _trailing_chunks(positive, window, first):
        smallest = np.fmin.reduce(rows, axis=1)  # NaN only where the window is padding
        with np.errstate(invalid="ignore"):
            settled = smallest > threshold[sl]
        quantum[sl] = np.where(settled & np.isfinite(smallest), smallest, 0.0)
        rest = np.flatnonzero(~settled)
        if rest.size == 0:
            continue
        if 2 * rest.size > settled.size:  # mostly unsettled: the whole chunk, no gather
            rest = np.arange(settled.size)
        part = rows[rest] if rest.size < settled.size else rows
        at = rest + sl.start
        with np.errstate(invalid="ignore"):
            above = part > threshold[at, None]
        smallest = np.where(above, part, np.inf).min(axis=1)
        quantum[at] = np.where(np.isfinite(smallest), smallest, 0.0)
    return np.maximum(np.maximum(0.5 * quantum, threshold), ABS_FLOOR)
