"""N-Sigma: each candidate's largest deviation after the anomaly's onset, in standard
deviations of its own normal period (``max |x - mean| / std``), the classic
baseline of the RCA literature (RCAEval). The onset is the same change point as
BARO's (``methods.split_time``), so the two differ only in mean/std against
median/IQR. A constant normal period (std 0) counts as std 1, like BARO's IQR.
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

__all__ = ["nsigma_rank", "sigma_score"]


def sigma_score(series: Series, start_s: float, split_s: float, at_s: float) -> SeriesScore | None:
    """N-Sigma's score of one series: its peak deviation from the normal period's mean, in
    standard deviations (``None`` without samples on both sides)."""
    return peak_deviation(series, start_s, split_s, at_s, _mean_and_std)


def _mean_and_std(normal: FloatArray) -> tuple[float, float]:
    return float(np.mean(normal)), float(np.std(normal))


def nsigma_rank(
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
    """Candidates by their N-Sigma score, best first, one per entity."""
    del step_s
    start, split = span(symptom, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
    return rank_by_score(
        symptom,
        candidates,
        lambda s: sigma_score(s, start, split, at_s),
        split_s=split,
        dependencies=dependencies,
        identifying_labels=identifying_labels,
        limit=limit,
        method="nsigma",
    )
