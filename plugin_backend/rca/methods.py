"""What the established rankers share: the split at the symptom's onset, a per-series
score turned into a ``Cause``, entities, and the ranker signature.

Every ranker takes ``(symptom, candidates, *, at_s, window_s, baseline_s,
dependencies, identifying_labels, step_s, limit)`` like ``rank_causes`` and returns
``Cause`` objects, best first, one per entity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from plugin_backend.errors import InvalidTarget
from plugin_backend.rca.changepoint import onset
from plugin_backend.rca.dependencies import DependencyMap
from plugin_backend.rca.entities import best_per_entity, entity_of
from plugin_backend.rca.evidence import DEFAULT_BASELINE_S, DEFAULT_WINDOW_S, Evidence
from plugin_backend.rca.ranking import Cause
from plugin_backend.types import FloatArray, Series

__all__ = [
    "Ranker",
    "SeriesScore",
    "finite_part",
    "peak_deviation",
    "rank_by_score",
    "span",
]


class Ranker(Protocol):
    def __call__(
        self,
        symptom: Series,
        candidates: Sequence[Series],
        *,
        at_s: float,
        window_s: float | None = ...,
        baseline_s: float | None = ...,
        dependencies: DependencyMap | None = ...,
        identifying_labels: Sequence[str] = ...,
        step_s: float | None = ...,
        limit: int | None = ...,
    ) -> list[Cause]: ...


# (score, baseline level, baseline scale, peak value, peak time) of one series, or None.
SeriesScore = tuple[float, float, float, float, float]


def _check(at_s: float, window_s: float | None, baseline_s: float | None) -> None:
    if not math.isfinite(at_s):
        raise InvalidTarget(f"at_s must be a finite time, got {at_s}")
    for name, value in (("window_s", window_s), ("baseline_s", baseline_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InvalidTarget(f"{name} must be a positive number of seconds, got {value}")


def span(
    symptom: Series, *, at_s: float, window_s: float | None, baseline_s: float | None
) -> tuple[float, float]:
    """``(start, split)``: the data used starts at ``at_s - window_s - baseline_s`` (without
    both, at the symptom's first sample); the normal period ends at the symptom's
    change-point onset, or ``at_s - window_s`` (default 30 min) when none is found."""
    _check(at_s, window_s, baseline_s)
    if window_s is not None and baseline_s is not None:
        start = at_s - window_s - baseline_s
    else:
        t = symptom.timestamps_s
        ok = np.isfinite(t) & np.isfinite(symptom.values) & (t <= at_s + 1e-6)
        start = float(np.min(t[ok])) if np.any(ok) else at_s - DEFAULT_WINDOW_S - DEFAULT_BASELINE_S
    found = onset(symptom, at_s=at_s, start_s=start)
    fallback = at_s - (window_s if window_s is not None else DEFAULT_WINDOW_S)
    return start, found if found is not None else max(fallback, start)


def finite_part(
    series: Series, start_s: float, split_s: float, at_s: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Finite values before ``split_s`` (from ``start_s``), and the times and values
    from ``split_s`` to ``at_s``."""
    t, x = series.timestamps_s, series.values
    ok = np.isfinite(t) & np.isfinite(x) & (t >= start_s - 1e-6) & (t <= at_s + 1e-6)
    before = ok & (t < split_s)
    after = ok & (t >= split_s)
    return x[before], t[after], x[after]


def peak_deviation(
    series: Series,
    start_s: float,
    split_s: float,
    at_s: float,
    center_and_scale: Callable[[FloatArray], tuple[float, float]],
) -> SeriesScore | None:
    """The largest deviation after ``split_s`` from the normal period's centre, in its
    scale (1 where the scale is 0): ``(score, centre, scale, value, time)``, or ``None``
    without samples on both sides. BARO and N-Sigma differ only in centre and scale."""
    normal, t_after, after = finite_part(series, start_s, split_s, at_s)
    if normal.size == 0 or after.size == 0:
        return None
    center, scale = center_and_scale(normal)
    scale = scale if scale > 0 else 1.0
    dev = np.abs(after - center) / scale
    i = int(np.argmax(dev))
    return float(dev[i]), center, scale, float(after[i]), float(t_after[i])


def rank_by_score(
    symptom: Series,
    candidates: Sequence[Series],
    score: Callable[[Series], SeriesScore | None],
    *,
    split_s: float,
    dependencies: DependencyMap | None,
    identifying_labels: Sequence[str],
    limit: int | None,
    method: str,
    entity_weight: Mapping[str, float] | None = None,
) -> list[Cause]:
    """Score each candidate (the symptom's own series left out), best first, one per
    entity. ``entity_weight`` (a graph method's) replaces the score's order by the
    entity's weight, the series' score breaking ties."""
    scored: list[tuple[float, float, Cause]] = []
    for series in candidates:
        if series.name == symptom.name:
            continue
        found = score(series)
        if found is None or not math.isfinite(found[0]):
            continue
        value, level, scale, peak, peak_t = found
        entity = entity_of(series.labels, dependencies, identifying_labels)
        ev = Evidence(
            baseline=level,
            baseline_scale=scale,
            incident_value=peak,
            peak_value=peak,
            magnitude=value,
            direction="up" if peak >= level else "down",
            onset_s=split_s,
            changed=value > 0,
            kind="metric",
            sustained=value,
        )
        weight = value if entity_weight is None else entity_weight.get(entity or "", 0.0)
        cause = Cause(
            series=series.name,
            metric=series.metric,
            labels=series.labels,
            score=weight,
            onset_s=split_s,
            evidence=ev,
            lead_s=split_s - peak_t,
            entity=entity,
            components={method: value},
        )
        scored.append((weight, value, cause))
    scored.sort(key=lambda c: (-c[0], -c[1], c[2].series))
    ranked = best_per_entity([c[2] for c in scored])
    return ranked if limit is None else ranked[: max(limit, 0)]
