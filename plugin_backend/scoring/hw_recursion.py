"""The robust damped Holt-Winters recursion, vectorised over lanes (one per block and
candidate smoothing parameters), and the classical decomposition lanes start from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from plugin_backend.scoring.grid_cells import SUB_BLOCK
from plugin_backend.scoring.robust import MAD_TO_SIGMA, IntArray, row_nanmedian
from plugin_backend.types import FloatArray

__all__ = [
    "DAMPING",
    "LONG_GAP",
    "WARM",
    "LaneState",
    "Lanes",
    "diff_sigma",
    "hw_recursion",
    "seasonal_init",
]

#: Per-step trend damping (the trend's whole future contribution is <= 49 steps of it).
DAMPING = 0.98
#: Errors are clipped at CLIP * sigma before they update the state (Huber-type robust HW).
CLIP = 3.0
#: Smoothing of the running error scale, and E[min(Z^2, CLIP^2)] for Z ~ N(0, 1).
_SCALE_RATE = 0.05
_CLIPPED_VAR = 0.9707
#: Observed points a lane needs before it forecasts (when it starts without history).
WARM = 8
#: More consecutive missing steps than this (the run trigger's gap, STL's) carry no
#: trend: a slope extrapolated over a long gap is a guess.
LONG_GAP = SUB_BLOCK


@dataclass(frozen=True, slots=True)
class Lanes:
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
class LaneState:
    """The recursion's state between two steps (one row per lane; the seasonal state
    time-major, ``(period, lanes)``, as the recursion steps it)."""

    level: FloatArray
    trend: FloatArray
    seasonal: FloatArray | None  # (period, lanes)
    sigma: FloatArray
    seen: IntArray
    loss: FloatArray
    loss_n: FloatArray
    gap: IntArray  # consecutive missing steps up to now

    def take(self, rows: slice) -> LaneState:
        return LaneState(
            self.level[rows].copy(),
            self.trend[rows].copy(),
            self.seasonal[:, rows].copy() if self.seasonal is not None else None,
            self.sigma[rows].copy(),
            self.seen[rows].copy(),
            self.loss[rows].copy(),
            self.loss_n[rows].copy(),
            self.gap[rows].copy(),
        )

    @staticmethod
    def stack(parts: list[LaneState]) -> LaneState:
        seasonals = [p.seasonal for p in parts if p.seasonal is not None]
        return LaneState(
            np.concatenate([p.level for p in parts]),
            np.concatenate([p.trend for p in parts]),
            np.concatenate(seasonals, axis=1) if seasonals else None,
            np.concatenate([p.sigma for p in parts]),
            np.concatenate([p.seen for p in parts]),
            np.concatenate([p.loss for p in parts]),
            np.concatenate([p.loss_n for p in parts]),
            np.concatenate([p.gap for p in parts]),
        )


def hw_recursion(  # noqa: PLR0912, PLR0915 - the hot loop in one piece: no call per step
    lanes: Lanes,
    *,
    damping: float,
    phase0: int,
    loss_from: int,
    loss_to: int,
    steps: range | None = None,
    state: LaneState | None = None,
    keep_forecasts: bool = True,
) -> tuple[FloatArray, FloatArray, LaneState]:
    """Additive damped Holt-Winters in error-correction form, one lane per row.

    ``yhat_t = l + phi*b + s[phase]``; with ``e = y_t - yhat_t`` clipped to
    ``+- CLIP*sigma``: ``l = l + phi*b + alpha*e``, ``b = phi*b + alpha*beta*e``,
    ``s[phase] += gamma*e`` -- statsmodels'
    ``ExponentialSmoothing(trend="add", damped_trend=True, seasonal="add")`` when
    nothing is clipped. Missing points leave the state coasting, for ``LONG_GAP``
    steps: from a gap's next missing step on, the level stays and the trend is 0, so
    what follows a long gap is forecast with at most ``LONG_GAP`` steps of damped
    trend, not the trend extrapolated over the whole gap.
    Runs ``steps`` (consecutive; every column by default) from ``state`` (the lanes'
    initial state by default; never modified). Returns the one-step forecasts (NaN
    until a lane is warm, and outside ``steps``; no columns with
    ``keep_forecasts=False``, for a warm-up whose forecasts nobody reads), each lane's
    mean clipped absolute error over steps ``[loss_from, loss_to)``, and the state
    after the last step.

    ``lanes.data`` and ``lanes.seasonal`` may be transposed views of time-major arrays
    (``(T, lanes)``, as ``_run_lanes`` builds them): the recursion reads them time-major,
    so it then copies nothing.
    """
    n_lanes, total = lanes.data.shape
    steps = steps if steps is not None else range(total)
    if steps.step != 1:
        raise ValueError(f"steps must be consecutive, got {steps}")
    first = steps.start
    if state is not None:
        level, trend, sigma = state.level.copy(), state.trend.copy(), state.sigma.copy()
        seen, loss, loss_n = state.seen.copy(), state.loss.copy(), state.loss_n.copy()
        seasonal = np.array(state.seasonal) if state.seasonal is not None else None
        gap = state.gap.copy()
    else:
        level, trend, sigma = lanes.level.copy(), np.zeros(n_lanes), lanes.sigma.copy()
        seen, loss, loss_n = lanes.seen.copy(), np.zeros(n_lanes), np.zeros(n_lanes)
        seasonal = np.array(lanes.seasonal.T, order="C") if lanes.seasonal is not None else None
        gap = np.zeros(n_lanes, dtype=np.int64)
    # Time-major (each step reads and writes contiguous rows: with a thousand lanes and
    # a 15 s day's period, the lane-major columns cost more than the arithmetic), only
    # the columns stepped, and the products that do not change between steps taken once.
    # Every float operation is the textbook form's, in its order: bit-identical.
    data = np.ascontiguousarray(lanes.data[:, first : max(steps.stop, first)].T)
    full_rows = (np.count_nonzero(np.isfinite(data), axis=1) == n_lanes).tolist()
    period = seasonal.shape[0] if seasonal is not None else 1
    clip_sigma0 = CLIP * lanes.sigma
    alpha, gamma = lanes.alpha, lanes.gamma
    alpha_beta = lanes.alpha * lanes.beta  # alpha * beta * e == (alpha * beta) * e
    forecasts = np.empty((total if keep_forecasts else 0, n_lanes))
    if keep_forecasts:  # rows outside ``steps`` stay NaN; the others are all written
        forecasts[:first] = np.nan
        forecasts[max(steps.stop, first) :] = np.nan
    # What every step computes, written in place (``out``; on unmasked steps the state
    # too): the same operations without allocating their results.
    damped, base, bound, error, clipped, term, forecast = (np.empty(n_lanes) for _ in range(7))
    add, mul, sub = np.add, np.multiply, np.subtract  # no attribute look-ups
    all_warm = False  # every lane has seen WARM points (``seen`` only grows)
    # Unmasked steps since ``seen`` and ``loss_n`` were last brought up to date: added at
    # once (integer counts: exact), before a masked step reads them and at the end.
    owed_seen = owed_n = 0
    # Whether ``gap`` is what an all-observed step leaves (0): true from the start or
    # after the shortcut, which so need not write it.
    synced = state is None
    for t in steps:
        y = data[t - first]
        phase = (t - phase0) % period
        season_t = seasonal[phase] if seasonal is not None else 0.0
        all_warm = all_warm or bool((seen >= WARM).all())
        mul(damping, trend, damped)
        add(level, damped, base)
        yhat = forecasts[t] if keep_forecasts else forecast
        add(base, season_t, yhat)
        mul(CLIP, sigma, bound)
        if all_warm and full_rows[t - first] and not math.isnan(add.reduce(yhat)):
            # Every lane observed, warm and forecast (a sum is NaN when any term is): no
            # level is NaN, so the masks below are all true, and no error is NaN, so
            # neither is an unclipped sigma's update (one that is inf stays inf). The
            # same operations without them, the state updated in place.
            sub(y, yhat, error)
            np.negative(bound, clipped)
            np.maximum(error, clipped, out=clipped)
            np.minimum(clipped, bound, out=clipped)
            if loss_from <= t < loss_to:
                np.abs(error, term)
                np.minimum(term, clip_sigma0, out=term)
                add(loss, term, loss)
                owed_n += 1
            mul(alpha, clipped, term)
            add(base, term, level)
            owed_seen += 1
            mul(alpha_beta, clipped, term)
            add(damped, term, trend)
            if seasonal is not None:
                mul(gamma, clipped, term)
                row = seasonal[phase]
                add(row, term, row)
            _next_sigma_in_place(sigma, clipped, term)
            synced = True
            continue
        if synced:
            gap, synced = np.zeros(n_lanes, dtype=np.int64), False
        seen += owed_seen
        loss_n += owed_n
        owed_seen = owed_n = 0
        if keep_forecasts:
            yhat = yhat.copy()
            forecasts[t] = np.where(seen >= WARM, yhat, np.nan)
        observed = np.isfinite(y)
        fresh = observed & np.isnan(level)
        known = observed & ~fresh
        error = np.where(known, y - yhat, 0.0)
        clipped = np.minimum(np.maximum(error, -bound), bound)  # np.clip, without its cost
        if loss_from <= t < loss_to:
            scored = known & (seen >= WARM)
            loss += np.where(scored, np.minimum(np.abs(error), clip_sigma0), 0.0)
            loss_n += scored
        before = level
        level = np.where(fresh, y - season_t, base + alpha * clipped)
        seen += observed
        update = known & np.isfinite(sigma)
        trend = damped + alpha_beta * clipped
        gap = np.where(observed, 0, gap + 1)
        long_gap = gap > LONG_GAP
        if long_gap.any():
            level = np.where(long_gap, before, level)
            trend = np.where(long_gap, 0.0, trend)
        if seasonal is not None:
            seasonal[phase] += gamma * clipped
        sigma = _next_sigma(sigma, error, bound, update)
    seen += owed_seen
    loss_n += owed_n
    if synced:
        gap = np.zeros(n_lanes, dtype=np.int64)
    forecasts = forecasts.T  # (lanes, steps): a view; index lanes, do not reshape it
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_loss = np.where(loss_n > 0, loss / loss_n, np.inf)
    return forecasts, mean_loss, LaneState(level, trend, seasonal, sigma, seen, loss, loss_n, gap)


def _next_sigma(
    sigma: FloatArray, error: FloatArray, bound: FloatArray, update: npt.NDArray[np.bool_]
) -> FloatArray:
    """The running error scale after one step (kept where ``update`` is false)."""
    out: FloatArray = np.where(
        update,
        np.sqrt(
            (1 - _SCALE_RATE) * sigma**2
            + _SCALE_RATE * np.minimum(error**2, bound**2) / _CLIPPED_VAR
        ),
        sigma,
    )
    return out


def _next_sigma_in_place(sigma: FloatArray, clipped: FloatArray, scratch: FloatArray) -> None:
    """``_next_sigma`` of every lane, written into ``sigma``: ``min(error**2, bound**2)``
    is ``clipped**2`` (rounding is monotone), the other operations are the same."""
    mul = np.multiply
    mul(clipped, clipped, scratch)
    mul(_SCALE_RATE, scratch, scratch)
    np.divide(scratch, _CLIPPED_VAR, scratch)
    mul(sigma, sigma, sigma)
    mul(1 - _SCALE_RATE, sigma, sigma)
    np.add(sigma, scratch, sigma)
    np.sqrt(sigma, sigma)


def seasonal_init(history: FloatArray, period: int) -> tuple[FloatArray, FloatArray, FloatArray]:
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
    # Centres half .. cells - (period - half): the window of centre c is [c - half,
    # c + period - half), a difference of the cumulative sums (slices, not gathers).
    stop = cells - period + 1
    total = csum[:, period : period + stop] - csum[:, :stop]
    count = ccount[:, period : period + stop] - ccount[:, :stop]
    moving = np.full((blocks, cells), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        moving[:, half : half + stop] = np.where(count >= period / 2, total / count, np.nan)
    detrended = (history - moving).reshape(blocks, days, period)
    profile = _day_medians(detrended)
    known = np.isfinite(profile)
    centre_level = np.where(known, profile, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    profile = np.where(known, profile - centre_level[:, None], 0.0)
    by_day = history.reshape(blocks, days, period)
    deseason = (by_day - profile[:, None, :]).reshape(blocks, cells)
    remainder = np.abs(detrended - profile[:, None, :]).reshape(blocks, cells)
    sigma = MAD_TO_SIGMA * _wide_nanmedian(remainder)
    return profile, deseason, sigma


def _day_medians(by_day: FloatArray) -> FloatArray:
    """``row_nanmedian`` over the days of ``(blocks, days, period)`` values: the same
    order statistics and interpolation as ``row_order_stat``, without transposing the
    values into rows. Four days (the default) need only the three smallest, which a
    partial sorting network finds; its compare-exchange puts NaN last, as a sort does
    (``fmin`` skips it, ``maximum`` keeps it)."""
    days = by_day.shape[1]
    count = days - np.count_nonzero(np.isnan(by_day), axis=1)
    pos = 0.5 * np.maximum(count - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    frac = pos - lo
    if days == 4:
        a, b, c, d = by_day.transpose(1, 0, 2)
        a, b = np.fmin(a, b), np.maximum(a, b)
        c, d = np.fmin(c, d), np.maximum(c, d)
        first, c = np.fmin(a, c), np.maximum(a, c)
        b = np.fmin(b, d)  # the largest, maximum(b, d), is never read
        second, third = np.fmin(b, c), np.maximum(b, c)
        # Ranks (lo, hi): (1, 2) with 3 or 4 values, (0, 1) with 2, (0, 0) with 1.
        low, high = second, third
        short = count < 3
        if short.any():
            low = np.where(short, first, second)
            high = np.where(short, np.where(count == 2, second, first), third)
    else:
        ordered = np.sort(by_day, axis=1)
        low = np.take_along_axis(ordered, lo[:, None, :], axis=1)[:, 0]
        high = np.take_along_axis(ordered, hi[:, None, :], axis=1)[:, 0]
    out: FloatArray = low * (1 - frac) + high * frac
    out[count < 1] = np.nan
    return out


def _wide_nanmedian(rows: FloatArray) -> FloatArray:
    """``row_nanmedian`` of a few long rows: the two middle order statistics by
    ``np.partition`` (NaN last, as in a sort), rows with as many finite values together,
    so the same values as the sort it saves (3x faster at 4 days of 15 s)."""
    count = rows.shape[1] - np.count_nonzero(np.isnan(rows), axis=1)
    pos = 0.5 * np.maximum(count - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    frac = pos - lo
    out = np.full(rows.shape[0], np.nan)
    for finite in np.unique(count).tolist():
        same = np.flatnonzero(count == finite)
        low, high = int(lo[same[0]]), int(hi[same[0]])
        kth = (low, high) if high != low else low
        ordered = np.partition(rows[same], kth, axis=1)
        out[same] = ordered[:, low] * (1 - frac[same]) + ordered[:, high] * frac[same]
    out[count < 1] = np.nan
    return out


def diff_sigma(history: FloatArray) -> FloatArray:
    """Robust noise scale from first differences (``inf`` where unknown)."""
    diffs = np.abs(np.diff(history, axis=1))
    sigma = MAD_TO_SIGMA * row_nanmedian(diffs, SUB_BLOCK) / math.sqrt(2)
    return np.where(np.isfinite(sigma), sigma, np.inf)
