"""A per-series alarm threshold that bounds how often a healthy series pages.

A detector's score says how far a point lies outside its band (1 = on the edge),
but how often a healthy series crosses 1 depends on the series: a spiky metric
crosses it daily, a smooth one never. This module turns scores into a per-point
*threshold* chosen so that, on the series' own recent history, a point exceeds it
with probability ``q`` per point -- peaks over threshold, as SPOT does (Siffer et
al., "Anomaly detection in streams with extreme value theory", KDD 2017):

1. take the trailing ``window_points`` finite *samples* (strictly before the block
   the point is in, see below; a sample is a point, or at fine steps the highest
   score of a few minutes of points: see "A window of time");
2. the *initial threshold* ``t`` is their ``initial_quantile`` (0.98) quantile;
3. fit a generalised Pareto distribution (GPD) to the excesses over ``t`` by
   probability-weighted moments (Hosking & Wallis 1987: closed form, no solver
   that can fail to converge), shape clipped to ``[0, 0.5]`` (never a bounded
   tail: a threshold just above the largest score seen would page on the next
   one; never heavier than a tail with finite variance);
4. exceedances come in clusters (a bad minute is several points): the *extremal
   index* ``theta`` (runs estimator: clusters of consecutive scores over ``t`` per
   score over ``t``, 1 for lone ones) turns a per-cluster risk into a per-point
   one, ``q / theta``;
5. the alarm threshold is ``z_q = t + sigma / xi * ((q * N / (theta * N_t)) ** -xi
   - 1)`` (``sigma * ln(theta * N_t / (q * N))`` at ``xi = 0``): the score whose
   clusters of exceedances come with probability ``q`` per point, extrapolated
   beyond the data, so ``q`` may be far smaller than ``1 / window_points``;
6. a few absurd points in the window must not inflate the fit: the moments are
   taken without the excesses beyond a robust first guess of the far tail (an
   exponential tail through the excesses' median, at a risk of ``1e-6``).
   SPOT also never learns from a peak it alarmed on; that rule (tried with a
   second fit without the first fit's alarms, to keep memory bounded) lowered the
   default's worst nab-dev corpus from 40.2 to 30.4 and was left out. So the
   threshold is a function of the last ``window_points`` samples only, and a cache
   holding those scores resumes it exactly.

**Two triggers.** A point pages when its score exceeds its threshold, or when the
mean of its last ``run_points`` (8) scores exceeds *that* series' threshold (fitted
the same way): hours of points each just outside the band are rare as a run even
when no single point is. Each trigger gets half the risk, so the bound holds for
both together. (Default ensemble, nab-dev + synthetic at ``f974575``: worst corpus
45.5 without the run trigger, 54.0 with it, ``--ablations``; measured earlier,
robust_z, STL, Holt-Winters and the transformer each gained 4-8 points on their
worst corpus with it, and false alarms on quiet series halved.) The mean reaches
back only to the last gap in the data longer than its own ``run_points`` steps:
across a gap of hours, the last scores before it (a spike just before a collector
went down) made the normal points after it page again hours after the spike (NAB
realTraffic's TravelTime_387: three or four times for each detector).

The threshold is never below 1: a point inside the detector's band never pages.

**Ensembles.** A series scored by an ensemble carries each member's scores
(``ScoredSeries.member_scores``). Each row gets its own fits (its own ``memo``
keys), at ``q / k`` for ``k`` members, and a point's normalized score is the
largest of the rows' (``SeriesFit``): the members' alarms together keep the rate
(Bonferroni), and each member is judged against its own tail.

**A window of time.** The promise is per day, so the history it is estimated on
is a span of time, not a count of points: 2,000 points at 5 min were 6.9 days, but
8.3 hours at 15 s, where one earlier fault made the next one normal (a threshold
for one alarm per three days cannot tell a fault that recurs twice a day from one
that recurs weekly on less than three days of history). So the tail is fitted on
*samples*: a point at steps of ``sample_s`` (5 min) or coarser, as before, and at
finer steps the highest score of each bucket of ``points_per_sample`` whole steps
on the absolute time grid (a bucket pages exactly when one of its points does, so
the rate per bucket is the rate per stretch of time). ``window_points`` (2,000),
``block_points`` (64) and ``min_fit_points`` (256) count samples: the window is
6.9 days at steps of 30 s, 1 min and 5 min (5.6 at 2 min: buckets are whole steps),
refitted every 5 h 20 min. At finer
steps the points a window holds, which a first view must score, are bounded by
``max_window_points`` (20,000: 3.5 days at 15 s, still longer than the three days
the pager promises between alarms; buckets of 150 s). The fit's cost is bounded by
``window_points`` samples at any step. Coarser than 5 min, 2,000 points as before.
(The run trigger stays ``run_points`` points.)

**Why EVT and not a conformal quantile of the score.** A conformal threshold for
a per-sample risk ``q`` is an order statistic and needs at least ``1 / q`` samples:
one alarm per three days is 864 samples of 5 min, and a quantile needs several
times that to be stable. The GPD extrapolates the tail from the top 2% of 2,000.

**Rate.** ``q = alarms_per_day * sample_s / 86_400`` per sample (``risk``; a
sample lasts ``points_per_sample`` steps), with
``alarms_per_day = DEFAULT_ALARMS_PER_DAY * sensitivity`` (one per three days at
sensitivity 1). Alarms are raised per *event* (``scoring.windows``: a run of
exceeding points is one window, re-paged every ``realert_s``), and with the
extremal index each cluster of exceedances counts once, so on a series that
behaves as its history did the expected number of alarms per day is about
``alarms_per_day``. Measured on 200 simulated days at 5 min (iid Student-t,
Gaussian, log-normal, AR(0.9) scores): 0.31-0.51 alarms a day for 1/3, 1.09-1.14
for 1 (the GPD fit's error; tests/scoring/test_alarm_rate.py holds it under 2x).

**Blocks.** Thresholds are refitted at the first point of each block of
``block_points`` samples on the absolute time grid (as the sustained view does), so
a series and any tail of it with enough history share every fit, and a refresh
needs no state beyond the scores already cached. A point's threshold uses only
scores before its block: causal, so alarms on a prefix are the prefix of alarms.

**Warm-up.** Until the window holds ``min_fit_points`` finite samples the
threshold is ``fallback`` (3: only a point three band-widths out pages) -- the
conservative rule of a pager that has not yet seen the series (21 h of history at
steps from 30 s to 5 min, 10.7 h at 15 s; a panel or rule fetches that much).

**A new normal.** Only the last ``window_points`` samples count. A level that
changes for good keeps scoring high until the detector's band follows it; the
threshold starts to take the shift in once it fills ``1 - initial_quantile`` of the
window (40 samples: 3.3 h at steps from 30 s to 5 min, 1.7 h at 15 s) and the next
block is refitted (5 h 20 min; 2 h 40 min at 15 s); its pages then thin out (on
|Student-t| scores shifted by 6, the last page of the first two days came 29-44 h
after the shift at 5 min, 15-21 h at 15 s), and the shift is the whole window, so
the normal, after the window (6.9 days; 3.5 days at 15 s) at the latest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from plugin_backend.errors import InvalidTarget
from plugin_backend.types import FloatArray

__all__ = [
    "DEFAULT_ALARMS_PER_DAY",
    "FitMemo",
    "RateFit",
    "RatePolicy",
    "SeriesFit",
    "TailFit",
    "fit_rate",
    "fit_series",
    "fit_tails",
    "rate_normalized",
    "trailing_mean",
]

#: One alarm per three days on a healthy series, at sensitivity 1.
DEFAULT_ALARMS_PER_DAY = 1.0 / 3.0
DAY_S = 86_400.0
_SHAPE_LIMITS = (0.0, 0.5)
#: Excesses beyond an exponential tail's quantile at this risk are not learnt from.
_FAR_RISK = 1e-6


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """How the per-series alarm threshold is set (see the module docstring)."""

    alarms_per_day: float = DEFAULT_ALARMS_PER_DAY
    #: Counts of *samples* (see ``points_per_sample``): one point at steps of
    #: ``sample_s`` or coarser, else the highest score of ``sample_s`` of points.
    window_points: int = 2000
    block_points: int = 64
    initial_quantile: float = 0.98
    min_fit_points: int = 256
    fallback: float = 3.0
    run_points: int = 8
    sample_s: float = 300.0
    max_window_points: int = 20_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alarms_per_day) and self.alarms_per_day > 0):
            raise InvalidTarget(
                f"alarms_per_day must be a finite number > 0, got {self.alarms_per_day}"
            )
        for name, low in (
            ("window_points", 1),
            ("block_points", 1),
            ("min_fit_points", 1),
            ("run_points", 0),
            ("max_window_points", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise InvalidTarget(f"RatePolicy.{name} must be an integer >= {low}, got {value!r}")
        if not 0.5 <= self.initial_quantile < 1:
            raise InvalidTarget(
                f"RatePolicy.initial_quantile must be in [0.5, 1), got {self.initial_quantile}"
            )
        if not self.fallback >= 1:
            raise InvalidTarget(f"RatePolicy.fallback must be >= 1, got {self.fallback}")
        if not (math.isfinite(self.sample_s) and self.sample_s > 0):
            raise InvalidTarget(f"RatePolicy.sample_s must be a number > 0, got {self.sample_s}")

    def points_per_sample(self, step_s: float) -> int:
        """Points of a series at ``step_s`` whose highest score is one sample of the fit:
        the most whole steps that fit in ``sample_s`` (1 at ``sample_s`` or coarser)."""
        if not (math.isfinite(step_s) and step_s > 0):
            return 1
        wanted = math.floor(self.sample_s / step_s + 1e-9)
        return max(1, min(wanted, self.max_window_points // self.window_points))

    def risk(self, step_s: float) -> float:
        """Per-sample probability ``q`` of an exceedance for a series at ``step_s``."""
        sample_s = max(step_s, 0.0) * self.points_per_sample(step_s)
        return min(self.alarms_per_day * sample_s / DAY_S, 0.5)


@dataclass(frozen=True, slots=True, eq=False)
class TailFit:
    """Per point: the GPD fit in force (NaN where there is none yet). ``threshold``
    turns it into an alarm threshold for any risk without refitting."""

    initial: FloatArray  # t
    scale: FloatArray  # sigma
    shape: FloatArray  # xi
    tail_share: FloatArray  # clusters over t per point: N_t / N * extremal index

    def threshold(self, q: float, fallback: float) -> FloatArray:
        fit = (self.initial, self.scale, self.shape, self.tail_share)
        return _quantile(fit, q, fallback)


@dataclass(frozen=True, slots=True, eq=False)
class RateFit:
    """The tail fits of a series' two triggers: its points, and the trailing mean of
    its last ``run_points`` scores (None when that trigger is off)."""

    point: TailFit
    run: TailFit | None
    run_score: FloatArray | None

    def normalized(self, score: FloatArray, q: float, fallback: float) -> FloatArray:
        """The score in units of the alarm threshold (> 1 alarms): the larger of the
        point's and the run's, each trigger allowed half the risk ``q``."""
        if self.run is None or self.run_score is None:
            return score / self.point.threshold(q, fallback)
        point = score / self.point.threshold(q / 2, fallback)
        return np.fmax(point, self.run_score / self.run.threshold(q / 2, fallback))


@dataclass(frozen=True, slots=True, eq=False)
class SeriesFit:
    """The rate fits of a series' scores: one, or one per ensemble member (each on that
    member's own scores). A point's normalized score is the largest over them, each
    fit allowed ``q / len(fits)`` (Bonferroni: the union pages at most at ``q``)."""

    fits: tuple[RateFit, ...]
    scores: tuple[FloatArray, ...]

    def normalized(self, q: float, fallback: float) -> FloatArray:
        share = q / len(self.fits)
        out = self.fits[0].normalized(self.scores[0], share, fallback)
        for fit, score in zip(self.fits[1:], self.scores[1:], strict=True):
            out = np.fmax(out, fit.normalized(score, share, fallback))
        return out


#: Fits of blocks whose whole window lay inside the series, by (trigger, block start s):
#: what a score cache keeps so a refresh fits only its new blocks.
FitMemo = dict[tuple[str, float], tuple[float, float, float, float]]


def rate_normalized(
    timestamps_s: FloatArray,
    score: FloatArray,
    policy: RatePolicy | None = None,
    *,
    memo: FitMemo | None = None,
    member_scores: FloatArray | None = None,
) -> FloatArray:
    """Each point's score in units of its alarm threshold (> 1 alarms; the threshold is
    ``policy.fallback`` during warm-up and never below the band's edge). ``memo``:
    block fits kept from earlier calls on the same series (read and extended).
    ``member_scores`` (an ensemble's, one row per member): each member's scores get
    their own threshold at an equal share of the risk, and the largest ratio counts."""
    policy = policy or RatePolicy()
    fit = fit_series(timestamps_s, score, policy, memo=memo, member_scores=member_scores)
    return fit.normalized(policy.risk(_step_s(timestamps_s)), policy.fallback)


def fit_series(
    timestamps_s: FloatArray,
    score: FloatArray,
    policy: RatePolicy,
    *,
    memo: FitMemo | None = None,
    member_scores: FloatArray | None = None,
) -> SeriesFit:
    """The rate fit of ``score``, or one per row of ``member_scores`` when given."""
    if member_scores is None:
        return SeriesFit((fit_rate(timestamps_s, score, policy, memo=memo),), (score,))
    rows = tuple(np.asarray(row, dtype=np.float64) for row in member_scores)
    fits = tuple(
        fit_rate(timestamps_s, row, policy, memo=memo, name=f"member{i}:")
        for i, row in enumerate(rows)
    )
    return SeriesFit(fits, rows)


def fit_rate(
    timestamps_s: FloatArray,
    score: FloatArray,
    policy: RatePolicy,
    *,
    memo: FitMemo | None = None,
    name: str = "",
) -> RateFit:
    """Both triggers' tail fits (see the module docstring); ``name`` tells apart the
    fits of several score rows of one series in ``memo``."""
    point = fit_tails(timestamps_s, score, policy, memo=memo, trigger=f"{name}point")
    if not policy.run_points:
        return RateFit(point, None, None)
    run_score = trailing_mean(timestamps_s, score, policy.run_points)
    # "run-steps": fits of the earlier mean over rows (memo key "run") are never read.
    run = fit_tails(timestamps_s, run_score, policy, memo=memo, trigger=f"{name}run-steps")
    return RateFit(point, run, run_score)


def trailing_mean(timestamps_s: FloatArray, score: FloatArray, points: int) -> FloatArray:
    """Mean of the last ``points`` scores (this one included), back to the last gap in
    the data longer than ``points`` steps: scores from before such a gap are unknown,
    as NaN scores are, so the mean never carries an incident across hours that were
    never observed. NaN unless this score and three quarters of them are known.
    Causal, and summed per window (not from running sums), so a tail of a series gets
    bit-identical means."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    padded = np.concatenate([np.full(points - 1, np.nan), np.asarray(score, dtype=np.float64)])
    windows = sliding_window_view(padded, points)
    known = np.isfinite(windows)
    step_s = _step_s(ts)
    if step_s > 0 and points > 1:
        stamps = sliding_window_view(np.concatenate([np.full(points - 1, -np.inf), ts]), points)
        with np.errstate(invalid="ignore"):
            gap = np.diff(stamps, axis=1) > points * step_s
        # A row is cut off by any gap between it and the newest row.
        known[:, :-1] &= ~np.flip(np.logical_or.accumulate(np.flip(gap, axis=1), axis=1), axis=1)
    count = known.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(known, windows, 0.0).sum(axis=1) / count
    return np.where(np.isfinite(score) & (count >= points - points // 4), mean, np.nan)


def fit_tails(
    timestamps_s: FloatArray,
    score: FloatArray,
    policy: RatePolicy,
    *,
    memo: FitMemo | None = None,
    trigger: str = "point",
) -> TailFit:
    """The tail fit of every point's block (see the module docstring). With ``memo``,
    a block whose whole window lies in the series is fitted once: its fit is a
    function of exactly those ``window_points`` samples, so a cached one is exact."""
    n = int(score.shape[0])
    nan = np.full(n, np.nan)
    if n == 0:
        return TailFit(nan, nan, nan, nan)
    sampled = _samples(timestamps_s, np.asarray(score, dtype=np.float64), policy)
    firsts = np.flatnonzero(sampled.block_firsts)
    window = policy.window_points
    padded = np.concatenate([np.full(window, np.nan), sampled.values])
    fits = np.full((firsts.shape[0], 4), np.nan)
    if memo is not None:  # forget blocks the series no longer reaches
        for key in list(memo):  # a snapshot: another thread may add to it
            if key[1] < timestamps_s[0]:
                memo.pop(key, None)
    for j, first in enumerate(firsts.tolist()):
        key = (trigger, float(sampled.starts_s[first]))
        whole = first >= window + sampled.partial_head
        if memo is not None and whole and key in memo:
            fits[j] = memo[key]
            continue
        row = padded[first : first + window]  # samples[first - window : first]
        finite = row[np.isfinite(row)]
        if finite.shape[0] >= policy.min_fit_points:
            t, sigma, xi, share = _fit(finite, policy.initial_quantile)
            fits[j] = (t, sigma, xi, share * _extremal_index(row, t))
        if memo is not None and whole:
            memo[key] = (fits[j, 0], fits[j, 1], fits[j, 2], fits[j, 3])
    owner = np.searchsorted(firsts, sampled.of_point, side="right") - 1
    per_point = fits[owner]
    return TailFit(*(per_point[:, k].copy() for k in range(4)))


@dataclass(frozen=True, slots=True, eq=False)
class _Sampled:
    """What the tail is fitted on: one value per sample, each sample's start time, the
    first sample of each block, and each point's sample."""

    values: FloatArray
    starts_s: FloatArray
    block_firsts: npt.NDArray[np.bool_]
    of_point: npt.NDArray[np.intp]
    #: 1 when the first sample may hold only some of its points (a series that starts
    #: inside a bucket): a window reaching it is not a function of whole samples.
    partial_head: int


def _samples(timestamps_s: FloatArray, score: FloatArray, policy: RatePolicy) -> _Sampled:
    """The series' samples: its points at steps of ``policy.sample_s`` or coarser; else
    the highest score of each bucket of ``points_per_sample`` steps on the absolute time
    grid (a bucket without points: NaN), so the window spans the same time at any step
    and a tail of the series shares every whole bucket."""
    step_s = _step_s(timestamps_s)
    per_sample = policy.points_per_sample(step_s)
    if per_sample == 1:
        return _Sampled(
            score,
            timestamps_s,
            _block_firsts(timestamps_s, policy.block_points),
            np.arange(score.shape[0]),
            0,
        )
    bucket_s = step_s * per_sample
    bucket = np.floor(timestamps_s / bucket_s + 1e-9).astype(np.int64)
    first_bucket = int(bucket[0])
    of_point = (bucket - first_bucket).astype(np.intp)
    count = int(of_point[-1]) + 1
    starts = np.flatnonzero(np.concatenate([[True], of_point[1:] != of_point[:-1]]))
    values = np.full(count, np.nan)
    values[of_point[starts]] = np.fmax.reduceat(score, starts)  # NaN only if all are
    absolute = first_bucket + np.arange(count, dtype=np.int64)
    block = absolute // policy.block_points
    firsts = np.concatenate([[True], block[1:] != block[:-1]])
    starts_s = np.asarray(absolute * bucket_s, dtype=np.float64)
    return _Sampled(values, starts_s, firsts, of_point, 1)


def _fit(scores: FloatArray, initial_quantile: float) -> tuple[float, float, float, float]:
    """``(t, sigma, xi, N_t / N)``: GPD by probability-weighted moments over ``t``."""
    n = scores.shape[0]
    k = int(initial_quantile * (n - 1))  # t: the k-th smallest score (0-based)
    top = np.partition(scores, k)[k:]
    t = float(top.min())
    excess = np.sort(top[top > t] - t)
    share = excess.shape[0] / n
    if excess.shape[0]:
        # Step 5: an exponential tail through the median excess, cut at a far risk.
        middle = excess.shape[0] // 2
        even = excess.shape[0] % 2 == 0
        median = float(excess[middle - 1 : middle + 1].mean() if even else excess[middle])
        far = median / math.log(2.0) * math.log(share / _FAR_RISK)
        excess = excess[excess <= far]
    m = int(excess.shape[0])
    if m < 2:
        return t, 0.0, 0.0, max(share, 1.0 / n)
    a0 = float(excess.sum()) / m
    weights = (m - 1 - np.arange(m)) / (m - 1)  # 1 - plotting position, ascending order
    a1 = float(weights @ excess) / m
    denom = a0 - 2.0 * a1
    if denom <= 0 or a0 <= 0:  # degenerate (ties): an exponential tail of this mean
        return t, a0, 0.0, share
    xi = float(np.clip(2.0 - a0 / denom, *_SHAPE_LIMITS))
    # The scale that keeps the mean excess a0 for the clipped shape (mean = sigma / (1 - xi)).
    sigma = a0 * (1.0 - xi)
    return t, sigma, xi, share


def _extremal_index(row: FloatArray, t: float) -> float:
    """Runs estimator: clusters of consecutive scores above ``t`` per such score (1 when
    exceedances come alone, 1/k when they come k at a time)."""
    with np.errstate(invalid="ignore"):
        above = row > t
    count = int(np.count_nonzero(above))
    if count == 0:
        return 1.0
    starts = int(above[0]) + int(np.count_nonzero(above[1:] & ~above[:-1]))
    return starts / count


def _quantile(
    fit: tuple[FloatArray, FloatArray, FloatArray, FloatArray], q: float, fallback: float
) -> FloatArray:
    t, sigma, xi, share = fit
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = q / share
        small = np.abs(xi) < 1e-9
        safe_xi = np.where(small, 1.0, xi)
        gpd = np.where(small, -sigma * np.log(ratio), sigma / safe_xi * (ratio ** (-safe_xi) - 1.0))
        z = t + np.maximum(gpd, 0.0)  # a risk above the tail share: the initial threshold
    z = np.where(np.isfinite(t), z, fallback)
    return np.maximum(np.where(np.isfinite(z), z, fallback), 1.0)


def _step_s(timestamps_s: FloatArray) -> float:
    if timestamps_s.shape[0] < 2:
        return 0.0
    return float(np.median(np.diff(timestamps_s)))


def _block_firsts(timestamps_s: FloatArray, block_points: int) -> npt.NDArray[np.bool_]:
    """True at the first point of each block of ``block_points`` steps of the time grid."""
    n = timestamps_s.shape[0]
    step_s = _step_s(timestamps_s)
    if step_s > 0:
        block = np.floor(timestamps_s / (step_s * block_points)).astype(np.int64)
    else:
        block = np.arange(n, dtype=np.int64) // block_points
    return np.concatenate([[True], block[1:] != block[:-1]]) if n else np.zeros(0, np.bool_)
