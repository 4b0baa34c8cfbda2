"""BARO (Pham et al., FSE 2024): Bayesian online change-point detection finds when the
anomaly began; each candidate is then scored robustly against its own normal period.

* The onset: BOCPD over the symptom (``changepoint.onset``); without one, ``at_s -
  window_s``.
* The score of a series: ``max |x - median| / IQR`` over the samples from the onset
  to ``at_s``, median and inter-quartile range from the samples before the onset
  (scikit-learn's ``RobustScaler``, as in the paper's code: an IQR of 0 counts as 1).

No graph, no timing: the largest robust jump after the onset wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from plugin_backend.rca.dependencies import DEFAULT_IDENTIFYING_LABELS, DependencyMap
from plugin_backend.rca.methods import (
    SeriesScore,
    peak_deviation,
    rank_by_score,
    span,
)
from plugin_backend.rca.ranking import Cause
from plugin_backend.types import FloatArray, Series

__all__ = ["baro_rank", "robust_score"]


def robust_score(series: Series, start_s: float, split_s: float, at_s: float) -> SeriesScore | None:
    """BARO's score of one series: its peak deviation from the normal period's median, in
    interquartile ranges (``None`` without samples on both sides)."""
    return peak_deviation(series, start_s, split_s, at_s, _median_and_iqr)


def _median_and_iqr(normal: FloatArray) -> tuple[float, float]:
    q25, med, q75 = (float(q) for q in np.percentile(normal, [25, 50, 75]))
    return med, q75 - q25


def baro_rank(
    symptom: Series,
    candidates: Sequence[Series],
    *,
    at_s: float,
    window_s: float | None = None,
    baseline_s: float | None = None,
    dependencies: DependencyMap | None = None,
    identifying_labels: Sequence[str] = DEFAULT_IDENTIFYING_LABELS,
    step_s: float | None = None,
    limit: int | None = None,
) -> list[Cause]:
    """Candidates by BARO's robust score, best first, one per entity."""
    del step_s  # the change points need no step
    start, split = span(symptom, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
    return rank_by_score(
        symptom,
        candidates,
        lambda s: robust_score(s, start, split, at_s),
        split_s=split,
        dependencies=dependencies,
        identifying_labels=identifying_labels,
        limit=limit,
        method="baro",
    )
