"""The ``transformer`` detector: a global, zero-shot quantile forecaster.

For every block of ``H`` points (block starts every ``H`` points after a short
warm-up) the model sees the ``C`` points before the block (NaN-padded and
masked when the series is shorter) plus, when the series holds a full day of
history before that context, the values exactly one day earlier for each
context and horizon position. It predicts quantiles for the ``H`` points of the
block: the median is the expected value.

**Band width from the model's own residuals.** The half-width is
``baselines.residual_band``'s, as STL's and Holt-Winters': ``BAND_K = 3.5`` robust
standard deviations (``max(1.4826 * MAD, q75 / 1.150)``) of this same forecast's
past residuals ``|value - expected|``, from the trailing ``calibration_points``
(512) or, with two earlier days at hand, pooled at the same time of day (+-1 h on
the last four days plus the last 2 h), and at least the baselines' ``flat_floor``
(half the smallest recent move, so an idle series with regular one-quantum jumps
scores 2 on a jump, not thousands). So wherever the forecast is closer than a
rolling median the band is narrower than the robust z-score's, and a step on a
noisy series scores accordingly. The pooled width needs 64 residuals in its pool
(steps of 10 min or finer); at coarser steps the pool (20 residuals at 1 h) is too
small for a robust spread and the trailing window alone sets the width.

The model's quantiles no longer set the width. They did, calibrated per block on
the ratios of past residuals to the claimed widths (clipped to 1-5x): after a
burst the model widened its band for a whole context, and an anomaly that
followed was hidden. Measured with the same rate-controlled alarm layer
(``python -m benchmarks detection --detectors robust_z,transformer``, NAB standard;
artificialNoAnomaly: false alarms per series per week), quantile width -> residual
width: artificialWithAnomaly 72.8 -> 73.1, realAdExchange 39.4 -> 70.2, realTraffic
24.2 -> 41.1, realTweets 46.1 -> 59.2, synthetic 46.8 -> 47.3, quiet 0.00 -> 0.00
/wk (robust z: -5.3, 59.3, 54.9, 49.7, 36.2, 0.00). The pooling rule moves only
realAdExchange, the one hourly corpus (always pooling: 51.5; never: 70.2, but 0.35
false alarms a week on the quiet daily series and 53.3 on artificialWithAnomaly).
The model's outer quantiles still serve the early phase correction below.

**Two views.** A forecast from the latest points follows a metric that leaves
its level a little at a time: each step is small, so a ramp of half a standard
deviation per point to a new level never leaves the band (on NAB's realTraffic,
occupancy climbing from 4 to 12.6 over ten points, where the per-hour profile of
``holt_winters`` still expected 5). So every block is also forecast from the same
context with its last ``delayed_view`` points (default: the horizon, i.e. the
forecast made one block earlier) masked as missing, a case the model is trained
on (missing runs). Each view gets its own band, from its own residuals as above;
a point's score is the larger of its two scores (the base class widens both bands
by one habitual-spike factor, set on that score), and the band shown is where
both agree (see ``base.intersect_bands``). Both views go through the model in
one batched pass; the ``ensemble`` borrows the delayed view alone. Measured
with ``python -m benchmarks detection`` against the single view: NAB
realTraffic 60.7 -> 75.8, artificial 33.6 -> 36.3, synthetic 46.1 / 45.1 / 45.5
-> 50.5 / 44.8 / 59.6. Other delays gave the same picture on realTraffic and
synthetic (4-16 points: realTraffic 62-76, synthetic mean +3.6 to +5.6, measured
before the joint score calibration); the horizon is the natural choice, not the best one picked.

**Phase correction.** A forecast from the last 128 points (or, in the delayed
view, from them a block earlier) cannot know that a batch window starts at
06:00 sharp: each day it misses the edge by most of the step, and the echo of
yesterday's values in the seasonal channel only blurs it. So each view gets
STL's correction (``phase_correction``, same four days): where the
view's residuals at this exact time of day on each of the last four days share
one sign, the smallest of them is added back to the forecast (expected and both
quantiles) before calibration. ``phase_days: 0`` turns it off. Measured earlier
(band-edge alarms, before the rate-controlled alarm layer and the residual band;
not re-measured since) with ``python -m benchmarks detection`` (transformer alone,
realTraffic / artificial / synthetic seeds 1-3): 75.8 / 36.3 / 50.5, 44.8, 59.6
without, 75.8 / 57.7 / 52.2, 47.9, 59.3 with; the default ensemble 77.1 / 88.7 /
63.7, 58.6, 66.3 without, 77.1 / 90.0 / 64.4, 59.0, 66.5 with.

Until four days are in (a young series, or after a gap), a view is also corrected
where it missed beyond the model's outer quantiles, on the same side, on each of the
last two or three days (``phase_correction``'s ``band``): a batch window's edge
then stops paging from its third day, not its fifth. On the 15 series without
anomalies of ``python -m benchmarks detection``'s quiet table (NAB's no-anomaly
kinds), the default ensemble's false alarms fell from 13 to 4 (seeds 0-2: 36 to
11), the transformer's from 12 to 3. The NAB and synthetic scores barely moved:
ensemble 77.1 / 90.0 / 65.1, 61.8, 67.9 -> 77.1 / 90.0 / 64.9, 61.8, 67.8 (seeds
4-6 63.9, 66.5, 66.6 -> 63.8, 66.5, 66.6); transformer alone 75.8 / 58.6 / 54.3,
49.3, 59.9 -> 75.8 / 58.6 / 54.2, 49.3, 59.8. Agreeing signs alone on two days
would be noise half the time: the transformer alone fell to 67.2 on realTraffic
that way.

The correction reads forecasts four days back, so a refresh would run the model
on four days of blocks for a few new points. Forecasts are therefore cached per
block in ``ForecastCaches.transformer_blocks``, keyed by the model, the block's
exact inputs (context and seasonal values) and the view's mask: a refresh runs the
model on new blocks only, and computes the older ones' inputs only for the stretches
the correction and the band width read (the needed points, and the same hours on
each earlier day).

Causality: a point's band depends on values before it (the block's forecast on
values before the block start) and on timestamps up to the block start (horizon
timestamps are the block start plus multiples of the typical step), so
``score(ts[:n], v[:n])`` equals the prefix of ``score(ts, v)`` on a regular grid.
The blocks not cached go through the model in batches of 512 windows, both views
together (float32, ``torch.inference_mode``; a few windows, as in a refresh, on one
thread).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.base import Band, Detector, median_step_s
from plugin_backend.scoring.caches import ForecastCaches, shared_caches
from plugin_backend.scoring.model import Forecaster, robust_normalise
from plugin_backend.scoring.phase_correction import PHASE_DAYS, phase_correction
from plugin_backend.scoring.residual_band import MIN_RESIDUALS, SCALE_DAYS, residual_band
from plugin_backend.types import FloatArray

__all__ = ["DAY_S", "ModelLoader", "TransformerDetector"]

#: Loads the weights a ``model_path`` option names (``None``: the shipped ones).
ModelLoader = Callable[[str | None], Forecaster]

DAY_S = 86_400.0
#: Windows per forward pass. Small batches keep each layer's activations (~2 MB at 512)
#: in the core's cache: 12,496 windows took 0.82 s of CPU on one thread at 512, 0.80 s at
#: 256 and 1.35 s at 4096; on two threads 0.50 / 0.54 / 0.87 s wall. The forecasts were
#: the same bits at every chunk size from 128 to 4096 (and on one or two threads).
_FORWARD_CHUNK = 512
#: Fewer windows than this are forecast on one thread (see ``_forward``).
_PARALLEL_MIN_WINDOWS = 128
#: Residuals a time-of-day pooled band width needs (see ``_pooled_period``); with
#: fewer (steps above 10 min) the band width comes from the trailing window alone.
_POOL_MIN_RESIDUALS = 64


class TransformerDetector(Detector):
    """Zero-shot transformer forecaster band (see the module docstring)."""

    name: ClassVar[str] = "transformer"
    min_points: ClassVar[int] = 16

    def __init__(
        self,
        *,
        sensitivity: float = 1.0,
        min_deviation: float = 0.0,
        model_path: str | None = None,
        model: Forecaster | None = None,
        calibration_points: int = 512,
        stride: int | None = None,
        delayed_view: int | None = None,
        phase_days: int = PHASE_DAYS,
        caches: ForecastCaches | None = None,
        load_model: ModelLoader | None = None,
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        if isinstance(phase_days, bool) or not isinstance(phase_days, int) or phase_days < 0:
            raise InvalidTarget(f"phase_days must be an integer >= 0, got {phase_days!r}")
        self.phase_days = phase_days
        if delayed_view is not None and delayed_view < 0:
            raise InvalidTarget(f"delayed_view must be >= 0, got {delayed_view}")
        self.delayed_view = delayed_view
        self.model_path = model_path
        if isinstance(calibration_points, bool) or not isinstance(calibration_points, int):
            raise InvalidTarget(
                f"calibration_points must be an integer, got {calibration_points!r}"
            )
        if calibration_points < MIN_RESIDUALS:
            raise InvalidTarget(
                f"calibration_points must be >= {MIN_RESIDUALS}, got {calibration_points}"
            )
        self.calibration_points = calibration_points
        if stride is not None and stride < 1:
            raise InvalidTarget(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self._model = model
        self._load_model = load_model
        self.caches = caches if caches is not None else shared_caches()

    @property
    def model(self) -> Forecaster:
        """The model given, else the one ``load_model`` (injected by the registry's
        factory) loads, else the artefact store's (a detector built on its own)."""
        if self._model is None and self._load_model is not None:
            self._model = self._load_model(self.model_path)
        if self._model is None:
            from plugin_backend.adapters.artifacts import load_model_or_default

            self._model, _meta = load_model_or_default(self.model_path)
        return self._model

    # -- geometry ------------------------------------------------------------
    def _period_points(self, step_s: float) -> int:
        """One day in points, or 0 when the step makes the seasonal channel unusable."""
        horizon = self.model.config.horizon
        if not step_s > 0 or not self.model.config.use_seasonal:
            return 0
        period = round(DAY_S / step_s)
        return period if period > horizon else 0

    def history_points(self, step_s: float) -> int:
        cfg = self.model.config
        period = self._period_points(step_s)
        # The band width reads residuals ``_scale_reach`` back, each phase-corrected from
        # forecasts ``phase_days`` days before it; a forecast reads its context and the
        # day before it.
        reach = self._scale_reach(period)
        return cfg.context + period * (1 + self.phase_days) + reach + cfg.horizon

    def _pooled_period(self, period: int) -> int:
        """The daily period for ``residual_band``'s time-of-day pooled width, or 0 (a
        trailing window only) when the pool would hold fewer than
        ``_POOL_MIN_RESIDUALS`` residuals: the last 2 h and +-1 h on each of
        ``SCALE_DAYS`` days are 20 residuals at an hourly step, too few for a robust
        spread (its standard error is ~30%)."""
        if period <= 0:
            return 0
        half = max(1, round(period / 24))
        pooled = max(8, 2 * half) + SCALE_DAYS * (2 * half + 1)
        return period if pooled >= _POOL_MIN_RESIDUALS else 0

    def _scale_reach(self, period: int) -> int:
        """How far back ``residual_band`` reads residuals, in points."""
        reach = self.calibration_points + 1
        pooled = self._pooled_period(period)
        if pooled:
            reach = max(reach, SCALE_DAYS * pooled + max(1, round(pooled / 24)) + 1)
        return reach

    # -- band ----------------------------------------------------------------
    def _hidden_points(self) -> int:
        """Latest context points the delayed view does not see (0: no such view)."""
        return self.model.config.horizon if self.delayed_view is None else self.delayed_view

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        return self._forecast_bands(timestamps_s, values, needed_from, hide=(0,))[0]

    def _views(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> list[Band]:
        hidden = self._hidden_points()
        hide = (0, hidden) if hidden else (0,)
        return self._forecast_bands(timestamps_s, values, needed_from, hide=hide)

    def _slowest_view(
        self, timestamps_s: FloatArray, values: FloatArray, *, needed_from: int = 0
    ) -> Band:
        hide = (self._hidden_points(),)  # the delayed view alone (or the only one)
        return self._forecast_bands(timestamps_s, values, needed_from, hide=hide)[0]

    def _forecast_bands(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        needed_from: int,
        *,
        hide: tuple[int, ...],
    ) -> list[Band]:
        """One band per entry of ``hide``: forecasts from contexts whose last
        ``hide[k]`` points are masked as missing (forecast in one pass)."""
        cfg = self.model.config
        c = cfg.context
        # Forecasts are made every ``h`` points and each keeps its first ``h`` steps:
        # a stride below the horizon judges points against nearer, tighter forecasts.
        h = min(self.stride or cfg.horizon, cfg.horizon)
        n = values.shape[0]
        nan = np.full(n, np.nan)
        finite = np.isfinite(values)
        seen = np.cumsum(finite)  # seen[i-1] = finite points in values[:i]
        ready = np.flatnonzero(seen >= self.min_points)
        if ready.size == 0 or ready[0] + 1 >= n:
            return [Band(nan, nan.copy(), nan.copy()) for _ in hide]
        first = int(ready[0]) + 1  # first block start: min_points finite values before it
        step_s = median_step_s(timestamps_s)
        period = self._period_points(step_s)
        starts = _block_starts(timestamps_s, first, h, step_s)
        # A refresh needs the new points' blocks and, for their band width and phase
        # correction, the forecasts of the residuals the width reads, and of that
        # stretch on each of the ``phase_days`` days before: skip the rest.
        back = [d * period for d in range(self.phase_days + 1)] if period else [0]
        reach = self._scale_reach(period)
        wanted = np.zeros(starts.size, dtype=np.bool_)
        for shift in back:  # the same stretch of the series ``d`` days earlier
            lo, hi = needed_from - reach - shift, n - shift
            wanted |= (starts + h > lo) & (starts < hi)
        starts = starts[wanted]
        if starts.size == 0:
            return [Band(nan, nan.copy(), nan.copy()) for _ in hide]

        ctx_idx = starts[:, None] + np.arange(-c, 0)[None, :]
        ctx_ok = ctx_idx >= 0
        context = np.where(ctx_ok, values[np.clip(ctx_idx, 0, n - 1)], np.nan)
        season = np.full((starts.size, c + cfg.horizon), np.nan)
        if period:
            season = self._seasonal(
                timestamps_s, values, starts=starts, ctx_idx=ctx_idx, ctx_ok=ctx_ok, step_s=step_s
            )
        q_all = self._cached_forecasts(context, season, hide)[:, :h, :]  # (views * B, h, Q)

        pos_2d = starts[:, None] + np.arange(h)[None, :]
        # Each block keeps its points up to the next block's start (and the series end).
        next_start = np.append(starts[1:], n)
        keep = (pos_2d < next_start[:, None]).ravel()
        pos = pos_2d.ravel()

        cells = np.rint(timestamps_s / step_s).astype(np.int64) if period else None
        return [
            self._view_band(
                values,
                q,
                starts,
                pos=pos,
                keep=keep,
                needed_from=needed_from,
                cells=cells,
                period=period,
            )
            for q in np.split(q_all, len(hide))
        ]

    def _view_band(
        self,
        values: FloatArray,
        q: FloatArray,
        starts: np.ndarray[Any, np.dtype[np.int64]],
        *,
        pos: np.ndarray[Any, np.dtype[np.int64]],
        keep: np.ndarray[Any, np.dtype[np.bool_]],
        needed_from: int,
        cells: np.ndarray[Any, np.dtype[np.int64]] | None = None,
        period: int = 0,
    ) -> Band:
        """Phase-corrected, calibrated, floored band of one view from its block
        quantiles ``q``."""
        cfg = self.model.config
        n, h = values.shape[0], q.shape[1]
        nan = np.full(n, np.nan)

        def spread(index: int) -> FloatArray:
            out = nan.copy()
            out[pos[keep]] = q[:, :, index].ravel()[keep]
            return out

        last = len(cfg.quantiles) - 1
        expected, lower, upper = spread(cfg.median_index), spread(0), spread(last)
        if cells is not None and period and self.phase_days:
            shift = phase_correction(
                cells, values, expected, period, self.phase_days, band=(lower, upper)
            )
            expected, lower, upper = expected + shift, lower + shift, upper + shift
        # The band width: the robust spread of this view's own past residuals (at this
        # time of day where the step allows), as the baselines' bands.
        band = residual_band(
            values,
            expected,
            self.calibration_points,
            cells=cells,
            period=self._pooled_period(period),
            needed_from=needed_from,
        )
        # Only blocks with needed points get a band; earlier ones lent their forecasts
        # to the band width and the phase correction.
        banded = starts + h > needed_from
        shown = np.zeros(n, dtype=np.bool_)
        shown[pos[keep]] = np.repeat(banded, h)[keep]
        return Band(
            *(np.where(shown, edge, np.nan) for edge in (band.expected, band.lower, band.upper))
        )

    def _seasonal(
        self,
        ts: FloatArray,
        values: FloatArray,
        *,
        starts: np.ndarray[Any, np.dtype[np.int64]],
        ctx_idx: np.ndarray[Any, np.dtype[np.int64]],
        ctx_ok: np.ndarray[Any, np.dtype[np.bool_]],
        step_s: float,
    ) -> FloatArray:
        """Values one day before each context/horizon position (NaN when unknown).

        Only blocks whose day-earlier context lies fully inside the series get it
        (the model was trained with a full or an absent seasonal channel).
        """
        cfg = self.model.config
        c, h = cfg.context, cfg.horizon
        n = ts.shape[0]
        # Neighbouring blocks' contexts overlap: look the day-earlier point of every
        # point of the series up once, and gather.
        inside = np.clip(ctx_idx, 0, n - 1)
        day_pick, day_near = _nearest(ts, ts - DAY_S, step_s)
        pick, near = day_pick[inside], day_near[inside]
        # padded context positions continue the nominal grid backwards
        padded = np.flatnonzero(~ctx_ok.all(axis=1))
        if padded.size:
            back = ts[starts[padded]][:, None] + step_s * np.arange(-c, 0)[None, :]
            back_pick, back_near = _nearest(ts, back - DAY_S, step_s)
            outside = ~ctx_ok[padded]
            pick[padded] = np.where(outside, back_pick, pick[padded])
            near[padded] = np.where(outside, back_near, near[padded])
        hor_ts = ts[starts][:, None] + step_s * np.arange(h)[None, :]
        hor_pick, hor_near = _nearest(ts, hor_ts - DAY_S, step_s)
        pick = np.concatenate([pick, hor_pick], axis=1)
        ok = np.concatenate([near, hor_near], axis=1) & (pick < starts[:, None])
        season = np.where(ok, values[pick], np.nan)
        first_ts = np.where(ctx_ok[:, 0], ts[inside[:, 0]], ts[starts] + step_s * -c)
        covered = first_ts - DAY_S >= ts[0] - 0.5 * step_s
        season[~covered] = np.nan
        return season

    def _cached_forecasts(
        self, context: FloatArray, season: FloatArray, hide: tuple[int, ...]
    ) -> FloatArray:
        """Quantile forecasts ``(len(hide) * B, H, Q)`` in the series' units: for each
        entry of ``hide``, each row of inputs with its last ``hide[k]`` context points
        masked as missing. Forecasts seen before (same model, same inputs, same mask)
        come from the injected caches, so a refresh runs the model on new blocks only.
        A block's inputs are hashed once for all its views."""
        token = _model_token(self.model)
        inputs = np.ascontiguousarray(np.concatenate([context, season], axis=1))
        width = inputs.shape[1] * inputs.itemsize
        data = memoryview(inputs.tobytes())
        # SHA-256 (with the CPU's SHA instructions) hashes ~1.6x faster than BLAKE2b here.
        digests = [
            hashlib.sha256(data[i * width : (i + 1) * width]).digest()
            for i in range(inputs.shape[0])
        ]
        keys = [token + int(hidden).to_bytes(8, "little") + d for hidden in hide for d in digests]
        cached = [self.caches.transformer_blocks.get(key) for key in keys]
        missing = np.asarray([i for i, hit in enumerate(cached) if hit is None], dtype=np.int64)
        if missing.size:
            rows = missing % context.shape[0]
            view = context[rows]
            c = context.shape[1]
            for k, hidden in enumerate(hide):
                if hidden:
                    view[missing // context.shape[0] == k, -min(hidden, c) :] = np.nan
            x, s, loc, scale = robust_normalise(view, season[rows])
            fresh = self._forward(x, s) * scale[:, None, None] + loc[:, None, None]
            for i, forecast in zip(missing.tolist(), fresh, strict=True):
                kept = forecast.copy()  # a view would keep the whole batch alive
                self.caches.transformer_blocks.put(keys[i], kept)
                cached[i] = kept
        return np.stack([hit for hit in cached if hit is not None])

    def _forward(self, x: FloatArray, s: FloatArray) -> FloatArray:
        model = self.model
        # A refresh forecasts a few windows: splitting them across threads costs more
        # than it gains, and on a busy machine far more (the bench's refresh at 24 h @
        # 15 s, load ~5 on 2 cores: 415-455 ms wall on two threads, 73-115 ms on one).
        # The forecasts are the same bits on one thread or two.
        threads = torch.get_num_threads()
        alone = x.shape[0] < _PARALLEL_MIN_WINDOWS and threads > 1
        if alone:
            torch.set_num_threads(1)
        outs: list[FloatArray] = []
        try:
            with torch.inference_mode():
                for i in range(0, x.shape[0], _FORWARD_CHUNK):
                    xt = torch.from_numpy(
                        np.ascontiguousarray(x[i : i + _FORWARD_CHUNK], np.float32)
                    )
                    st = torch.from_numpy(
                        np.ascontiguousarray(s[i : i + _FORWARD_CHUNK], np.float32)
                    )
                    outs.append(model(xt, st).numpy().astype(np.float64))
        finally:
            # Undo only this call's change (meanwhile a large batch forecast by another
            # thread of this process may run on one thread: slower, the same bits).
            if alone:
                torch.set_num_threads(threads)
        return np.concatenate(outs, axis=0)


_MODEL_TOKENS: weakref.WeakKeyDictionary[Forecaster, bytes] = weakref.WeakKeyDictionary()
_TOKENS_LOCK = threading.Lock()


def _model_token(model: Forecaster) -> bytes:
    """A random id per loaded model, so cached forecasts never outlive their weights."""
    with _TOKENS_LOCK:
        token = _MODEL_TOKENS.get(model)
        if token is None:
            token = _MODEL_TOKENS[model] = uuid.uuid4().bytes
        return token


def _nearest(
    ts: FloatArray, want: FloatArray, step_s: float
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.bool_]]]:
    """The index of the point nearest each time in ``want`` (the earlier one on a tie),
    and whether it lies within half a step of it."""
    n = ts.shape[0]
    right = np.clip(np.searchsorted(ts, want), 0, n - 1)
    left = np.clip(right - 1, 0, n - 1)
    pick = np.where(np.abs(ts[left] - want) <= np.abs(ts[right] - want), left, right)
    return pick, np.abs(ts[pick] - want) <= 0.5 * step_s


def _block_starts(
    timestamps_s: FloatArray, first: int, horizon: int, step_s: float
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Forecast block starts on the absolute time grid (every ``horizon`` steps since the
    epoch), so a series and any tail of it share blocks and a cached refresh equals a
    full rescore. Gaps or denser sampling never leave more than ``horizon`` points
    between two starts."""
    n = timestamps_s.shape[0]
    if not step_s > 0:
        return np.arange(first, n, horizon, dtype=np.int64)
    grid = np.round(timestamps_s[first:] / step_s).astype(np.int64)
    starts = [first]
    for aligned in (np.flatnonzero(grid % horizon == 0) + first).tolist():
        if aligned <= starts[-1]:
            continue
        while aligned - starts[-1] > horizon:
            starts.append(starts[-1] + horizon)
        starts.append(aligned)
    while n - starts[-1] > horizon:
        starts.append(starts[-1] + horizon)
    return np.asarray(starts, dtype=np.int64)
