"""What a forecast keeps missing at the same time of day, given back to it: a sharp
daily step (a cron job, a batch window) that a smooth seasonal shape cuts across.
Used by STL and the transformer."""

from __future__ import annotations

import numpy as np

from plugin_backend.scoring.robust import IntArray
from plugin_backend.types import FloatArray

__all__ = ["EARLY_PHASE_DAYS", "PHASE_DAYS", "phase_correction"]

#: Days whose residuals at the same phase must agree before STL corrects a phase.
PHASE_DAYS = 4
#: Fewest recent days whose misses beyond a forecast's band correct it (see phase_correction).
EARLY_PHASE_DAYS = 2


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
