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
With a map, one order is then enforced, not weighed: *a node sums its tenants*. A
node's cause ranked above something that runs on it (per the map), whose own cause is
a change of the same resource (CPU, memory, disk, network) in the same direction
within a step of the node's, goes just below that tenant: a runaway process raises
its host's CPU, not the other way round. ``rank_causes`` counts such a change in its
precedence term, but a counter's rate lags a gauge by a step or two and the host's
earlier onset can still win on timing.
And *what has no path to the symptom follows*: a cause whose entity the map knows but
that neither needs the symptom's entity nor is needed by it (transitively) goes after
the rest (a batch job sharing the database acts on the symptom only through the
database, which is on its path).
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

from plugin_backend.rca.dependencies import (
    DEFAULT_IDENTIFYING_LABELS,
    NODE_LABELS,
    DependencyMap,
)
from plugin_backend.rca.entities import entity_of
from plugin_backend.rca.evidence import infer_step
from plugin_backend.rca.graph_walk import graph_walk_rank
from plugin_backend.rca.ranking import MARKER_SUFFIXES, Cause, _resource, rank_causes
from plugin_backend.types import Series

__all__ = [
    "FUSION_K",
    "confidence",
    "ensemble_rank",
    "fuse",
    "symptom_paths_first",
    "tenants_above_nodes",
]

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


def _node_of(cause: Cause, dependencies: DependencyMap) -> str | None:
    """The machine a cause's series measures (its entity, named by a node label), if any."""
    entity = cause.entity
    if entity is None or entity not in dependencies or dependencies.depends_on(entity):
        return None
    named = {dependencies.resolve(cause.labels.get(n, "")) for n in NODE_LABELS}
    return entity if entity in named else None


def _sums(node: Cause, tenant: Cause, step_s: float) -> bool:
    """Whether ``node``'s change sums up ``tenant``'s: the same resource, the same
    direction, onsets within a step."""
    a, b = node.evidence, tenant.evidence
    resource = _resource(node.metric)
    return (
        resource is not None
        and b.changed
        and _resource(tenant.metric) == resource
        and a.direction == b.direction
        and a.onset_s is not None
        and b.onset_s is not None
        and abs(a.onset_s - b.onset_s) <= step_s
    )


def tenants_above_nodes(
    ranked: Sequence[Cause], dependencies: DependencyMap, step_s: float
) -> list[Cause]:
    """``ranked`` with each node's cause moved just below the first tenant of it (per
    the map) ranked lower whose own cause the node's change sums up (``_sums``); the
    tenant takes the node's place and score."""
    out = list(ranked)
    i = 0
    while i < len(out):
        node = _node_of(out[i], dependencies)
        if node is not None:
            tenants = dependencies.dependents(node)
            for j in range(i + 1, len(out)):
                if out[j].entity in tenants and _sums(out[i], out[j], step_s):
                    # The tenant takes the node's place, and its score: scores keep falling.
                    out.insert(i, dataclasses.replace(out.pop(j), score=out[i].score))
                    break
        i += 1
    return out


def symptom_paths_first(
    ranked: Sequence[Cause], dependencies: DependencyMap, symptom_entity: str | None
) -> list[Cause]:
    """``ranked`` with the causes whose entity the map knows but that has no path to or
    from ``symptom_entity`` (neither needs it nor is needed by it, transitively) after
    the rest, each in its order, their scores capped at the last one before them."""
    if symptom_entity is None or symptom_entity not in dependencies:
        return list(ranked)
    paths = (
        {symptom_entity}
        | dependencies.upstream(symptom_entity)
        | dependencies.downstream(symptom_entity)
    )

    def on_paths(cause: Cause) -> bool:
        return cause.entity is None or cause.entity not in dependencies or cause.entity in paths

    kept = [c for c in ranked if on_paths(c)]
    floor = kept[-1].score if kept else math.inf
    return kept + [
        dataclasses.replace(c, score=min(c.score, floor)) for c in ranked if not on_paths(c)
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
    if dependencies is not None:
        sure = confidence(rankings["rank_causes"])
        fused = fuse(rankings, {"rank_causes": sure, "graph_walk": 1.0 - sure})
        step = step_s if step_s is not None else infer_step(symptom.timestamps_s)
        settled = tenants_above_nodes(fused, dependencies, step) if step is not None else fused
        sym_entity = entity_of(symptom.labels, dependencies, identifying_labels)
        out = symptom_paths_first(settled, dependencies, sym_entity)
    else:
        out = rankings["rank_causes"]
    return out if limit is None else out[: max(limit, 0)]
