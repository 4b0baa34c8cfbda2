"""From per-point scores to anomaly windows and pager-style alarms.

A point is *anomalous* when its score is above ``threshold`` times its series'
*alarm threshold* (``scoring.alarm_rate``: set on the series' own recent scores so
that a healthy series pages about ``rate.alarms_per_day`` times a day, and never
inside the band; with ``rate=None`` the alarm threshold is 1, the band's edge) and
its deviation ``value - expected`` has the wanted sign. Anomalous points form
*runs*: the next anomalous point joins the current run when it is the very next
row or comes less than ``max_gap_s`` after the previous anomalous point (a short
dip back does not end an incident). The very next row joins however long the gap
in the data before it: a gap is no evidence that an incident ended, so an anomaly
still there after it is the same window and pages again only once ``realert_s``
has passed; one that ended before the gap (a normal row, then the gap) and one after
it are two. (What the run trigger of ``scoring.alarm_rate`` averages stops at such a
gap, so a spike just before it does not make the rows after it anomalous.) A run
becomes a *window* once it is
*confirmed*, at the first of its points where either

* the run holds ``min_points`` anomalous points and has lasted ``min_duration_s``
  (from its first point to this one), or
* this point alone scores ``>= instant_threshold`` alarm thresholds (a spike too
  big to wait for).

The confirming row raises an *alarm*; while the window stays open, an anomalous
row at least ``realert_s`` after the window's previous alarm raises another one
(a pager's repeat interval). Runs that are never confirmed are no windows. With
the rate-controlled threshold a series also pages at most once per ``realert_s``:
an alarm less than that after the series' previous one is dropped (the window
stays), so a persisting anomaly whose score dips in and out of the threshold pages
once per repeat interval, not once per run.

Everything is causal: whether row ``i`` is an alarm depends only on rows ``<= i``
(run membership looks back at the previous anomalous point, confirmation counts
points up to ``i``, re-alerts look at earlier alarms, and the alarm threshold is
fitted on earlier scores), so alarms computed on a prefix of a series are the prefix of the alarms
on the whole series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.alarm_rate import FitMemo, RatePolicy, rate_normalized
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.types import FloatArray

__all__ = [
    "AnomalyWindow",
    "BoolArray",
    "Direction",
    "WindowPolicy",
    "alarms",
    "find_windows",
    "pager_policy",
]

BoolArray = npt.NDArray[np.bool_]
Direction = Literal["both", "up", "down"]
_DIRECTIONS = ("both", "up", "down")


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """How scores become windows and alarms (see the module docstring).

    Defaults are those of a live pager over Prometheus data (15 s - 5 min steps):

    * ``rate=RatePolicy()``: a point is anomalous above its series' rate-controlled
      alarm threshold (``scoring.alarm_rate``: about one alarm per three days on a
      healthy series), never inside the band. ``rate=None``: above the band's edge.
    * ``threshold=1``: the multiple of that alarm threshold a point must exceed.
    * ``min_points=1``: a run pages at its first point above the alarm threshold.
      The rate-controlled threshold already counts a cluster of exceedances once
      (its extremal index), so waiting for a second point only delays a page and
      misses short incidents. Chosen leave-one-corpus-out between 1 and 2 for the
      default detector with the rate held at one alarm per three days (``python -m
      benchmarks detection``: 1 on every fold). With ``min_points > 1`` a point
      ``instant_threshold=3`` alarm thresholds out still pages at once.
    * ``max_gap_s=900``: a value flapping around the band edge is one incident when
      it dips back for less than 15 minutes (one normal point at a 5 min step, about
      a dozen at 1 min).
    * ``realert_s=4 h``: Alertmanager's default ``repeat_interval``; an incident that
      is still going re-pages at the cadence on-call people already know.
      ``math.inf`` disables re-alerts.
    """

    threshold: float = 1.0
    direction: Direction = "both"
    min_points: int = 1
    min_duration_s: float = 0.0
    instant_threshold: float = 3.0
    max_gap_s: float = 900.0
    realert_s: float = 4 * 3600.0
    rate: RatePolicy | None = RatePolicy()  # noqa: RUF009 (frozen: one shared default is safe)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise InvalidTarget(
                f"WindowPolicy.threshold must be a finite number >= 0, got {self.threshold}"
            )
        if self.direction not in _DIRECTIONS:
            raise InvalidTarget(
                f"WindowPolicy.direction must be one of {list(_DIRECTIONS)}, got {self.direction!r}"
            )
        if isinstance(self.min_points, bool) or not isinstance(self.min_points, int | np.integer):
            raise InvalidTarget(
                f"WindowPolicy.min_points must be an integer >= 1, got {self.min_points!r}"
            )
        if self.min_points < 1:
            raise InvalidTarget(f"WindowPolicy.min_points must be >= 1, got {self.min_points}")
        if not (math.isfinite(self.min_duration_s) and self.min_duration_s >= 0):
            raise InvalidTarget(
                f"WindowPolicy.min_duration_s must be a finite number >= 0, "
                f"got {self.min_duration_s}"
            )
        if not self.instant_threshold >= self.threshold:
            raise InvalidTarget(
                f"WindowPolicy.instant_threshold must be >= threshold ({self.threshold}) "
                f"or inf to disable, got {self.instant_threshold}"
            )
        if not (math.isfinite(self.max_gap_s) and self.max_gap_s >= 0):
            raise InvalidTarget(
                f"WindowPolicy.max_gap_s must be a finite number >= 0, got {self.max_gap_s}"
            )
        if not self.realert_s > 0:
            raise InvalidTarget(
                f"WindowPolicy.realert_s must be > 0 (inf disables re-alerts), got {self.realert_s}"
            )


def pager_policy(
    direction: Direction = "both", sensitivity: float = 1.0, *, rate_control: bool = True
) -> WindowPolicy:
    """The default policy of a series asked for at ``sensitivity``: the rate-controlled
    threshold allows ``sensitivity`` times the default alarms per day (one per three
    days at 1, two per three days at 2). ``rate_control=False``: page at the band's
    edge (for a series whose incidents are its normal, e.g. the demo estate's fault
    every 4 h)."""
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise InvalidTarget(f"sensitivity must be a finite number > 0, got {sensitivity}")
    if not rate_control:
        return WindowPolicy(direction=direction, rate=None)
    return WindowPolicy(
        direction=direction,
        rate=RatePolicy(alarms_per_day=RatePolicy().alarms_per_day * sensitivity),
    )


@dataclass(frozen=True, slots=True)
class AnomalyWindow:
    """One confirmed anomaly: its first and last anomalous points, its peak, and
    when it was first alarmed. ``open``: it may still grow (the series ends less
    than ``max_gap_s`` after its last anomalous point, or on it)."""

    start_s: float
    end_s: float
    peak_score: float
    peak_s: float
    direction: Literal["up", "down"]
    confirmed_s: float
    open: bool
    points: int


def find_windows(
    scored: ScoredSeries,
    policy: WindowPolicy | None = None,
    *,
    normalized: FloatArray | None = None,
    fit_memo: FitMemo | None = None,
) -> list[AnomalyWindow]:
    """The confirmed anomaly windows of ``scored``, in time order. ``normalized``:
    each point's score in units of its alarm threshold when the caller already has it
    (else computed from ``policy.rate``, reusing the block fits in ``fit_memo``, which
    a score cache keeps per series)."""
    policy = policy or WindowPolicy()
    if normalized is None and policy.rate is not None:
        normalized = rate_normalized(
            scored.timestamps_s,
            scored.score,
            policy.rate,
            memo=fit_memo,
            member_scores=scored.member_scores,
        )
    return _analyse(scored, policy, normalized, want_windows=True)[0]


def alarms(
    scored: ScoredSeries,
    policy: WindowPolicy | None = None,
    *,
    normalized: FloatArray | None = None,
) -> BoolArray:
    """``True`` at each row where a window is confirmed or re-alerts (causal)."""
    return _analyse(scored, policy or WindowPolicy(), normalized, want_windows=False)[1]


def _analyse(
    scored: ScoredSeries,
    policy: WindowPolicy,
    normalized: FloatArray | None,
    *,
    want_windows: bool,
) -> tuple[list[AnomalyWindow], BoolArray]:
    ts = np.asarray(scored.timestamps_s, dtype=np.float64)
    raw_score = np.asarray(scored.score, dtype=np.float64)
    n = int(raw_score.shape[0])
    fired = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return [], fired
    if normalized is None and policy.rate is not None:
        normalized = rate_normalized(ts, raw_score, policy.rate, member_scores=scored.member_scores)
    # Decisions use the score in units of the alarm threshold; windows report the score.
    score = raw_score if normalized is None else np.asarray(normalized, dtype=np.float64)

    anomalous, up = _anomalous(scored, score, policy.threshold, policy.direction)
    idx = np.flatnonzero(anomalous)
    m = int(idx.shape[0])
    if m == 0:
        return [], fired
    t = ts[idx]
    s = score[idx]
    s_raw = raw_score[idx]

    # Runs of anomalous points: a new run starts unless the previous anomalous
    # point is the previous row or less than max_gap_s earlier.
    new_run = np.ones(m, dtype=np.bool_)
    new_run[1:] = ~((np.diff(idx) == 1) | (np.diff(t) < policy.max_gap_s))
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], m)  # exclusive, positions in idx
    lengths = ends - starts
    run_id = np.repeat(np.arange(starts.shape[0]), lengths)
    run_start = np.repeat(starts, lengths)
    count_so_far = np.arange(m) - run_start + 1

    lasted = t - t[run_start] >= policy.min_duration_s
    instant = s >= policy.instant_threshold
    confirmed_runs, first_confirm = _first_confirmations(
        ((count_so_far >= policy.min_points) & lasted) | instant, run_id
    )

    fired[idx[first_confirm]] = True
    run_end = ends[confirmed_runs]
    if math.isfinite(policy.realert_s):
        _realert(fired, idx, t, first_confirm, run_end, realert_s=policy.realert_s)
        if policy.rate is not None:
            _hold(fired, ts, policy.realert_s)
    if not want_windows:
        return [], fired

    # Peak of each run: the first point holding the run's maximum score.
    run_max = np.maximum.reduceat(s_raw, starts)
    at_max = np.flatnonzero(s_raw == run_max[run_id])
    first_max = np.ones(at_max.shape[0], dtype=np.bool_)
    first_max[1:] = run_id[at_max[1:]] != run_id[at_max[:-1]]
    peak = at_max[first_max][confirmed_runs]
    run_start_pos = starts[confirmed_runs]
    last_row = idx[run_end - 1]
    still_open = (last_row == n - 1) | (ts[-1] - t[run_end - 1] < policy.max_gap_s)
    windows = [
        AnomalyWindow(
            start_s=start_s,
            end_s=end_s,
            peak_score=peak_score,
            peak_s=peak_s,
            direction="up" if peak_up else "down",
            confirmed_s=confirmed_s,
            open=is_open,
            points=points,
        )
        for start_s, end_s, peak_score, peak_s, peak_up, confirmed_s, is_open, points in zip(
            t[run_start_pos].tolist(),
            t[run_end - 1].tolist(),
            s_raw[peak].tolist(),
            t[peak].tolist(),
            up[idx[peak]].tolist(),
            t[first_confirm].tolist(),
            still_open.tolist(),
            (run_end - run_start_pos).tolist(),
            strict=True,
        )
    ]
    return windows, fired


def _first_confirmations(
    confirms: BoolArray, run_id: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The runs with a confirming point, and each one's first such point (positions
    among the anomalous points)."""
    confirm_pos = np.flatnonzero(confirms)
    confirm_run = run_id[confirm_pos]  # non-decreasing: keep each run's first
    first = np.ones(confirm_pos.shape[0], dtype=np.bool_)
    first[1:] = confirm_run[1:] != confirm_run[:-1]
    return confirm_run[first], confirm_pos[first]


