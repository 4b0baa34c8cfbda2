"""An ensemble: each member scores the series as it would alone; a point pages when
any member's score passes *that member's own* alarm threshold.

**Calibrate each member, then combine.** Members' scores are not on one scale: on
a given series one member's residuals have a heavier tail than another's, and the
largest raw score would let that member decide every alarm. So the ensemble keeps
each member's scores (``ScoredSeries.member_scores``, one row per member) and the
alarm layer (``scoring.alarm_rate``) fits a peaks-over-threshold tail to each row
separately. A point's score in units of its alarm threshold is the largest over
the members of ``member score / member threshold``, each member's threshold set at
``q / k`` of the series' risk ``q`` (``k`` members; Bonferroni): the union of the
members' alarms keeps the promised rate on a healthy series, whatever the members
are and however their scores correlate.

The shown ``score`` is the largest member score (``<= 1`` exactly inside the band
shown, where every member's band agrees); it plays no part in the alarms.

**Members.** By default STL and Holt-Winters: STL's robust seasonal fit and
Holt-Winters' point-by-point recursion miss different things (a slow ramp that
Holt-Winters follows, a daily shape that STL's half-hour bins smooth). Chosen
leave-one-corpus-out among every subset of robust_z, STL, Holt-Winters and the
transformer, each combined this way (``python -m benchmarks detection
--ablations``; numbers in benchmarks/RESULTS.md). ``members=`` picks others.

Measured and removed (``git log`` holds them): the largest of the members' raw
scores with one threshold fitted on it (the previous default, STL + the
transformer's delayed view: worst corpus 48.1; STL + Holt-Winters that way: 50.9,
against 54.0 calibrated); calibrating each member and then fitting one threshold
again on the largest ratio (a lower worst corpus for every subset, measured once on
the benchmark's member scores).

Measured and not adopted (``python -m benchmarks detection --fusion``, which keeps
them in ``benchmarks/fusion.py``): each member's score turned into its tail
probability under its own fit, merged by their harmonic mean (the Cauchy
combination's tail), or by their minimum or Fisher's sum with one rate-controlled
threshold on that. They pay with three or four members, where Bonferroni's ``q / k``
costs most (all four: worst corpus 41.0 as a union, 49.9 harmonic, 50.9 min-p), and
not with the default's two (54.0 union; 52.2, 51.8, 51.0). Chosen with the members
leave one corpus out, min-p with STL, Holt-Winters and the transformer wins four
folds (held-out worst 47.6, the union alone 44.5), but the transformer's refresh
alone is over the 100 ms target; without it the choice is this union of STL and
Holt-Winters again (four folds; robust_z + STL + Holt-Winters as a union on the fifth).

Measured and not adopted (``python -m benchmarks detection --season``,
``benchmarks/season_gate.py``): members chosen per series before each block by its own
seasonal strength (F_S, a robust F_S, the daily autocorrelation; robust_z alone, added,
or in place of one seasonal member where it is weak; the threshold chosen leave one
corpus out) or by the members' own trailing forecast errors. Held-out worst corpus
47.0-55.8 (default 54.0), except robust_z alone below a daily autocorrelation of 0.2:
58.9, at a cost of 17 points on artificialWithAnomaly (76.7 to 59.5).

**Refresh.** The members' own expected values are kept too
(``ScoredSeries.member_expected``); a score cache hands them back as a two-row
``prior_expected``, so each member reuses its block forecasts as it would alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from plugin_backend.errors import InsufficientData, InvalidTarget
from plugin_backend.scoring.base import (
    Band,
    Detector,
    ScoredSeries,
    intersect_bands,
)
from plugin_backend.types import FloatArray

if TYPE_CHECKING:
    from plugin_backend.scoring.registry import DetectorFactory

__all__ = ["DEFAULT_MEMBERS", "EnsembleDetector", "combine"]

DEFAULT_MEMBERS = ("stl", "holt_winters")


class EnsembleDetector(Detector):
    name = "ensemble"
    min_points = 8

    def __init__(
        self,
        *,
        sensitivity: float = 1.0,
        min_deviation: float = 0.0,
        members: Sequence[str] = DEFAULT_MEMBERS,
        factory: DetectorFactory | None = None,
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        from plugin_backend.scoring.registry import get_detector

        if isinstance(members, str) or not members or "ensemble" in members:
            raise InvalidTarget("ensemble members must be a list of other detectors")
        if len(set(members)) != len(members):
            raise InvalidTarget(f"ensemble members must differ, got {list(members)}")
        create = factory.create if factory is not None else get_detector
        self.members = [
            create(name, sensitivity=sensitivity, min_deviation=min_deviation) for name in members
        ]

    def history_points(self, step_s: float) -> int:
        return max(member.history_points(step_s) for member in self.members)

    def context_points(self, step_s: float) -> int:
        return max(member.context_points(step_s) for member in self.members)

    def score(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> ScoredSeries:
        """Every member's own scores (a member without enough points yet: NaN), and
        the band where all agree. ``prior_expected`` helps only with one row per
        member (their own expected values, ``ScoredSeries.member_expected``, as a
        score cache hands back): the shown expected value is none of theirs."""
        vs = np.asarray(values, dtype=np.float64)
        finite = int(np.count_nonzero(np.isfinite(vs)))
        if finite < min(m.min_points for m in self.members):
            raise InsufficientData(min(m.min_points for m in self.members), finite)
        priors: list[FloatArray | None] = [None] * len(self.members)
        if prior_expected is not None and prior_expected.ndim == 2:
            priors = list(prior_expected)[: len(self.members)]
            priors += [None] * (len(self.members) - len(priors))
        scored: list[ScoredSeries | None] = []
        for member, prior in zip(self.members, priors, strict=True):
            try:
                scored.append(
                    member.score(timestamps_s, vs, needed_from=needed_from, prior_expected=prior)
                )
            except InsufficientData:
                scored.append(None)
        return combine(scored)

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        scored = self.score(timestamps_s, values, needed_from=needed_from)
        return Band(scored.expected, scored.lower, scored.upper)


def combine(scored: Sequence[ScoredSeries | None]) -> ScoredSeries:
    """One series from its members' scores of it (None: a member that could not score
    it yet): the shown band where all agree, the largest score, and every member's
    scores for the alarm layer. At least one member must have scored it."""
    known = [s for s in scored if s is not None]
    if not known:
        raise InvalidTarget("an ensemble needs at least one member's scores")
    first = known[0]
    nan = np.full(len(first), np.nan)
    rows = np.stack([nan if s is None else np.asarray(s.score, np.float64) for s in scored])
    expected = np.stack([nan if s is None else s.expected for s in scored])
    with np.errstate(invalid="ignore"):
        largest = np.fmax.reduce(rows, axis=0)
    shown = intersect_bands([Band(s.expected, s.lower, s.upper) for s in known])
    return ScoredSeries(
        first.timestamps_s,
        first.values,
        shown.expected,
        shown.lower,
        shown.upper,
        largest,
        member_scores=rows,
        member_expected=expected,
    )
