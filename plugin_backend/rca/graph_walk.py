"""A random walk on the dependency map weighted by anomaly (MonitorRank, KDD 2013;
MicroRank, WWW 2021 use its personalised-PageRank form).

* Each entity's anomaly ``a`` is the largest BARO score of its series
  (``baro.robust_score``, split at the symptom's change point), as ``log(1 + s)``
  over the largest such value (in ``[0, 1]``).
* The walker at entity ``u`` steps to what ``u`` needs (where a cause of ``u``'s
  trouble lives) with weight ``a(v)``, back to what needs ``u`` with weight
  ``BACKWARD x a(v)`` (a walker that went the wrong way can return), and stays
  with weight ``max(0, a(u) - max a(neighbours))``: an entity more anomalous than
  everything around it holds the walker, which is where the cause usually is.
* With probability ``1 - DAMPING`` the walker restarts at an entity drawn with
  probability proportional to ``a`` among the symptom's entity, what it needs and
  its direct callers (the load it gets) (personalised PageRank: the walk explores
  the symptom's call paths).
* The walker never leaves those call paths. An entity that the symptom does not
  need and that does not call it (a batch job sharing the symptom's database) can
  reach the symptom only through what the symptom needs (the database, which the
  walk does rank), so the step back from the database to the batch job is not
  taken: such an entity gets probability 0 and follows, by its own score.

Entities are ranked by the walk's stationary probability, each by its best series;
series the map does not know follow, by their own score. Without a map this is BARO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from plugin_backend.rca.baro import robust_score
from plugin_backend.rca.dependencies import DEFAULT_IDENTIFYING_LABELS, DependencyMap
from plugin_backend.rca.entities import entity_of
from plugin_backend.rca.methods import rank_by_score, span
from plugin_backend.rca.ranking import Cause
from plugin_backend.types import Series

__all__ = ["BACKWARD", "DAMPING", "graph_walk_rank", "walk"]

BACKWARD = 0.3  # MonitorRank's rho: the weight of a step against the needs edge
DAMPING = 0.85  # PageRank's: the share of steps that follow an edge
_ITERATIONS = 100


def walk(
    dependencies: DependencyMap, anomaly: Mapping[str, float], symptom: str | None = None
) -> dict[str, float]:
    """The stationary probability of each entity of the map (see the module docstring);
    with ``symptom`` the walker restarts and moves only on it, what it needs and its
    direct callers (every other entity gets 0)."""
    everything = sorted(dependencies.entities)
    if not everything:
        return {}
    nodes = everything
    if symptom is not None and symptom in dependencies:
        # What the symptom needs, and its direct callers (the load it gets): the
        # walker restarts and moves only there.
        paths = {symptom, *dependencies.upstream(symptom), *dependencies.dependents(symptom)}
        nodes = sorted(paths)
    index = {e: i for i, e in enumerate(nodes)}
    a = np.array([max(anomaly.get(e, 0.0), 0.0) for e in nodes])
    start = a.copy()
    n = len(nodes)
    move = np.zeros((n, n))
    for e, i in index.items():
        needs = [index[v] for v in dependencies.depends_on(e) if v in index]
        needed_by = [index[v] for v in dependencies.dependents(e) if v in index]
        for j in needs:
            move[i, j] += a[j]
        for j in needed_by:
            move[i, j] += BACKWARD * a[j]
        around = [a[j] for j in (*needs, *needed_by)]
        move[i, i] += max(0.0, a[i] - max(around, default=0.0))
    totals = move.sum(axis=1, keepdims=True)
    restart = start / start.sum() if start.sum() > 0 else np.full(n, 1.0 / n)
    # A walker with nowhere to go restarts.
    move = np.where(totals > 0, move / np.where(totals > 0, totals, 1.0), restart)
    p = restart.copy()
    for _ in range(_ITERATIONS):
        nxt = DAMPING * (p @ move) + (1.0 - DAMPING) * restart
        if float(np.abs(nxt - p).sum()) < 1e-10:
            p = nxt
            break
        p = nxt
    return {e: float(p[index[e]]) if e in index else 0.0 for e in everything}


def graph_walk_rank(
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
    """Entities by the anomaly-weighted walk on ``dependencies``, best first."""
    del step_s
    start, split = span(symptom, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
    weights: dict[str, float] | None = None
    if dependencies is not None:
        best: dict[str, float] = {}
        for s in candidates:
            found = robust_score(s, start, split, at_s)
            entity = entity_of(s.labels, dependencies, identifying_labels)
            if found is not None and entity is not None and np.isfinite(found[0]):
                best[entity] = max(best.get(entity, 0.0), float(np.log1p(found[0])))
        top = max(best.values(), default=0.0)
        anomaly = {e: v / top for e, v in best.items()} if top > 0 else {}
        sym_entity = entity_of(symptom.labels, dependencies, identifying_labels)
        weights = walk(dependencies, anomaly, sym_entity)
    return rank_by_score(
        symptom,
        candidates,
        lambda s: robust_score(s, start, split, at_s),
        split_s=split,
        dependencies=dependencies,
        identifying_labels=identifying_labels,
        limit=limit,
        method="graph_walk",
        entity_weight=weights,
    )
