"""Ways to combine an ensemble's calibrated members into alarms, for the detection
benchmark's ``--fusion`` tables (only ``union`` is what ``scoring.alarm_rate`` does).

Every rule starts from what the alarm layer already has per member: its scores and
its two tail fits (point and run trigger, ``alarm_rate.fit_rate``, each on the
member's own last ``window_points`` scores, so every rule is causal). A member's
*tail probability* at a point is the fitted chance of a score at least that high:
``tail_share * (1 + xi (s - t) / sigma) ** (-1 / xi)`` above the fit's initial
threshold ``t``, and 1 (no evidence) at or below it or inside the band (``s <= 1``).
On a single fit, ``p < q`` exactly when the score passes the alarm threshold at risk
``q``, so every rule below is a rule on p-values:

* ``union``: a point pages when any member's point or run p-value is below
  ``q / (2k)`` (Bonferroni over ``k`` members and their two triggers: what
  ``SeriesFit`` does).
* ``harmonic``: the harmonic mean of the ``2k`` p-values below ``q`` (Wilson 2019;
  in the tail it is the Cauchy combination of Liu & Xie 2020, whose level holds as
  ``q -> 0`` for members correlated as under a Gaussian copula; valid under *any*
  dependence only when multiplied by ``e ln 2k``). Bonferroni's pages are a subset.
* ``min_p_spot``: ``-log`` of the smallest point p-value, and one rate-controlled
  threshold (point and run trigger, full risk ``q``) fitted on that statistic: the
  union, with the members' level set by their dependence on this series' own
  history instead of by ``1 / k``.
* ``fisher_spot``: the sum of the members' ``-log`` point p-values (Fisher), with
  one rate-controlled threshold on it.

While a member's fit is still warming up (fewer than ``min_fit_points`` scores),
every rule falls back to the union (each member pages above ``fallback``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from plugin_backend.scoring.alarm_rate import RateFit, RatePolicy, SeriesFit, TailFit, fit_rate
from plugin_backend.types import FloatArray

__all__ = ["FUSION_RULES", "fused_normalized", "member_fit", "tail_probability"]

FUSION_RULES = ("union", "harmonic", "min_p_spot", "fisher_spot")


def member_fit(timestamps_s: FloatArray, score: FloatArray, policy: RatePolicy) -> RateFit:
    """A member's two tail fits (what the alarm layer fits per member)."""
    return fit_rate(timestamps_s, np.asarray(score, dtype=np.float64), policy)


def tail_probability(fit: TailFit, score: FloatArray) -> FloatArray:
    """The fitted chance of a score at least ``score`` (1 at or below the fit's initial
    threshold, inside the band, or where there is no fit)."""
    t, sigma, xi, share = fit.initial, fit.scale, fit.shape, fit.tail_share
    with np.errstate(all="ignore"):
        z = np.maximum((score - t) / np.maximum(sigma, 1e-12), 0.0)
        small = np.abs(xi) < 1e-9
        safe = np.where(small, 1.0, xi)
        tail = np.where(small, np.exp(-z), (1.0 + safe * z) ** (-1.0 / safe))
        p = np.where(score > t, share * tail, 1.0)
    return np.where(np.isfinite(p) & (score > 1.0), np.clip(p, 1e-300, 1.0), 1.0)


def fused_normalized(
    rule: str,
    timestamps_s: FloatArray,
    scores: Sequence[FloatArray],
    fits: Sequence[RateFit],
    policy: RatePolicy,
) -> FloatArray:
    """Each point in units of its alarm threshold (> 1 pages) under ``rule``, from the
    members' score rows (``ScoredSeries.member_scores``) and their fits."""
    known = list(zip(scores, fits, strict=True))
    q = policy.risk(float(np.median(np.diff(timestamps_s))))
    union = SeriesFit(tuple(f for _, f in known), tuple(s for s, _ in known)).normalized(
        q, policy.fallback
    )
    if rule == "union":
        return union
    warm = np.logical_and.reduce([np.isfinite(f.point.initial) for _, f in known])
    if rule == "harmonic":
        ps = [tail_probability(f.point, s) for s, f in known]
        ps += [
            tail_probability(f.run, f.run_score)
            for _, f in known
            if f.run is not None and f.run_score is not None
        ]
        inverse_mean = np.mean([1.0 / p for p in ps], axis=0)
        return np.where(warm, q * inverse_mean, union)  # q / harmonic mean
    point = [tail_probability(f.point, s) for s, f in known]
    if rule == "min_p_spot":
        stat = -np.log(np.minimum.reduce(point))
    elif rule == "fisher_spot":
        stat = np.sum([-np.log(p) for p in point], axis=0)
    else:
        raise ValueError(f"unknown fusion rule {rule!r}; choose from {FUSION_RULES}")
    stat = np.where(warm, stat, np.nan)
    fused = fit_rate(timestamps_s, stat, policy)
    normalized = fused.normalized(stat, q, policy.fallback)
    return np.where(np.isfinite(fused.point.initial), normalized, union)
