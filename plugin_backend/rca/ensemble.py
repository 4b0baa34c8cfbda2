"""The default ranker. With a dependency map: two rankers that fail differently,
fused by confidence: ``rank_causes`` (timing, cascade and tracking of the symptom)
and ``graph_walk_rank`` (BARO's robust jump after the symptom's change point,
walked along the map). ``rank_causes`` weighs ``S``, the strength of its own first
cause (``components["strength"]``: how far it moved, how novel, times its
tracking of the symptom squared, in ``[0, 1]``); the walk weighs ``1 - S``. When
the first cause clearly moved with the symptom (``S`` near 1: fine-grained data)
the walk only breaks near-ties; when nothing tracks the symptom clearly (coarse,
sparse data: 5 min CloudWatch steps) the size of each jump along the map decides.
No new constant: ``S`` is ``rank_causes``' own. Measured on every source with
``python -m benchmarks rca``: the best worst source of the rankers tried (equal
weights lost the simulator and the second generator to the walk; ``rank_causes``
alone lost PetShop).
Without a map ``rank_causes`` ranks alone: fusing it with plain BARO lifts the
real PetShop issues but puts a loud victim first where ``rank_causes`` finds the
cause (the simulator, the demo estate's pool exhaustion).

Weighted reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009): each
entity gets the weighted mean of ``1 / (FUSION_K + rank)`` over the entity rankings
that rank it (a ranker that cannot judge a cause, BARO a deploy event, abstains);
no scores need to be comparable; a tie goes to the first ranking's order. Each
entity is shown by ``rank_causes``' cause where it has one (its evidence has onset,
lead and parts), else by the walk's; ``Cause.score`` is the fused value over the
largest possible one (in ``[0, 1]``), the parts in ``components`` as ``rank_<ranker>``
and ``weight_<ranker>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from plugin_backend.rca.dependencies import DEFAULT_IDENTIFYING_LABELS, DependencyMap
from plugin_backend.rca.graph_walk import graph_walk_rank
from plugin_backend.rca.ranking import MARKER_SUFFIXES, Cause, rank_causes
from plugin_backend.types import Series

__all__ = ["FUSION_K", "confidence", "ensemble_rank", "fuse"]

FUSION_K = 1.0  # a small k trusts each ranker's top places (k=60 flattens short lists)


def _key(cause: Cause) -> str:
    marker = cause.evidence.kind == "change_event" and cause.metric.endswith(MARKER_SUFFIXES)
    if cause.entity is None or marker:
        return f"series:{cause.series}"
    return f"entity:{cause.entity}"


def confidence(ranked: Sequence[Cause]) -> float:
    """How clearly ``rank_causes``' first cause moved with the symptom: its strength
    (``components["strength"]``, in ``[0, 1]``; 0 for an empty ranking)."""
    if not ranked:
        return 0.0
    strength = float(ranked[0].components.get("strength", 0.0))
    return min(max(strength, 0.0), 1.0) if math.isfinite(strength) else 0.0


def fuse(
    rankings: Mapping[str, Sequence[Cause]], weights: Mapping[str, float] | None = None
) -> list[Cause]:
    """Weighted reciprocal rank fusion of entity rankings (best first each), best
    first; a ranking missing from ``weights`` (all, without it) weighs 1."""
    w = {name: max(float((weights or {}).get(name, 1.0)), 0.0) for name in rankings}
    total: dict[str, float] = {}
    weight: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {}
    shown: dict[str, Cause] = {}
    for name, ranked in rankings.items():
        for pos, cause in enumerate(ranked, start=1):
            key = _key(cause)
            total[key] = total.get(key, 0.0) + w[name] / (FUSION_K + pos)
            weight[key] = weight.get(key, 0.0) + w[name]
            parts.setdefault(key, {})[f"rank_{name}"] = float(pos)
            shown.setdefault(key, cause)
    # A ranker that cannot judge a cause abstains (BARO has no curve for a deploy):
    # the mean is over the rankers that rank it.
    fused = {k: v / weight[k] if weight[k] > 0 else 0.0 for k, v in total.items()}
    best = 1.0 / (FUSION_K + 1.0)
    # Ties go to the first ranking's order (``rank_causes``: it has the timing evidence).
    first = f"rank_{next(iter(rankings), '')}"
    order = sorted(
        fused, key=lambda k: (-fused[k], parts[k].get(first, float("inf")), shown[k].series)
    )
    return [
        dataclasses.replace(
            shown[k],
            score=fused[k] / best,
            components={
                **shown[k].components,
                **parts[k],
                **{f"weight_{name}": w[name] for name in rankings},
                "fused": fused[k],
            },
        )
        for k in order
    ]


def ensemble_rank(
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
    """Entities by the confidence-weighted fused rank of ``rank_causes`` and
    ``graph_walk_rank`` (with a map; ``rank_causes`` alone without), best first."""
    rankers = [("rank_causes", rank_causes)]
    if dependencies is not None:
        rankers.append(("graph_walk", graph_walk_rank))
    rankings: dict[str, list[Cause]] = {}
    for name, rank in rankers:
        rankings[name] = rank(
            symptom,
            candidates,
            at_s=at_s,
            window_s=window_s,
            baseline_s=baseline_s,
            dependencies=dependencies,
            identifying_labels=identifying_labels,
            step_s=step_s,
        )
    if len(rankings) > 1:
        sure = confidence(rankings["rank_causes"])
        out = fuse(rankings, {"rank_causes": sure, "graph_walk": 1.0 - sure})
    else:
        out = rankings["rank_causes"]
    return out if limit is None else out[: max(limit, 0)]
