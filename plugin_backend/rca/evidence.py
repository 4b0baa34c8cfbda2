"""Change evidence for one series around an incident time ``at_s``.

The caller fetches every series over ``[at_s - window_s - baseline_s, at_s]``
(defaults: a 30 min incident window after a 60 min baseline, so 90 min in all).
Samples after ``at_s`` are ignored, so "what did we know at ``at_s``" is what is
scored.

```
 start = at_s - window_s - baseline_s      split = at_s - window_s          at_s
 |------------- baseline (pre-incident) ----|---------- incident window -------|
```

Baseline
    The pre-incident part gives a robust level (median) and scale (1.4826 x MAD,
    floored by half the mean absolute deviation so sparse blips count, by 2 % of
    the level and by a tiny absolute value). When the baseline drifts (diurnal load,
    a slow leak) a linear trend is used instead of a flat level, but only if it
    cuts the residual MAD by 40 % and the slopes of its first and last halves
    agree, so a step inside the baseline is not extrapolated into a false ramp.
    With fewer than ``MIN_BASELINE_POINTS`` pre-incident samples the first quarter
    of the available data stands in for the baseline.

Deviation
    Robust z-scores of the incident part against the baseline model. ``magnitude``
    is the largest |z| of a 3-point rolling median (one wild sample is not a
    change); ``sustained`` is the z of ``incident_value``, the median of the last
    ``SUSTAINED_POINTS`` samples.

Onset
    Detection, in each direction: the first sample whose 3-point rolling median
    reaches ``change_threshold`` (default ``CHANGE_THRESHOLD`` = 6) with 70 % of
    the next ``PERSIST_POINTS`` samples beyond half of it. The onset walks back
    from there while the raw z stays ``ONSET_LEVEL`` (1.5) above the local level
    (median z of the ``ONSET_CONTEXT_POINTS`` samples before) and ``ONSET_FRACTION``
    of the way from it to the plateau after detection (so the noise of a series
    with a tiny scale, a low error rate, does not drag a 1000 sigma jump's onset
    minutes early), so a slow drift or
    an offset before the change does not drag the onset early: within about one
    step of the true start for steps and ramps. A run that starts at the very
    first incident sample is a deviation that predates the window (no onset).

Change events
    A series with no sample before the window whose first sample comes later than
    one step into it *appeared* (a new ``app_build_info{version=...}`` after a
    deploy, a new pod); one that had baseline samples and stopped more than
    ``3`` steps before ``at_s`` *disappeared*. Both are ``kind="change_event"``
    with ``magnitude = CHANGE_EVENT_MAGNITUDE`` and the appearance (or the step
    after the last sample) as onset.

Settings
    A series at one exact whole number (not zero) through its baseline that took one
    new whole number and held it is a setting that moved (a deployment's generation,
    a replica count), not a measurement: it has no noise, so 45 -> 46 is a change
    (magnitude ``CHANGE_EVENT_MAGNITUDE``, ``Deviation.setting``), though the relative
    noise floor of a measurement would hide it. Bounded metrics (availability at 100)
    are measurements.

Curve
    ``deviation`` returns the evidence and the incident part's robust z curve
    (``Deviation``, signed so that positive is away along ``direction``, with the
    largest |z| the baseline itself reached, ``baseline_peak``; ``None``
    for change events and series without a usable baseline); the ranking compares
    it with the symptom's.

NaN and infinite samples are treated as missing, everywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from plugin_backend.errors import InvalidTarget
from plugin_backend.types import FloatArray, Series

__all__ = [
    "CHANGE_EVENT_MAGNITUDE",
    "CHANGE_THRESHOLD",
    "DEFAULT_BASELINE_S",
    "DEFAULT_WINDOW_S",
    "Deviation",
    "Evidence",
    "compute_evidence",
    "deviation",
    "infer_step",
]

DEFAULT_WINDOW_S = 1800.0
DEFAULT_BASELINE_S = 3600.0
CHANGE_THRESHOLD = 6.0  # robust z a persistent deviation needs to count as a change
CHANGE_EVENT_MAGNITUDE = 10.0  # the robust z reported for an appearing/disappearing series
MIN_BASELINE_POINTS = 6
SUSTAINED_POINTS = 5
PERSIST_POINTS = 6
ONSET_LEVEL = 1.5  # the onset run: samples this far (robust z) above the local level
ONSET_FRACTION = 0.1  # ... and this share of the way to the plateau after detection
ONSET_CONTEXT_POINTS = 20  # the local level: median z of this many samples before detection
PERSIST_FRACTION = 0.7
_TREND_GAIN = 0.6  # a trend must cut the residual MAD to this fraction of the flat one
_REL_SCALE_FLOOR = 0.02
_BOUNDED_SCALE_FLOOR = 0.002  # of a bounded metric's range: 0.2 points of a percentage
_ABS_SCALE_FLOOR = 1e-9
_MAD_TO_SIGMA = 1.4826
_MEAN_AD_TO_SIGMA = 1.2533

Direction = Literal["up", "down"]
EvidenceKind = Literal["metric", "change_event"]
ChangeEvent = Literal["appeared", "disappeared"]


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class Evidence:
    """How one series changed around ``at_s`` (see the module docstring).

    ``baseline`` is the baseline model's level at ``at_s`` (NaN for a series that
    appeared), ``baseline_scale`` its robust sigma, ``incident_value`` the median of
    the last samples, ``peak_value`` the sample of largest deviation, ``magnitude``
    the robust z of that deviation (>= 0) and ``sustained`` the robust z of
    ``incident_value`` along ``direction``. ``changed`` says the series changed in
    the window: a persistent deviation of at least ``CHANGE_THRESHOLD`` with an
    onset, or a change event.
    """

    baseline: float
    baseline_scale: float
    incident_value: float
    peak_value: float
    magnitude: float
    direction: Direction
    onset_s: float | None
    changed: bool
    kind: EvidenceKind
    sustained: float = 0.0
    event: ChangeEvent | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: non-finite numbers become ``None``."""
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            out[key] = _finite_or_none(value) if isinstance(value, float) else value
        return out


