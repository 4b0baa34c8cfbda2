"""A band for sustained deviations: the mean residual of the last few points.

A point band judges each point alone, so a deviation of two or three standard
deviations that lasts hours never pages: a daily peak that does not come, a
metric frozen at its last value, traffic that drops by a third. Each point is
inside the band; the run of same-signed residuals is what is abnormal.

``sustained_band`` turns that into a band for the point itself, so it can sit
beside the other views (score = the largest, band shown = where all agree). With
residuals ``r = value - expected`` of a base band, the mean of the last ``points``
residuals (this one included) must stay within ``ONE_SHOT * c`` times the base
band's half-widths. ``c`` is how much smaller such means have been than single
residuals over the trailing ``window`` (robust spreads, re-measured every
``SPREAD_BLOCK`` steps): ``1/sqrt(points)`` for independent noise, up to 1 for
residuals that move together. ``ONE_SHOT`` keeps its false alarms as rare as the
base band's (below). Solved for this point's value: ``expected - s + m * ONE_SHOT
* c * [-below, +above]``, with ``s`` the sum of the previous residuals and ``m`` the
number averaged. After a few points below expectation the band moves up, and a
point that is low again falls out of it.

Causal: the band of point ``i`` uses residuals before ``i`` and the base band at
``i``. Points with too few residuals in their run get no band (NaN).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from plugin_backend.scoring.base import Band, median_step_s
from plugin_backend.scoring.baselines import sigma_before
from plugin_backend.types import FloatArray

__all__ = ["ONE_SHOT", "SPREAD_BLOCK", "sustained_band"]

#: A run may miss this share of its points (scrapes missing) and still be judged.
_MISSING_SHARE = 0.25
_MIN_SPREAD_POINTS = 64
#: How much wider the band of a mean is than the base band's, in the base band's
#: standard deviations. Means of consecutive points move together, so one excursion
#: is already two points in a row out of band (which confirms a window); the base
#: band needs two independent excursions. On Gaussian noise two points in a row
#: beyond 3.5 sigma happen at ~2e-7 per point, and one beyond 5.2 sigma does too.
ONE_SHOT = 1.5
#: The spread of residuals and of their means is re-measured every this many steps.
SPREAD_BLOCK = 64


def sustained_band(
    timestamps_s: FloatArray, values: FloatArray, base: Band, *, points: int, window: int
) -> Band:
    """The band under which the mean of the last ``points`` residuals from ``base``
    stays inside ``base``'s half-widths scaled to the spread of such means over the
    trailing ``window`` points (see the module docstring)."""
    n = values.shape[0]
    nan = np.full(n, np.nan)
    if points < 2 or n == 0:
        return Band(nan, nan.copy(), nan.copy())
    residual = values - base.expected
    known = np.isfinite(residual)
    sums = np.concatenate([[0.0], np.cumsum(np.where(known, residual, 0.0))])
    counts = np.concatenate([[0], np.cumsum(known)])
    index = np.arange(n)
    start = np.maximum(index - points + 1, 0)
    previous_sum = sums[index] - sums[start]
    previous_count = counts[index] - counts[start]
    run_count = counts[index + 1] - counts[start]
    least = points - int(_MISSING_SHARE * points)  # residuals a judged run needs
    enough = run_count >= least
    with np.errstate(invalid="ignore", divide="ignore"):
        run_mean = np.where(enough & known, (sums[index + 1] - sums[start]) / run_count, np.nan)
    # The spreads are measured at the start of each block of SPREAD_BLOCK points on the
    # absolute time grid, from the window before it (a point never sees its own block),
    # so a series and any tail of it with enough context get the same band.
    block_start = _spread_block_firsts(timestamps_s)
    starts = np.flatnonzero(block_start)
    single = sigma_before(np.abs(residual), starts, window, _MIN_SPREAD_POINTS)
    means = sigma_before(np.abs(run_mean), starts, window, _MIN_SPREAD_POINTS)
    owner = np.cumsum(block_start) - 1
    single, means = single[owner], means[owner]
    with np.errstate(invalid="ignore", divide="ignore"):
        shrink = np.clip(means / single, 1.0 / np.sqrt(points), 1.0)
    averaged = previous_count + 1
    judged = (averaged >= least) & np.isfinite(shrink)
    centre = base.expected - previous_sum
    widen = averaged * shrink * ONE_SHOT
    above = widen * (base.upper - base.expected)
    below = widen * (base.expected - base.lower)
    lower = np.where(judged, centre - below, np.nan)
    upper = np.where(judged, centre + above, np.nan)
    return Band(np.where(judged, centre, np.nan), lower, upper)


def _spread_block_firsts(timestamps_s: FloatArray) -> npt.NDArray[np.bool_]:
    """True at the first point of each block of ``SPREAD_BLOCK`` steps of the time grid
    (and at the first point)."""
    step_s = median_step_s(timestamps_s)
    n = timestamps_s.shape[0]
    if step_s > 0:
        block = np.floor(timestamps_s / (step_s * SPREAD_BLOCK)).astype(np.int64)
    else:
        block = np.arange(n, dtype=np.int64) // SPREAD_BLOCK
    return np.concatenate([[True], block[1:] != block[:-1]]) if n else np.zeros(0, np.bool_)