def _anomalous(
    scored: ScoredSeries, score: FloatArray, threshold: float, direction: Direction
) -> tuple[BoolArray, BoolArray]:
    """Which points are anomalous, and which lie above their expected value."""
    deviation = np.asarray(scored.values, dtype=np.float64) - np.asarray(
        scored.expected, dtype=np.float64
    )
    with np.errstate(invalid="ignore"):
        anomalous = score > threshold  # NaN compares False: unknown is not anomalous
        up = deviation >= 0
    if direction == "up":
        anomalous &= up
    elif direction == "down":
        anomalous &= ~up
    return anomalous, up


def _hold(fired: BoolArray, ts: FloatArray, hold_s: float) -> None:
    """Drop alarms less than ``hold_s`` after the series' previous kept alarm: a
    persisting anomaly whose score dips in and out of the alarm threshold pages once
    per repeat interval, not once per run."""
    last = -math.inf
    for row in np.flatnonzero(fired).tolist():
        if ts[row] - last < hold_s:
            fired[row] = False
        else:
            last = float(ts[row])


def _realert(
    fired: BoolArray,
    idx: npt.NDArray[np.intp],
    t: npt.NDArray[np.float64],
    first_confirm: npt.NDArray[np.intp],
    run_end: npt.NDArray[np.intp],
    *,
    realert_s: float,
) -> None:
    """Mark re-alerts: the first anomalous point of a run at least ``realert_s``
    after the run's previous alarm. Only runs that last that long are looped over."""
    long_runs = t[run_end - 1] - t[first_confirm] >= realert_s
    for c, b in zip(first_confirm[long_runs].tolist(), run_end[long_runs].tolist(), strict=True):
        k = c
        while True:
            k = int(np.searchsorted(t, t[k] + realert_s, side="left"))
            if k >= b:
                break
            fired[idx[k]] = True