def infer_step(timestamps_s: FloatArray) -> float | None:
    """The median positive spacing of ``timestamps_s`` (``None`` with fewer than 2)."""
    t = np.asarray(timestamps_s, dtype=np.float64)
    t = t[np.isfinite(t)]
    if t.size < 2:
        return None
    d = np.diff(np.sort(t))
    d = d[d > 0]
    return float(np.median(d)) if d.size else None


def _unchanged(level: float = math.nan, scale: float = math.nan) -> Evidence:
    return Evidence(
        baseline=level,
        baseline_scale=scale,
        incident_value=math.nan,
        peak_value=math.nan,
        magnitude=0.0,
        direction="up",
        onset_s=None,
        changed=False,
        kind="metric",
    )


def _event(
    event: ChangeEvent, onset_s: float, baseline: float, incident: float, peak: float
) -> Evidence:
    return Evidence(
        baseline=baseline,
        baseline_scale=math.nan,
        incident_value=incident,
        peak_value=peak,
        magnitude=CHANGE_EVENT_MAGNITUDE,
        direction="up" if event == "appeared" else "down",
        onset_s=onset_s,
        changed=True,
        kind="change_event",
        sustained=CHANGE_EVENT_MAGNITUDE,
        event=event,
    )


@dataclass(frozen=True, slots=True)
class Deviation:
    """The incident part's robust z curve, signed so that positive is away along
    ``Evidence.direction``."""

    timestamps_s: FloatArray
    z: FloatArray
    baseline_peak: float = 0.0  # the largest |z| (3-point median) inside the baseline itself
    setting: bool = False  # a setting that moved (``_setting_change``), not a measurement


