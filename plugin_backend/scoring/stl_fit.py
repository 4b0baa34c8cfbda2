"""Robust (M)STL decompositions on binned history and the robust level + trend
extrapolations the STL detector forecasts a block with."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from plugin_backend.scoring.grid_cells import SUB_BLOCK, TREND_HISTORY, cell_values
from plugin_backend.scoring.robust import IntArray, row_nanmedian
from plugin_backend.types import FloatArray

__all__ = [
    "Decomposition",
    "decompose",
    "deseasonalised_forecast",
    "level_trend_forecast",
    "level_trend_forecasts",
]


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
class Decomposition:
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


def decompose(
    cells: IntArray,
    values: FloatArray,
    *,
    coarse: int,
    periods: tuple[int, ...],
    bins: int,
    end: int,
) -> Decomposition | None:
    """(M)STL on ``bins`` bin medians of ``coarse`` cells ending at cell ``end``
    (holes interpolated; None when fewer than half the bins hold data). Bin medians
    keep single spikes in the history from bending the fit."""
    from statsmodels.tsa.seasonal import MSTL, STL

    origin = end - bins * coarse
    raw = cell_values(cells, values, origin, end)
    binned = row_nanmedian(raw.reshape(bins, coarse)) if coarse > 1 else raw
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
    return Decomposition(
        origin=origin,
        coarse=coarse,
        trend=np.asarray(fit.trend, dtype=np.float64),
        seasonal=tuple(
            (seasonal[:, i].copy(), period) for i, period in enumerate(periods[: seasonal.shape[1]])
        ),
    )


def level_trend_forecast(
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
    ``level_history`` cells (at least 8 points).

    Only the points after the last gap of more than 8 cells count (the run trigger's
    gap), and a gap of that size just before ``start`` gives None: a slope fitted
    across a gap, or extrapolated over one, is a guess (a spike just before a scrape
    gap extrapolated to 10,948 where the values are 100-200 on NAB's TravelTime_387)."""
    lo, hi = np.searchsorted(cells, (start - history, start))
    x = cells[lo:hi]
    y = values[lo:hi]
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if y.size < SUB_BLOCK or start - x[-1] > SUB_BLOCK:
        return None
    cuts = np.flatnonzero(np.diff(x) > SUB_BLOCK)
    if cuts.size:
        x, y = x[cuts[-1] + 1 :], y[cuts[-1] + 1 :]
        if y.size < SUB_BLOCK:
            return None
    half = y.size // 2
    dx = _median(x[half:]) - _median(x[:half])
    slope = (_median(y[half:]) - _median(y[:half])) / dx if dx > 0 else 0.0
    ref = start - 1
    recent = min(int(np.searchsorted(x, start - level_history)), y.size - SUB_BLOCK)
    level = _median(y[recent:] - slope * (x[recent:] - ref))
    return level + slope * (targets - ref).astype(np.float64)


def level_trend_forecasts(
    cells: IntArray, values: FloatArray, starts: IntArray, targets: IntArray, owner: IntArray
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """``level_trend_forecast`` (default histories) for many starts at once, where it is
    cheap: each start whose ``TREND_HISTORY`` cells before it all hold finite values
    (``done``), forecast at the targets it owns (``targets[i]`` belongs to
    ``starts[owner[i]]``). The same operations per row, so the same values; the
    caller forecasts the other starts one by one."""
    history = TREND_HISTORY
    lo = np.searchsorted(cells, starts - history)
    full = np.searchsorted(cells, starts) - lo == history  # every cell holds a point
    rows = lo[full][:, None] + np.arange(history)
    done = full.copy()
    done[full] = np.isfinite(values[rows]).all(axis=1)
    rows = rows[done[full]]
    x, y = cells[rows], values[rows]
    half = history // 2
    dx = _row_medians(x[:, half:]) - _row_medians(x[:, :half])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(dx > 0, (_row_medians(y[:, half:]) - _row_medians(y[:, :half])) / dx, 0.0)
    ref = starts[done] - 1
    level = _row_medians(y - slope[:, None] * (x - ref[:, None]))
    at = np.full(starts.shape[0], -1)
    at[done] = np.arange(ref.shape[0])
    mine = done[owner]
    row = at[owner[mine]]
    out = np.full(targets.shape[0], np.nan)
    out[mine] = level[row] + slope[row] * (targets[mine] - ref[row]).astype(np.float64)
    return out, done


def _row_medians(rows: FloatArray | IntArray) -> FloatArray:
    """``_median`` of each row."""
    n = rows.shape[1]
    ordered = np.sort(rows, axis=1)
    middle = n // 2
    if n % 2:
        return ordered[:, middle].astype(np.float64)
    low = ordered[:, middle - 1].astype(np.float64)
    high = ordered[:, middle].astype(np.float64)
    out: FloatArray = (low + high) / 2.0
    return out


def _median(values: FloatArray | IntArray) -> float:
    """``float(np.median(values))`` of a non-empty array without NaN, without its
    per-call overhead (this runs five times per STL sub-block): the middle order
    statistic, or the mean of the two middle ones, exactly as ``np.median``."""
    n = values.shape[0]
    middle = n // 2
    if n % 2:
        return float(np.partition(values, middle)[middle])
    low, high = np.partition(values, (middle - 1, middle))[middle - 1 : middle + 1]
    return float((np.float64(low) + np.float64(high)) / 2.0)


def deseasonalised_forecast(
    cells: IntArray,
    values: FloatArray,
    fit: Decomposition,
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
    trend = level_trend_forecast(
        recent, deseasonalised, start, targets, history=history, level_history=level_history
    )
    if trend is None:
        return None
    return trend + fit.seasonal_at(targets)
