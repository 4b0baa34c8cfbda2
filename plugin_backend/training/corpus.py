"""Seeded synthetic training corpus for the global forecaster (numpy only).

Each training example is one window of a synthetic monitoring series:

* ``context`` ``(C,)``: the last ``C`` points before the forecast origin;
* ``season`` ``(C + H,)``: the values exactly one day before each context and
  horizon position (all NaN for ~30 % of windows: the caller lacked history);
* ``target`` ``(H,)``: the next ``H`` points (NaN where missing; masked in the loss).

Series vary in step (15 s … 1 h), daily shapes (harmonics, business-hours
plateaus, peaks; random phase/amplitude, often none), weekly weekend effects,
day-to-day amplitude drift, trends, random walks, AR(1) / heavy-tailed /
heteroscedastic noise, level shifts, and value types: gauges at any scale,
log-normal (latency-like), Poisson counters turned into per-second rates,
integer gauges, bounded percentages, near-constant and constant series.
Spikes, transient dips, level shifts and NaN runs are injected mostly into the
context and the seasonal context (robustness), rarely into the target, so the
model learns bands for ordinary behaviour. A shift in the context starts at least
``FRESH_SHIFT_GAP`` points before the target, so a jump in the last points is
always transient here and the model does not widen its band to hedge for it.

Examples are generated in chunks sharing one step (vectorised); for steps where
a day plus the window fits in ~1,600 points the day-earlier values come from the
same contiguous simulated series, otherwise from a second simulated segment one
day earlier (independent noise, random-walk gap scaled to the day).

No real data is mixed in: NAB is the evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["DAY_S", "STEPS_S", "WindowBatch", "generate_windows"]

F64 = npt.NDArray[np.float64]
_T = TypeVar("_T", bound=np.generic)

DAY_S = 86_400
STEPS_S: tuple[int, ...] = (15, 30, 60, 120, 300, 600, 900, 1800, 3600)
_STEP_WEIGHTS = np.array([0.16, 0.1, 0.16, 0.08, 0.2, 0.1, 0.08, 0.06, 0.06])
_CONTIGUOUS_MAX = 1_600
#: A level shift in the context starts at least this many points before the target.
#: So a jump in the last few points is always transient in training and the model
#: keeps forecasting the old level with its usual spread until a shift has lasted
#: this long: what a detector needs to flag the shift's first points, instead of a
#: band that hedges between "spike" and "new level" (measured: 2-3x wider).
FRESH_SHIFT_GAP = 16
_CHUNK = 32


@dataclass(frozen=True, slots=True, eq=False)
class WindowBatch:
    """``n`` training windows (raw units, NaN where missing)."""

    context: F64  # (n, C)
    season: F64  # (n, C + H)
    target: F64  # (n, H)
    step_s: F64  # (n,)

    def __len__(self) -> int:
        return int(self.context.shape[0])


def generate_windows(
    n: int,
    context: int,
    horizon: int,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    clean_targets: bool = False,
) -> WindowBatch:
    """``n`` windows; deterministic for a given ``seed`` (or the state of ``rng``).

    ``clean_targets``: target points hit by an injected anomaly (a level shift or a
    spike inside the target) are NaN, so a loss skips them and the model learns the
    band of normal behaviour instead of hedging for anomalies in its upper tail. The
    random draws are the same either way."""
    if rng is None:
        rng = np.random.default_rng(seed)
    parts: list[WindowBatch] = []
    remaining = n
    while remaining > 0:
        m = min(_CHUNK, remaining)
        parts.append(_chunk(rng, m, context, horizon, clean_targets))
        remaining -= m
    if not parts:
        return WindowBatch(
            np.empty((0, context)),
            np.empty((0, context + horizon)),
            np.empty((0, horizon)),
            np.empty(0),
        )
    return WindowBatch(
        np.concatenate([p.context for p in parts]),
        np.concatenate([p.season for p in parts]),
        np.concatenate([p.target for p in parts]),
        np.concatenate([p.step_s for p in parts]),
    )


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size: int | tuple[int, ...]) -> F64:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _col(a: npt.NDArray[_T]) -> npt.NDArray[_T]:
    return a[:, None]


def _chunk(  # noqa: PLR0915
    rng: np.random.Generator, m: int, c: int, h: int, clean_targets: bool = False
) -> WindowBatch:
    step = int(rng.choice(STEPS_S, p=_STEP_WEIGHTS / _STEP_WEIGHTS.sum()))
    period = DAY_S // step
    length = c + h
    contiguous = period + length <= _CONTIGUOUS_MAX
    t0 = rng.uniform(0, 364 * DAY_S, m)
    if contiguous:
        size = period + length
        offsets = (np.arange(size) - period) * step
        cur = period + np.arange(length)
        split = -1
    else:
        size = 2 * length
        base = np.arange(length) * step
        offsets = np.concatenate([base - DAY_S, base])
        cur = length + np.arange(length)
        split = length
    seas = cur - period if contiguous else np.arange(length)
    times = _col(t0) + offsets[None, :].astype(np.float64)
    k = np.arange(size)[None, :]
    ctx_end = int(cur[c])  # grid index of the first target point
    first_cur = int(cur[0])

    # --- daily shape, unit std over a day -------------------------------------
    day_frac = times / DAY_S
    grid = np.linspace(0.0, 1.0, 96, endpoint=False)[None, :]

    def shape_at(frac: F64) -> F64:
        out = np.zeros((m, frac.shape[1]))
        for harmonic in range(1, 4):
            out += _col(amp_h[:, harmonic - 1]) * np.cos(
                2 * np.pi * harmonic * frac + _col(ph_h[:, harmonic - 1])
            )
        sq = 1.0 / (
            1.0 + np.exp(-_col(sharp) * (np.cos(2 * np.pi * (frac - _col(ph_sq))) - _col(thr)))
        )
        bump = np.exp(_col(kappa) * (np.cos(2 * np.pi * (frac - _col(ph_b))) - 1.0))
        return out + _col(w_sq) * sq + _col(w_b) * bump

    amp_h = rng.uniform(0, 1, (m, 3)) * np.array([1.0, 0.5, 0.25]) * (rng.random((m, 1)) < 0.7)
    ph_h = rng.uniform(0, 2 * np.pi, (m, 3))
    w_sq = rng.uniform(0, 1.5, m) * (rng.random(m) < 0.5)
    sharp = _loguniform(rng, 2.0, 300.0, m)
    thr = rng.uniform(-0.6, 0.6, m)
    ph_sq = rng.uniform(0, 1, m)
    w_b = rng.uniform(0, 1.5, m) * (rng.random(m) < 0.3)
    kappa = _loguniform(rng, 1.0, 40.0, m)
    ph_b = rng.uniform(0, 1, m)
    ref = shape_at(np.repeat(grid, m, axis=0))
    ref_std = ref.std(axis=1)
    has_daily = (ref_std > 1e-6) & (rng.random(m) < 0.75)
    daily = (shape_at(day_frac) - _col(ref.mean(axis=1))) / _col(
        np.where(ref_std > 1e-6, ref_std, 1.0)
    )
    daily_amp = np.where(has_daily, _loguniform(rng, 0.3, 40.0, m), 0.0)
    # day-to-day amplitude drift and weekend effects
    day_idx = np.floor(day_frac).astype(np.int64)
    rel_day = day_idx - day_idx.min(axis=1, keepdims=True)
    day_factor = 1.0 + _col(rng.uniform(0, 0.15, m)) * rng.standard_normal((m, 4))
    daily = daily * np.take_along_axis(day_factor, np.clip(rel_day, 0, 3), axis=1)
    weekend = ((day_idx + _col(rng.integers(0, 7, m))) % 7) >= 5
    weekly = rng.random(m) < 0.25
    wk_scale = rng.uniform(0.2, 1.0, m)
    wk_level = rng.uniform(-1.0, 0.5, m)
    daily = np.where(weekend & _col(weekly), daily * _col(1 - wk_scale) + _col(wk_level), daily)
    daily = daily * _col(daily_amp)

    # --- noise (unit scale before heteroscedasticity) -------------------------
    phi = np.where(rng.random(m) < 0.35, rng.uniform(0.3, 0.97, m), 0.0)
    df = rng.uniform(2.2, 6.0, m)
    heavy = rng.random(m) < 0.3
    innov = np.where(
        _col(heavy),
        rng.standard_t(np.repeat(_col(df), size, axis=1)) * _col(np.sqrt((df - 2) / df)),
        rng.standard_normal((m, size)),
    )
    noise = np.empty((m, size))
    noise[:, 0] = innov[:, 0]
    gain = np.sqrt(1 - phi**2)
    for j in range(1, size):
        if j == split:
            noise[:, j] = innov[:, j]
        else:
            noise[:, j] = phi * noise[:, j - 1] + gain * innov[:, j]
    hetero = np.where(rng.random(m) < 0.3, rng.uniform(0.2, 1.0, m), 0.0)
    pos_shape = np.clip(daily / _col(np.maximum(daily_amp, 1e-9)), -1.5, 3.0)
    noise = noise * np.clip(1.0 + _col(hetero) * pos_shape, 0.2, None)
    noise_level = np.where(rng.random(m) < 0.05, 0.02, 1.0)  # some nearly noiseless series
    y = daily + noise * _col(noise_level)

    # --- trend and random walk ------------------------------------------------
    slope = np.where(
        rng.random(m) < 0.3, rng.standard_normal(m) * _loguniform(rng, 0.1, 10.0, m), 0.0
    )
    y += _col(slope) * (times - _col(t0)) / DAY_S
    rw_sigma = np.where(rng.random(m) < 0.25, _loguniform(rng, 0.02, 0.5, m), 0.0)
    inc = rng.standard_normal((m, size))
    if split > 0:
        inc[:, split] *= np.sqrt(period - length + 1)
    y += np.cumsum(inc, axis=1) * _col(rw_sigma)

    # --- level shifts (mostly before the target), transient dips ----------------
    sign = np.where(rng.random(m) < 0.5, -1.0, 1.0)
    has_shift = rng.random(m) < 0.15
    shift_pos = rng.integers(0, ctx_end - FRESH_SHIFT_GAP, m)
    in_target = rng.random(m) < 0.02
    shift_pos = np.where(in_target, rng.integers(ctx_end, size, m), shift_pos)
    shift_mag = sign * rng.uniform(3.0, 15.0, m) * (has_shift | in_target)
    y += _col(shift_mag) * (k >= _col(shift_pos))
    injected = _col(in_target) & (k >= _col(shift_pos))  # anomalies inside the target
    has_dip = rng.random(m) < 0.08
    dip_start = rng.integers(0, ctx_end, m)
    dip_len = rng.integers(3, 40, m)
    dip = (k >= _col(dip_start)) & (k < _col(np.minimum(dip_start + dip_len, ctx_end)))
    y += _col(-sign * rng.uniform(3.0, 12.0, m) * has_dip) * dip

    # --- spikes: context and yesterday often, target rarely ---------------------
    for lo, hi, p_first in ((first_cur, ctx_end, 0.3), (0, first_cur, 0.1), (ctx_end, size, 0.01)):
        if hi <= lo:
            continue
        prob = p_first
        for _ in range(3):
            hit = rng.random(m) < prob
            start = rng.integers(lo, hi, m)
            width = rng.integers(1, 4, m)
            mag = np.where(rng.random(m) < 0.7, 1.0, -1.0) * _loguniform(rng, 4.0, 40.0, m)
            region = (k >= _col(start)) & (k < _col(np.minimum(start + width, hi)))
            y += _col(mag * hit) * region
            if lo == ctx_end:
                injected |= region & _col(hit)
            prob *= 0.5

    # --- value types ----------------------------------------------------------
    y_std = np.maximum(np.nanstd(y[:, first_cur:ctx_end], axis=1), 1e-6)
    kind = rng.choice(7, m, p=[0.42, 0.12, 0.16, 0.1, 0.08, 0.07, 0.05])
    scale = _loguniform(rng, 1e-2, 1e5, m)
    level = scale * np.where(
        rng.random(m) < 0.85, _loguniform(rng, 0.5, 200.0, m), rng.uniform(-20, 20, m)
    )
    gauge = _col(level) + _col(scale) * y
    gamma = rng.uniform(0.03, 0.6, m) / y_std
    logn = _col(level * (level > 0) + scale * (level <= 0)) * np.exp(
        np.clip(_col(gamma) * y, -30, 30)
    )
    rate = _loguniform(rng, 0.01, 100.0, m)
    lam = _col(rate) * np.exp(np.clip(_col(gamma) * y, -30, 30))
    counts = rng.poisson(np.minimum(lam * step, 1e9)).astype(np.float64)
    counter = counts / step
    int_level = rng.uniform(0, 20, m)
    int_gauge = np.round(np.maximum(_col(int_level) + _col(rng.uniform(0.3, 3.0, m)) * y, 0.0))
    percent = np.clip(_col(rng.uniform(5, 90, m)) + _col(rng.uniform(0.5, 8, m)) * y, 0.0, 100.0)
    near_const = _col(level) * (1.0 + 1e-5 * y)
    constant = np.repeat(_col(np.round(level)), size, axis=1)
    blip = rng.random((m, size)) < 0.003
    constant = constant + blip * _col(np.maximum(np.abs(np.round(level)) * 0.01, 1.0))
    values = np.select(
        [kind[:, None] == i for i in range(7)],
        [gauge, logn, counter, int_gauge, percent, near_const, constant],
    )

    # --- missing points -------------------------------------------------------
    for _ in range(3):
        hit = rng.random(m) < 0.12
        start = rng.integers(0, size, m)
        width = rng.integers(1, 30, m)
        region = (k >= _col(start)) & (k < _col(start + width)) & _col(hit)
        values = np.where(region, np.nan, values)
    no_season = rng.random(m) < 0.3
    season = values[:, seas]
    season = np.where(_col(no_season), np.nan, season)
    target = values[:, cur[c:]]
    if clean_targets:
        target = np.where(injected[:, cur[c:]], np.nan, target)
    return WindowBatch(
        context=values[:, cur[:c]],
        season=season,
        target=target,
        step_s=np.full(m, float(step)),
    )