@dataclass(frozen=True, slots=True)
class _Baseline:
    level: float  # at ``center``
    slope: float  # per second
    center: float
    scale: float

    def at(self, t: FloatArray | float) -> FloatArray:
        return np.asarray(self.level + self.slope * (np.asarray(t) - self.center), np.float64)


def _mad(x: FloatArray) -> float:
    return float(np.median(np.abs(x - np.median(x))))


def bounded_range(metric: str) -> float | None:
    """The span of a bounded metric by its name (``*_ratio``: 1; ``*_percent``,
    availability: 100), or ``None`` for an unbounded one."""
    name = metric.lower()
    if name.endswith("_ratio"):
        return 1.0
    if "percent" in name or "availability" in name:
        return 100.0
    return None


def _fit_baseline(t: FloatArray, x: FloatArray, bounded: float | None = None) -> _Baseline:
    center = float(np.median(t))
    level = float(np.median(x))
    slope = 0.0
    resid = x - level
    if x.size >= 2 * MIN_BASELINE_POINTS:
        half = x.size // 2
        t1, t2 = float(np.median(t[:half])), float(np.median(t[half:]))
        m1, m2 = float(np.median(x[:half])), float(np.median(x[half:]))
        if t2 > t1:
            cand = (m2 - m1) / (t2 - t1)
            q = x.size // 4
            # Slopes inside each half must agree with the overall one (a step is no trend).
            s1 = _halves_slope(t[:half], x[:half])
            s2 = _halves_slope(t[half:], x[half:])
            consistent = q >= 3 and all(
                s != 0.0 and cand != 0.0 and 0.33 <= s / cand <= 3.0 for s in (s1, s2)
            )
            tr_level = float(np.median(x - cand * (t - center)))
            tr_resid = x - (tr_level + cand * (t - center))
            if consistent and _mad(tr_resid) < _TREND_GAIN * _mad(resid):
                slope, level, resid = cand, tr_level, tr_resid
    mad = float(np.median(np.abs(resid - np.median(resid))))
    mean_ad = float(np.mean(np.abs(resid - np.median(resid))))
    scale = max(
        _MAD_TO_SIGMA * mad,
        0.5 * _MEAN_AD_TO_SIGMA * mean_ad,
        # A bounded metric's noise does not grow with its level (availability sits
        # at 100): its floor is a small share of its range, so a drop of a few
        # points registers (a low error ratio keeps its level's floor).
        _REL_SCALE_FLOOR * abs(level)
        if bounded is None
        else min(_REL_SCALE_FLOOR * abs(level), _BOUNDED_SCALE_FLOOR * bounded),
        _ABS_SCALE_FLOOR,
    )
    return _Baseline(level=level, slope=slope, center=center, scale=scale)


def _halves_slope(t: FloatArray, x: FloatArray) -> float:
    half = x.size // 2
    if half < 2:
        return 0.0
    dt = float(np.median(t[half:]) - np.median(t[:half]))
    if dt <= 0:
        return 0.0
    return float((np.median(x[half:]) - np.median(x[:half])) / dt)


def _rolling_median3(z: FloatArray) -> FloatArray:
    if z.size < 3:
        return z.copy()
    padded = np.concatenate(([z[0]], z, [z[-1]]))
    stacked = np.stack([padded[:-2], padded[1:-1], padded[2:]])
    out: FloatArray = np.median(stacked, axis=0)
    return out


