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
With a map, three orders are then enforced, not weighed. *A shared resource sums its
users*: an entity's cause that measures a quantity its users hold (CPU, memory, disk,
network, connections) ranked above a user of it (per the map: what runs on it or calls
it) that changed the same quantity in the same direction within a step of it goes just
below that user: a runaway process raises its host's CPU, a leaking pool raises the
database's connections, not the other way round. ``rank_causes`` counts a node's
tenants in its precedence term, but a counter's rate lags a gauge by a step or two
and the host's earlier onset can still win on timing.
Before it, *a saturated need explains its caller's latency*: a rise of an entity's
latency within a step of a rise in the use of a machine resource (CPU, memory, disk,
network) by something it needs (per the map: its host, a service it calls) goes just
below that entity: latency is what saturation makes of the work queued on it (the rule
``rank_causes`` applies without a map), so a backup filling a host's disk comes before
the database queries it slows, which both rankers can put first at the same onset
(the disk's busy time is a counter, whose rate lags).
Not where the rise sums a user's own: where something that needs the saturated entity
raised the same resource by then (a leaking pod's garbage collection raises its host's
CPU), the host's use is an effect (the rule above then orders the two).
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
from collections.abc import Callable, Mapping, Sequence

from plugin_backend.rca.dependencies import DEFAULT_IDENTIFYING_LABELS, DependencyMap
from plugin_backend.rca.entities import entity_of
from plugin_backend.rca.evidence import deviation, infer_step
from plugin_backend.rca.graph_walk import graph_walk_rank
from plugin_backend.rca.ranking import (
    MARKER_SUFFIXES,
    Cause,
    is_latency,
    machine_resource,
    rank_causes,
)
from plugin_backend.rca.window import symptom_window
from plugin_backend.types import Series

__all__ = [
    "FUSION_K",
    "confidence",
    "ensemble_rank",
    "fuse",
    "quantity",
    "saturated_needs_above_latency",
    "symptom_paths_first",
    "users_above_shared",
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


def quantity(metric: str) -> str | None:
    """What a metric counts that users of a shared thing hold: a machine resource (CPU,
    memory, disk, network) or connections (``None``: neither)."""
    found = machine_resource(metric)
    if found is None and "connection" in metric.lower():
        return "connections"
    return found


# A change of one series: (quantity, direction, onset).
Change = tuple[str, str, float]


def users_above_shared(
    ranked: Sequence[Cause],
    dependencies: DependencyMap,
    changes_of: Callable[[str], Sequence[Change]],
    step_s: float,
) -> list[Cause]:
    """``ranked`` with each shared entity's cause moved just below the first user of it
    (per the map: what needs it) ranked lower with a change (``changes_of(user)``) that
    the shared one's sums up: the same ``quantity``, the same direction, onsets within
    ``step_s``. The user takes the shared entity's place and score."""
    out = list(ranked)
    i = 0
    while i < len(out):
        shared, ev = out[i], out[i].evidence
        what = quantity(shared.metric)
        entity = shared.entity
        users = dependencies.dependents(entity) if entity is not None else frozenset()
        if what is not None and users and ev.changed and ev.onset_s is not None:
            onset = ev.onset_s
            for j in range(i + 1, len(out)):
                user = out[j].entity
                if user in users and any(
                    q == what and d == ev.direction and abs(t - onset) <= step_s
                    for q, d, t in changes_of(user)
                ):
                    # The user takes the shared entity's place, and its score.
                    out.insert(i, dataclasses.replace(out.pop(j), score=shared.score))
                    break
        i += 1
    return out


def saturated_needs_above_latency(
    ranked: Sequence[Cause],
    dependencies: DependencyMap,
    changes_of: Callable[[str], Sequence[Change]],
    step_s: float,
) -> list[Cause]:
    """``ranked`` with each cause that is a rising latency moved just below the first
    entity it needs (per the map) ranked lower whose use of a machine resource (a
    ``quantity`` other than connections) rose within ``step_s`` of it, unless something
    that needs that entity raised the same resource by then (``step_s`` after it at the
    latest: then that rise sums its user's). The needed entity takes the latency's
    place and score."""
    out = list(ranked)

    def saturated(entity: str, onset: float) -> bool:
        for what, direction, at in changes_of(entity):
            if what == "connections" or direction != "up" or abs(at - onset) > step_s:
                continue
            summed = any(
                q == what and d == "up" and t <= at + step_s
                for user in dependencies.dependents(entity)
                for q, d, t in changes_of(user)
            )
            if not summed:
                return True
        return False

    i = 0
    while i < len(out):
        slow, ev = out[i], out[i].evidence
        entity = slow.entity
        needs: frozenset[str] = frozenset()
        if entity is not None and entity in dependencies:
            needs = dependencies.depends_on(entity)
        if (
            needs
            and is_latency(slow.metric)
            and ev.changed
            and ev.direction == "up"
            and ev.onset_s is not None
        ):
            onset = ev.onset_s
            for j in range(i + 1, len(out)):
                need = out[j].entity
                if need in needs and saturated(need, onset):
                    out.insert(i, dataclasses.replace(out.pop(j), score=slow.score))
                    i += 1  # the latency is one place further down now
                    break
        i += 1
    return out


def _changes_by_entity(
    candidates: Sequence[Series],
    dependencies: DependencyMap,
    identifying_labels: Sequence[str],
    **window: float,
) -> Callable[[str], Sequence[Change]]:
    """``changes_of(entity)``: the changes of the entity's series that count a
    ``quantity``, judged as ``rank_causes`` judges them (``deviation``), on demand."""
    series: dict[str, list[Series]] = {}
    for s in candidates:
        entity = entity_of(s.labels, dependencies, identifying_labels)
        if entity is not None and quantity(s.metric) is not None:
            series.setdefault(entity, []).append(s)
    found: dict[str, list[Change]] = {}

    def changes_of(entity: str) -> Sequence[Change]:
        if entity not in found:
            found[entity] = []
            for s in series.get(entity, []):
                ev = deviation(s, **window)[0]
                what = quantity(s.metric)
                if ev.changed and ev.onset_s is not None and what is not None:
                    found[entity].append((what, ev.direction, ev.onset_s))
        return found[entity]

    return changes_of


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
        if step is not None:
            # The window rank_causes judged each series over.
            if window_s is None or baseline_s is None:
                auto_window, auto_baseline = symptom_window(symptom, at_s=at_s, step_s=step)
                window_s = auto_window if window_s is None else window_s
                baseline_s = auto_baseline if baseline_s is None else baseline_s
            changes_of = _changes_by_entity(
                candidates,
                dependencies,
                identifying_labels,
                at_s=at_s,
                window_s=window_s,
                baseline_s=baseline_s,
                step_s=step,
            )
            fused = saturated_needs_above_latency(fused, dependencies, changes_of, step)
            fused = users_above_shared(fused, dependencies, changes_of, step)
        sym_entity = entity_of(symptom.labels, dependencies, identifying_labels)
        out = symptom_paths_first(fused, dependencies, sym_entity)
    else:
        out = rankings["rank_causes"]
    return out if limit is None else out[: max(limit, 0)]
