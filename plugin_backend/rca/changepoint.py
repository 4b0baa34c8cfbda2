"""Bayesian online change-point detection (Adams & MacKay 2007), and a symptom's onset.

``segments`` runs BOCPD over one series: a Gaussian with unknown mean and variance
(Normal-Inverse-Gamma prior, Student-t predictive) per regime, a constant hazard
``1 / EXPECTED_RUN`` of a change at each sample. The MAP run length at the end,
traced back regime by regime, splits the series into segments.

``onset`` finds where a symptom's current trouble began: the reference regime is
the first segment; walking back from the last segment, every segment whose median
lies more than ``DEVIATION`` robust sigmas of the reference away from its median
(on the same side) belongs to the trouble. Its first sample is the onset; a ramp
(a slow leak) becomes a staircase of segments, all counted while they deviate.
There is no window to guess: the onset can lie anywhere after the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from plugin_backend.types import FloatArray, Series

__all__ = ["DEVIATION", "EXPECTED_RUN", "Segment", "onset", "segments"]

EXPECTED_RUN = 100.0  # samples between changes, a priori (the hazard is its inverse)
DEVIATION = 3.0  # robust sigmas of the reference a troubled segment's median lies away
_MAD_TO_SIGMA = 1.4826
_MAX_RUN = 2000  # run lengths tracked (older mass is folded into the longest)


@dataclass(frozen=True, slots=True)
class Segment:
    """Samples ``[start, stop)`` of one regime."""

    start: int
    stop: int


def _standardise(x: FloatArray) -> FloatArray:
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    scale = _MAD_TO_SIGMA * mad
    if scale <= 0:
        scale = float(np.mean(np.abs(x - med))) or 1.0
    out: FloatArray = (x - med) / scale
    return out


def segments(values: FloatArray) -> list[Segment]:
    """The MAP segmentation of finite ``values`` (see the module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 3:
        return [Segment(0, n)] if n else []
    z = _standardise(x)
    hazard = 1.0 / EXPECTED_RUN
    log_h, log_1mh = math.log(hazard), math.log1p(-hazard)
    # Prior: mean 0, one pseudo-observation; variance about 1 (the standardised noise).
    mu0, kappa0, alpha0, beta0 = 0.0, 1.0, 1.0, 1.0
    mu = np.array([mu0])
    kappa = np.array([kappa0])
    alpha = np.array([alpha0])
    beta = np.array([beta0])
    # alpha after r samples is alpha0 + r / 2: the Student-t's log-gamma ratio per run length.
    gamma_ratio = np.array(
        [math.lgamma(alpha0 + r / 2 + 0.5) - math.lgamma(alpha0 + r / 2) for r in range(n + 1)]
    )
    log_r = np.array([0.0])  # log P(run length | data so far)
    map_run = np.zeros(n, dtype=np.int64)
    for t in range(n):
        v = z[t]
        scale2 = beta * (kappa + 1.0) / (alpha * kappa)
        nu = 2.0 * alpha
        run_lengths = np.rint((alpha - alpha0) * 2.0).astype(np.int64)
        log_pred = (
            gamma_ratio[np.minimum(run_lengths, n)]
            - 0.5 * np.log(nu * math.pi * scale2)
            - (nu + 1.0) / 2.0 * np.log1p((v - mu) ** 2 / (nu * scale2))
        )
        joint = log_r + log_pred
        grow = joint + log_1mh
        change = np.logaddexp.reduce(joint + log_h)
        log_r = np.concatenate(([change], grow))
        log_r -= np.logaddexp.reduce(log_r)
        # Posterior parameters for every run length (run 0 restarts from the prior).
        mu_new = (kappa * mu + v) / (kappa + 1.0)
        beta_new = beta + kappa * (v - mu) ** 2 / (2.0 * (kappa + 1.0))
        mu = np.concatenate(([mu0], mu_new))
        kappa = np.concatenate(([kappa0], kappa + 1.0))
        alpha = np.concatenate(([alpha0], alpha + 0.5))
        beta = np.concatenate(([beta0], beta_new))
        if log_r.size > _MAX_RUN:
            log_r[_MAX_RUN - 1] = np.logaddexp.reduce(log_r[_MAX_RUN - 1 :])
            log_r, mu, kappa, alpha, beta = (a[:_MAX_RUN] for a in (log_r, mu, kappa, alpha, beta))
        map_run[t] = int(np.argmax(log_r))
    out: list[Segment] = []
    stop = n
    while stop > 0:
        # After sample stop-1 the run length counts the samples of the current regime.
        run = max(int(map_run[stop - 1]), 1)
        start = max(stop - run, 0)
        out.append(Segment(start, stop))
        stop = start
    out.reverse()
    return out


def onset(series: Series, *, at_s: float, start_s: float | None = None) -> float | None:
    """When ``series``' current deviation began (unix seconds), or ``None`` when its last
    regime is like its first (nothing changed) or there is too little data."""
    t, x = series.timestamps_s, series.values
    keep = np.isfinite(t) & np.isfinite(x) & (t <= at_s + 1e-6)
    if start_s is not None:
        keep &= t >= start_s - 1e-6
    t, x = t[keep], x[keep]
    if t.size > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, x = t[order], x[order]
    segs = segments(x)
    if len(segs) < 2:
        return None
    ref = x[segs[0].start : segs[0].stop]
    level = float(np.median(ref))
    mad = _MAD_TO_SIGMA * float(np.median(np.abs(ref - level)))
    spread = float(np.std(x)) if x.size > 1 else 0.0
    sigma = max(mad, 1e-3 * spread, 1e-12)
    sign = math.copysign(1.0, float(np.median(x[segs[-1].start :])) - level)
    first: int | None = None
    for seg in reversed(segs[1:]):
        dev = sign * (float(np.median(x[seg.start : seg.stop])) - level) / sigma
        if dev <= DEVIATION:
            break
        first = seg.start
    return float(t[first]) if first is not None else None