def _detect_onset(z: FloatArray, zs: FloatArray, threshold: float) -> int | None:
    """Index where the first persistent excursion (``z`` > 0 is away) began, if any.

    Detection: the first sample whose 3-point rolling median ``zs`` reaches
    ``threshold`` with ``PERSIST_FRACTION`` of the next ``PERSIST_POINTS`` samples
    beyond half of it (samples after the data's end count as persisting: they are
    unseen, and an alert catches a change early). Onset: walk back from there while
    ``z`` stays above ``ONSET_LEVEL`` (the start of the run that carried the series
    away).
    """
    hits = np.flatnonzero(zs >= threshold)
    n = z.size
    for i in hits.tolist():
        seg = z[i : min(n, i + PERSIST_POINTS)]
        # Samples after the data's end are unseen, not back to normal: a change the
        # alert caught early is judged on what it did so far.
        unseen = PERSIST_POINTS - seg.size
        if (float(np.sum(seg >= 0.5 * threshold)) + unseen) / PERSIST_POINTS >= PERSIST_FRACTION:
            before = z[max(0, i - ONSET_CONTEXT_POINTS) : max(0, i - 1)]
            level = float(np.median(before)) if before.size else 0.0
            plateau = float(np.median(zs[i : min(n, i + PERSIST_POINTS)]))
            floor = level + max(ONSET_LEVEL, ONSET_FRACTION * (plateau - level))
            j = i
            while j > 0 and z[j - 1] > floor:
                j -= 1
            return j
    return None


def _setting_change(
    xb: FloatArray, ti: FloatArray, xi: FloatArray
) -> tuple[Evidence, Deviation] | None:
    """A setting that moved: a series at one exact whole number (not zero) through its
    baseline that took one new whole number and held it (a deployment's generation, a
    replica count). Its noise scale is zero, so the move is a change of state however
    small next to its level (the relative noise floor would hide 45 -> 46): magnitude
    ``CHANGE_EVENT_MAGNITUDE``, a step curve of that height."""
    level = float(xb[0])
    if xb.size < MIN_BASELINE_POINTS or level == 0.0 or np.any(xb != level):
        return None
    moved = np.flatnonzero(xi != level)
    if moved.size == 0 or moved[0] == 0:
        return None  # unchanged, or moved before the window (no onset in it)
    k = int(moved[0])
    new = float(xi[-1])
    if np.any(xi[k:] != new) or not (level.is_integer() and new.is_integer()):
        return None  # a measurement that happened to sit still
    ev = Evidence(
        baseline=level,
        baseline_scale=abs(new - level) / CHANGE_EVENT_MAGNITUDE,
        incident_value=new,
        peak_value=new,
        magnitude=CHANGE_EVENT_MAGNITUDE,
        direction="up" if new > level else "down",
        onset_s=float(ti[k]),
        changed=True,
        kind="metric",
        sustained=CHANGE_EVENT_MAGNITUDE,
    )
    z: FloatArray = np.where(np.arange(xi.size) >= k, CHANGE_EVENT_MAGNITUDE, 0.0)
    return ev, Deviation(timestamps_s=ti, z=z, setting=True)


def _check_params(at_s: float, window_s: float, baseline_s: float) -> None:
    if not math.isfinite(at_s):
        raise InvalidTarget(f"at_s must be a finite time, got {at_s}")
    for name, value in (("window_s", window_s), ("baseline_s", baseline_s)):
        if not (math.isfinite(value) and value > 0):
            raise InvalidTarget(f"{name} must be a positive number of seconds, got {value}")


def compute_evidence(
    series: Series,
    *,
    at_s: float,
    window_s: float = DEFAULT_WINDOW_S,
    baseline_s: float = DEFAULT_BASELINE_S,
    step_s: float | None = None,
    change_threshold: float = CHANGE_THRESHOLD,
) -> Evidence:
    """The change evidence of ``series`` for an incident at ``at_s`` (module docstring)."""
    return deviation(
        series,
        at_s=at_s,
        window_s=window_s,
        baseline_s=baseline_s,
        step_s=step_s,
        change_threshold=change_threshold,
    )[0]


