"""Cells on the absolute time grid the block-refitted detectors (STL, Holt-Winters)
work on: grid cells, the daily season and block sizes, and the absolute-time blocks.
(Which step a query is scored at is ``plugin_backend.timegrid``'s business; this
module takes the points it is given.)

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

import itertools
import math
from dataclasses import dataclass

import numpy as np

from plugin_backend.scoring.base import median_step_s
from plugin_backend.scoring.robust import IntArray
from plugin_backend.types import FloatArray

__all__ = [
    "DAY_S",
    "SUB_BLOCK",
    "TREND_HISTORY",
    "Season",
    "cell_values",
    "grid",
    "group_bounds",
    "history_span",
    "known_blocks",
    "recent_finite",
    "season_of",
]

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


def grid(timestamps_s: FloatArray) -> tuple[float, IntArray]:
    """The step and each point's absolute cell ``round(t / step)`` (non-decreasing)."""
    step = median_step_s(timestamps_s)
    if not step > 0:
        step = 1.0
    cells: IntArray = np.rint(timestamps_s / step).astype(np.int64)
    return step, cells


def cell_values(cells: IntArray, values: FloatArray, start: int, stop: int) -> FloatArray:
    """Values on cells ``[start, stop)``, NaN where no point sits (last point wins)."""
    out = np.full(stop - start, np.nan)
    lo, hi = np.searchsorted(cells, (start, stop))
    out[cells[lo:hi] - start] = values[lo:hi]
    return out


def recent_finite(
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


def history_span(finite_cells: IntArray, start: int, lookback: int) -> tuple[int, int]:
    """(cells from the first finite point in ``[start - lookback, start)`` to ``start``,
    finite points in that range)."""
    lo, hi = np.searchsorted(finite_cells, (start - lookback, start))
    if hi <= lo:
        return 0, 0
    return int(start - finite_cells[lo]), int(hi - lo)


@dataclass(frozen=True, slots=True)
class Season:
    period: int  # cells per day
    coarse: int  # cells per STL bin
    block: int  # cells per refit


def season_of(step_s: float) -> Season | None:
    period = round(DAY_S / step_s) if step_s > 0 else 0
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        return None
    coarse = max(1, period // COARSE_PERIOD)
    # ~period/8 (36 cells = 3 h at 5 min), >= 8 cells, a multiple of two STL bins.
    unit = 2 * coarse
    block = unit * max(1, math.ceil(max(SUB_BLOCK, period / 8) / unit))
    return Season(period, coarse, block)


def known_blocks(cells: IntArray, block: int, prior_expected: FloatArray | None) -> set[int]:
    """Block starts whose every point already has a finite prior expected value."""
    if prior_expected is None:
        return set()
    known: set[int] = set()
    for lo, hi in group_bounds(cells // block):
        if np.isfinite(prior_expected[lo:hi]).all():
            known.add(int(cells[lo] // block) * block)
    return known


def group_bounds(keys: IntArray) -> list[tuple[int, int]]:
    """``[lo, hi)`` index ranges of equal consecutive keys."""
    if keys.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(keys)) + 1
    edges = [0, *cuts.tolist(), int(keys.size)]
    return list(itertools.pairwise(edges))
