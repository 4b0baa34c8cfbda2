"""The band of a forecast: ``expected +- max(BAND_K * sigma, floor)`` with ``sigma``
from the forecast's own past residuals (see :mod:`plugin_backend.scoring.robust`).

The residuals come from the trailing ``scale_window`` points or, once a daily
period is known and two earlier days exist, from the same hour (+-1 h) of the
last four days plus the last 2 h: busy hours get a wider band than quiet nights.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from plugin_backend.scoring.base import Band
from plugin_backend.scoring.grid_cells import MIN_PERIOD, Season
from plugin_backend.scoring.robust import (
    BAND_K,
    CHUNK,
    IntArray,
    flat_floor,
    rolling_sigma,
    rolling_sigma_at,
    row_sigma,
)
from plugin_backend.types import FloatArray

__all__ = ["MIN_RESIDUALS", "SCALE_DAYS", "residual_band", "scale_reach"]

#: Residuals needed in the trailing window before a band exists (STL, Holt-Winters).
MIN_RESIDUALS = 8
#: Days of same-time-of-day residuals behind the band width (with a daily period).
SCALE_DAYS = 4
#: Residuals taken from each day (and from the recent past) for the pooled band width.
_POOL_PART = 25


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
    if cells is not None and period >= MIN_PERIOD:
        sigma = _phase_pooled_sigma(residuals, cells, period, needed_from)
        # The trailing window's sigma only where the pooled one is unknown.
        first = max(needed_from, 0)
        fallback = np.flatnonzero(~np.isfinite(sigma[first:])) + first
        sigma[fallback] = rolling_sigma_at(residuals, window, MIN_RESIDUALS, fallback)
    else:
        sigma = rolling_sigma(residuals, window, MIN_RESIDUALS, needed_from)
    half = np.maximum(BAND_K * sigma, flat_floor(values, window, expected, needed_from))
    shown = np.where(np.isfinite(half), expected, np.nan)
    return Band(shown, shown - half, shown + half)


def scale_reach(window: int, season: Season | None) -> int:
    """How far back ``residual_band`` looks (residuals and values), in points."""
    reach = window + 1
    if season is not None:
        half = max(1, round(season.period / 24))
        reach = max(reach, SCALE_DAYS * season.period + half + 1)
    return reach


def _phase_pooled_sigma(
    residuals: FloatArray, cells: IntArray, period: int, first: int = 0
) -> FloatArray:
    """Robust sigma (``row_sigma``) of the residuals at the same time of day
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
    width = recent_rows.shape[1]
    out = np.full(n, np.nan)
    for start in range(max(first, 0), n, CHUNK):
        stop = min(start + CHUNK, n)
        here = np.arange(start, stop)
        # Each part written into its columns of one array (no concatenated copy).
        pooled = np.empty((stop - start, width + SCALE_DAYS * offsets.size))
        pooled[:, :width] = recent_rows[start:stop]
        days_seen = np.zeros(stop - start, dtype=np.int64)
        for day in range(1, SCALE_DAYS + 1):
            centre = np.searchsorted(cells, cells[start:stop] - day * period)  # sorted
            idx = centre[:, None] + offsets
            part = pooled[:, width + (day - 1) * offsets.size : width + day * offsets.size]
            if centre[0] + offsets[0] >= 0 and bool(np.all(centre + offsets[-1] < here - recent)):
                part[:] = residuals[idx]  # every point of the day's part is in the past
            else:
                ok = (idx >= 0) & (idx < here[:, None] - recent)
                part[:] = np.where(ok, residuals[np.clip(idx, 0, n - 1)], np.nan)
            days_seen += 2 * np.count_nonzero(np.isfinite(part), axis=1) > offsets.size
        sigma = row_sigma(pooled, MIN_RESIDUALS)
        out[start:stop] = np.where(days_seen >= 2, sigma, np.nan)
    return out