def deviation(  # noqa: PLR0911, PLR0912, PLR0915 - one return per outcome
    series: Series,
    *,
    at_s: float,
    window_s: float = DEFAULT_WINDOW_S,
    baseline_s: float = DEFAULT_BASELINE_S,
    step_s: float | None = None,
    change_threshold: float = CHANGE_THRESHOLD,
) -> tuple[Evidence, Deviation | None]:
    """``compute_evidence`` plus the robust z curve of the incident part, if there is one."""
    _check_params(at_s, window_s, baseline_s)
    t_all, x_all = series.timestamps_s, series.values
    if t_all.size > 1 and np.any(np.diff(t_all) < 0):
        order = np.argsort(t_all, kind="stable")
        t_all, x_all = t_all[order], x_all[order]
    start, split = at_s - window_s - baseline_s, at_s - window_s
    keep = (t_all >= start - 1e-6) & (t_all <= at_s + 1e-6) & np.isfinite(t_all)
    t, x = t_all[keep], x_all[keep]
    step = step_s if step_s is not None and step_s > 0 else infer_step(t)
    if step is None:
        step = window_s / 120.0
    finite = np.isfinite(x)
    t, x = t[finite], x[finite]
    if t.size == 0:
        return _unchanged(), None
    in_base = t < split
    tb, xb, ti, xi = t[in_base], x[in_base], t[~in_base], x[~in_base]
    tol = 1.5 * step

    if tb.size == 0 and ti.size and ti[0] > split + tol:
        tail = xi[-SUSTAINED_POINTS:]
        ev = _event("appeared", float(ti[0]), math.nan, float(np.median(tail)), float(xi[0]))
        return ev, None
    if tb.size and (ti.size == 0 or ti[-1] < at_s - max(3.0 * step, tol)):
        last_t = float(ti[-1]) if ti.size else float(tb[-1])
        if last_t < split - tol:  # gone before the window: not a change in it
            return _unchanged(), None
        level = float(np.median(xb))
        return _event("disappeared", last_t + step, level, math.nan, level), None

    if tb.size < MIN_BASELINE_POINTS:
        if t.size < 2 * MIN_BASELINE_POINTS:
            return _unchanged(), None
        k = max(MIN_BASELINE_POINTS, t.size // 4)
        tb, xb, ti, xi = t[:k], x[:k], t[k:], x[k:]
    bounded = bounded_range(series.metric)
    base = _fit_baseline(tb, xb, bounded)
    level_at = float(base.at(at_s))
    if ti.size < 2:
        return _unchanged(level_at, base.scale), None
    # A bounded metric may sit exactly at its bound (availability 100): a measurement.
    setting = None if bounded is not None else _setting_change(xb, ti, xi)
    if setting is not None:
        return setting

    z = (xi - base.at(ti)) / base.scale
    zs = _rolling_median3(z)
    best: tuple[float, int, int | None] | None = None  # (peak, sign, onset index)
    for sign in (1, -1):
        onset = _detect_onset(sign * z, sign * zs, change_threshold)
        peak = float(np.max(sign * zs))
        if onset == 0:  # deviating from the first incident sample: predates the window
            onset = None
        rank = (onset is not None, peak)
        if best is None or rank > (best[2] is not None, best[0]):
            best = (peak, sign, onset)
    assert best is not None
    peak, sign, onset_i = best
    i_peak = int(np.argmax(sign * zs))
    k = min(SUSTAINED_POINTS, xi.size)
    incident_value = float(np.median(xi[-k:]))
    sustained = sign * float(np.median(z[-k:]))
    magnitude = max(peak, 0.0)
    onset_s = float(ti[onset_i]) if onset_i is not None else None
    ev = Evidence(
        baseline=level_at,
        baseline_scale=base.scale,
        incident_value=incident_value,
        peak_value=float(xi[i_peak]),
        magnitude=magnitude,
        direction="up" if sign > 0 else "down",
        onset_s=onset_s,
        changed=onset_s is not None and magnitude >= change_threshold,
        kind="metric",
        sustained=sustained,
    )
    zb = _rolling_median3((xb - base.at(tb)) / base.scale)
    baseline_peak = float(np.max(np.abs(zb))) if zb.size else 0.0
    return ev, Deviation(timestamps_s=ti, z=sign * z, baseline_peak=baseline_peak)
