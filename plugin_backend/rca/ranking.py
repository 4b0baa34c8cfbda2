"""Rank candidate series by how likely each is the root cause of a symptom.

Every candidate gets ``Evidence`` (``evidence.py``) over the same range as the
symptom; candidates that did not change in the window come last (score 0). For
the changed ones a raw score adds up, each part in about ``[-1, 1]``:

``raw = S + 2 T + 2 R + C + Q + 0.5 P + 0.3 E + M + X + L``

``R`` tracking (weight 2: with ~150 candidates many change, so the symptom itself
    must be compared): the best Pearson correlation ``r`` of the candidate's
    robust-z curve with the symptom's, the symptom shifted ``0..TRACK_LAG_S``
    later, over the candidate's samples from ``CASCADE_GAP_S`` before the symptom's
    onset to ``at_s`` (both curves ``sign(z) log(1 + |z|)``, so one huge sample does
    not decide). Where the shifted symptom runs past ``at_s`` it is held at its
    latest state: a burst of the candidate that is over does not match a symptom
    that is still on, and a step long before the symptom matches poorly. A change
    event has no curve: it takes the best ``r`` of its own entity's metrics (a
    shared identifying label value) that changed with or after it, so a deploy
    counts only when its own service then moved with the symptom.
    Every changed series' strength below is scaled by ``max(r, 0) ** 2`` (the share
    of the symptom it explains), in its own ``S`` and wherever it is counted in
    another's ``C``, ``Q`` and ``E``: unrelated changes do not fill cascades.
``S`` strength
    ``1 - exp(-max(z - 3, 0) / 4)`` of the robust z (change events count as 1, a
    disappearance 0.8): a soft threshold that saturates, so an 8 sigma change
    (0.71) is not drowned by a 50 sigma one (1.0), times ``max(r, 0) ** 2``, times
    its novelty: ``(z / max(b, 4) - 1)`` clipped to ``[0, 1]``, with ``b`` the largest
    |z| the series reached inside its own baseline, so a batch job that bursts this
    high every hour counts for nothing (here and in others' cascade and precedence).
    Size says "this changed", not "this caused it".
``T`` timing (weight 2: the strongest signal)
    ``lead = symptom onset - candidate onset``, in steps ``u``. Leading:
    ``1 - exp(-u / 0.75)``, fading with a 15 min time constant once the lead, less
    the candidate's creep (onset to first reaching the detection threshold: minutes
    for a slow leak, 0 for a step), exceeds ``LONG_LEAD_S`` = 5 min (a few
    propagation hops; an unrelated change minutes before the cascade must not
    outscore the change that starts it), times, without a dependency map, the
    change's own credibility: its strength times its novelty (below, without
    tracking). A lead is only as sure as the onset that defines it: a series that
    barely cleared its own noise, or moved no further than its baseline already did,
    has an onset as uncertain as its size, so at 5 min steps a weak mover one step
    early must not outweigh a jump of a hundred sigmas in the symptom's own step.
    Lagging: ``-1.5 (1 - exp(u / 1.5))``:
    a change after the symptom is a victim. Within half a step counts as
    simultaneous (0).
``C`` cascade
    ``1 - exp(-n / 2)`` with ``n`` the strength-weighted number of other changed
    series (symptom included) whose onsets follow the candidate's within
    ``CASCADE_GAP_S`` (simultaneous ones count half). A root cause starts a
    cascade; an unrelated change long before it has nothing following it.
``Q`` precedence
    ``exp(-m / 1.5)`` with ``m`` the strength-weighted number of changed series
    whose onsets come *before* the candidate's within ``CASCADE_GAP_S``: the
    earliest coherent change of a co-changing group wins. With a map, only
    earlier changes on related entities (either direction, or siblings) count.
``P`` persistence
    The sustained z over the peak z (capped at 1): a cause of an ongoing symptom is
    still deviating at ``at_s``; a transient blip is not.
``E`` shared entities
    ``1 - exp(-n / 3)`` with ``n`` the strength-weighted number of later changed
    series sharing an identifying label value (``service="checkout"``,
    ``node="node-b"``) with the candidate; values that most series share (a
    ``job`` label on everything) do not count.
``M`` dependency map (only with one)
    The candidate's entity relative to the symptom's: same entity +0.25; upstream
    of it (the symptom's entity needs it) +0.5; a sibling (both needed by the same
    entity: a cache next to its database) 0; downstream of it (it needs the
    symptom's entity) -0.5, or +0.25 if it clearly leads (a traffic surge flows
    from callers); unrelated -1.5; plus ``0.5 x`` the share of later-changing
    entities downstream of the candidate ("explains many"). Series whose entity
    the map does not know get 0.
``L`` load (``load.load_roles``)
    Load is a cause: a rising request rate into the symptom's entity or (with a map)
    one of its callers, the origin of that rise, gets ``+origin``; any other rising
    request rate into an entity with callers is their effect (their load passing
    through, or their changed demand: a cache's misses sent to the database) and
    gets -1; both times ``max(r, 0)``. A counter's rate may feed a symptom that is no
    rate from up to a step after its onset (it averages over its window and shows a
    rise a sample after a gauge). For a load rise, only earlier
    load rises count in ``Q``, and a simultaneous one counts as leading by a step in
    ``T`` (a surge acts within a scrape interval).
``Q`` for a node's series (with a map) also counts simultaneous changes of the same
    resource (CPU, memory, disk, network, by metric name) in the same direction by
    what runs on the node: a node's usage sums its tenants', so a runaway process
    ranks above its host. Likewise a latency's simultaneous change (same step) of a
    service its entity needs (transitively): a slow dependency slows its callers
    within a scrape, so when both move at once the dependency's change comes first.
``Q`` without a map, for a latency, also counts latencies that moved in the same sample
    (steps up to a minute) and direction by a clearly larger factor (``log`` of
    incident over baseline, by more than 0.2): a caller's latency is its own time plus
    what it waits for, so a slowdown's relative size shrinks hop by hop and the
    latency that grew most is nearest the source (queueing can amplify instead: a
    slow call that holds a pooled connection makes its caller wait longer still).
    Likewise a machine resource (CPU, memory, disk, network by metric name) whose use
    rose in the same sample: latency is what saturation makes of queued work, so a
    disk that filled explains the database queries that slowed with it. And a node's
    resource (a series with a node label) counts the same resource's changes of processes
    and services (no node label) within a step, in the same direction, while theirs do
    not count its change: a node's usage sums its tenants' (``_contained`` with a map).
    Where the node's change sums that one tenant's alone, it is the tenant's change seen
    in the sum, and the tenant's ``T`` takes the node's lead if it is longer (a
    process's usage is often a counter's rate, a sample behind the host's gauge).
``X`` change event
    +1 for a marker series (``*_info``, ``*_event``) that appeared (a new
    ``app_build_info{version=...}``, a deploy annotation), +0.6 for one that
    disappeared, when not after the symptom, times its support: ``E`` without a
    map (its own service/instance changed after it), 1 or 0 with one (``M >= 0``).
    A setting that moved (``evidence``: a deployment's generation 45 -> 46) counts
    like an appeared marker, and like one it tracks the symptom only through its own
    entity's metrics. A deploy is the classic root cause, but harmless ones happen. A measurement
    that appeared or vanished (a new pod's latency, a table first queried) is no
    deploy: its level is compared with its peers' (the same metric's other series,
    median level and robust scale) and it counts only as far as it differs.

Without a map, a series of the symptom's own metric on the symptom's own entity (another
pod, quantile or statistic: ``latency{pod="gateway-1"}`` beside the symptom's
``latency{pod="gateway-0"}``) is the symptom seen again, not its cause: it ranks after
every other changed candidate (it still counts in the others' terms, like the symptom).
Its onset, a sample earlier by noise, would otherwise take the timing credit. The
symptom's entity can still be the cause through its other series (a surge's request
rate). With a map it is not applied: the default with a map lost estate2 AC@3 .91 -> .89.

The result holds one cause per entity (``entities.entity_of``: the map's name,
else the service/component/node label), its best-ranked series; marker series
stand for themselves.

``Cause.score`` is ``1 / (1 + exp(-(raw - 2)))`` for changed candidates, so the
ranked list has falling scores in ``(0, 1)``; the parts are in ``components``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from plugin_backend.errors import InvalidTarget
from plugin_backend.rca.counters import is_counter
from plugin_backend.rca.dependencies import (
    DEFAULT_IDENTIFYING_LABELS,
    NODE_LABELS,
    DependencyMap,
)
from plugin_backend.rca.entities import best_per_entity, entity_of
from plugin_backend.rca.evidence import (
    CHANGE_EVENT_MAGNITUDE,
    CHANGE_THRESHOLD,
    DEFAULT_BASELINE_S,
    DEFAULT_WINDOW_S,
    Deviation,
    Evidence,
    compute_evidence,
    deviation,
    infer_step,
)
from plugin_backend.rca.load import load_roles
from plugin_backend.rca.window import symptom_window
from plugin_backend.types import FloatArray, Series

__all__ = [
    "CASCADE_GAP_S",
    "LONG_LEAD_S",
    "TRACK_LAG_S",
    "Cause",
    "is_latency",
    "machine_resource",
    "naive_rank",
    "rank_causes",
]

CASCADE_GAP_S = 600.0
LONG_LEAD_S = 300.0  # leads up to this count in full: a few propagation hops
TRACK_LAG_S = 300.0  # the longest cause-to-symptom delay the tracking term allows
_RAW_MIDPOINT = 2.0

_LEAD_FADE_S = 900.0  # leads beyond LONG_LEAD_S fade with this time constant
_LEAD_RISE_STEPS = 0.75  # a lead of one step already counts for 0.74
_NOVELTY_FLOOR = 4.0  # a quiet baseline's largest 3-point-median |z| is about 3
_NOVELTY_SPAN = 1.0  # full novelty at (1 + span) x the baseline's own largest excursion
MARKER_SUFFIXES = ("_info", "_event")
_LATENCY_WORDS = ("latency", "duration", "response_time")
_SHARED_FRACTION = 0.5  # a label value on more than this share of series identifies nothing
_DILUTION_MARGIN = 0.2  # log ratio: a "clearly larger" factor is about 1.2 x the other's
# One sample is "the same moment" only at scrape resolution: in PetShop's 5 min samples
# latencies on unrelated paths move in the same sample (chosen there; sim and estate2,
# at 15 s and 30 s, confirm the rule).
_SAME_MOMENT_MAX_STEP_S = 60.0


@dataclass(frozen=True)
class Cause:
    """One ranked candidate. ``lead_s`` > 0: it changed that long before the symptom."""

    series: str
    metric: str
    labels: Mapping[str, str]
    score: float
    onset_s: float | None
    evidence: Evidence
    lead_s: float | None
    entity: str | None = None
    components: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "components", MappingProxyType(dict(self.components)))

    def to_dict(self) -> dict[str, object]:
        return {
            "series": self.series,
            "metric": self.metric,
            "labels": dict(self.labels),
            "score": self.score,
            "onset": self.onset_s,  # unix seconds
            "lead_s": self.lead_s,
            "entity": self.entity,
            "components": dict(self.components),
            "evidence": self.evidence.to_dict(),
        }


def _strength(ev: Evidence) -> float:
    if ev.kind == "change_event" and ev.magnitude == CHANGE_EVENT_MAGNITUDE:
        return 1.0 if ev.event == "appeared" else 0.8
    return 1.0 - math.exp(-max(ev.magnitude - 3.0, 0.0) / 4.0)


def _novelty(ev: Evidence, dev: Deviation | None) -> float:
    """1 for a change well beyond anything the baseline did, falling to 0 for one no
    larger than the baseline's own excursions (a batch job that bursts every hour)."""
    if dev is None or ev.kind != "metric":
        return 1.0
    usual = max(dev.baseline_peak, _NOVELTY_FLOOR)
    return float(min(max((ev.magnitude / usual - 1.0) / _NOVELTY_SPAN, 0.0), 1.0))


def _creep(ev: Evidence, dev: Deviation | None) -> float:
    """Seconds from the onset until the change first reached the detection threshold:
    about 0 for a step, minutes for a slow leak (which takes that long to hurt)."""
    if dev is None or ev.onset_s is None or dev.z.size == 0:
        return 0.0
    hits = np.flatnonzero((dev.timestamps_s >= ev.onset_s) & (dev.z >= CHANGE_THRESHOLD))
    return float(dev.timestamps_s[hits[0]]) - ev.onset_s if hits.size else 0.0


def _timing(lead_s: float, step_s: float, creep_s: float = 0.0, credibility: float = 1.0) -> float:
    """The timing term ``T``; a lead counts ``credibility`` (in ``[0, 1]``) of its worth."""
    u = lead_s / step_s
    if abs(u) <= 0.5:
        return 0.0
    if u > 0:
        fade = math.exp(-max(0.0, lead_s - creep_s - LONG_LEAD_S) / _LEAD_FADE_S)
        return (1.0 - math.exp(-u / _LEAD_RISE_STEPS)) * fade * credibility
    return -1.5 * (1.0 - math.exp(u / 1.5))


def _persistence(ev: Evidence) -> float:
    if ev.kind == "change_event":
        return 1.0
    return min(max(ev.sustained / max(4.0, 0.5 * ev.magnitude), 0.0), 1.0)


def _check(at_s: float, window_s: float, baseline_s: float) -> None:
    if not math.isfinite(at_s):
        raise InvalidTarget(f"at_s must be a finite time, got {at_s}")
    for name, value in (("window_s", window_s), ("baseline_s", baseline_s)):
        if not (math.isfinite(value) and value > 0):
            raise InvalidTarget(f"{name} must be a positive number of seconds, got {value}")


def _step(symptom: Series, candidates: Sequence[Series], step_s: float | None) -> float:
    if step_s is not None:
        if not (math.isfinite(step_s) and step_s > 0):
            raise InvalidTarget(f"step_s must be a positive number of seconds, got {step_s}")
        return step_s
    found = infer_step(symptom.timestamps_s)
    if found is None:
        steps = [s for c in candidates[:50] if (s := infer_step(c.timestamps_s)) is not None]
        found = float(np.median(steps)) if steps else None
    return found if found is not None else 60.0


def _identity_pairs(
    series: Sequence[Series], identifying_labels: Sequence[str]
) -> list[frozenset[tuple[str, str]]]:
    names = tuple(dict.fromkeys((*identifying_labels, *NODE_LABELS)))
    pairs = [frozenset((n, s.labels[n]) for n in names if s.labels.get(n)) for s in series]
    if len(series) >= 4:
        counts = Counter(p for ps in pairs for p in ps)
        common = {p for p, n in counts.items() if n > _SHARED_FRACTION * len(series)}
        pairs = [ps - common for ps in pairs]
    return pairs


def _map_term(
    dependencies: DependencyMap,
    *,
    entity: str | None,
    symptom_entity: str | None,
    later_entities: set[str],
    lead_s: float,
    step_s: float,
    downstream: dict[str, frozenset[str]],
) -> float:
    if entity not in dependencies or symptom_entity not in dependencies:
        return 0.0  # the map does not know it (an entity named by labels only)
    assert entity is not None
    assert symptom_entity is not None
    down = downstream.setdefault(entity, dependencies.downstream(entity))
    if entity == symptom_entity:
        relation = 0.25
    elif symptom_entity in down:
        relation = 0.5
    elif entity in downstream.setdefault(symptom_entity, dependencies.downstream(symptom_entity)):
        relation = 0.25 if lead_s > 0.5 * step_s else -0.5
    elif dependencies.dependents(entity) & dependencies.dependents(symptom_entity):
        relation = 0.0  # siblings: a cache failure loads the database next to it
    else:
        relation = -1.5
    others = later_entities - {entity}
    explains = len(others & down) / len(others) if others else 0.0
    return relation + 0.5 * explains


# Machine resources by the words of metric names (``node_load1`` is CPU run-queue).
_RESOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cpu", ("cpu", "load1", "load5", "load15")),
    ("memory", ("memory", "mem_")),
    ("disk", ("disk", "filesystem")),
    ("network", ("network",)),
)


def machine_resource(metric: str) -> str | None:
    """The machine resource a metric measures, by its name (``None``: not one)."""
    name = metric.lower()
    return next((r for r, words in _RESOURCES if any(w in name for w in words)), None)


def _contained(
    i: int,
    *,
    pool: Sequence[Series],
    evs: Sequence[Evidence],
    entities: Sequence[str | None],
    delta: FloatArray,
    step: float,
    dependencies: DependencyMap,
) -> npt.NDArray[np.bool_]:
    """For a node's series ``i``: the changes (within a step of it) of the same resource,
    same direction, by what runs on the node (per the map), which its own change sums up.
    ``delta`` has one entry more than ``pool`` (the symptom)."""
    out = np.zeros(delta.shape, dtype=bool)
    node = entities[i]
    labels = pool[i].labels
    resource = machine_resource(pool[i].metric)
    if resource is None or node is None or not any(labels.get(n) for n in NODE_LABELS):
        return out
    tenants = dependencies.dependents(node)
    for j, ev in enumerate(evs):
        if (
            j != i
            and entities[j] in tenants
            and ev.changed
            and abs(float(delta[j])) <= step
            and ev.direction == evs[i].direction
            and machine_resource(pool[j].metric) == resource
        ):
            out[j] = True
    return out


def is_latency(metric: str) -> bool:
    """Whether a metric measures how long something took, by its name."""
    name = metric.lower()
    return any(w in name for w in _LATENCY_WORDS)


def _needed_alongside(
    i: int,
    *,
    pool: Sequence[Series],
    entities: Sequence[str | None],
    delta: FloatArray,
    half: float,
    changed: npt.NDArray[np.bool_],
    dependencies: DependencyMap,
) -> npt.NDArray[np.bool_]:
    """The changes, in the same step as series ``i``'s, of services its entity needs
    (per the map, transitively): a slow dependency slows its callers within a step, so
    when both move at once the dependency's change explains the caller's. Nodes are
    left to ``_contained`` (a node sums its tenants)."""
    out = np.zeros(delta.shape, dtype=bool)
    entity = entities[i]
    if entity is None or entity not in dependencies or not is_latency(pool[i].metric):
        return out
    needed = dependencies.upstream(entity)
    for j in np.flatnonzero(changed[: len(pool)] & (np.abs(delta[: len(pool)]) <= half)):
        k = int(j)
        if k != i and entities[k] in needed and not any(pool[k].labels.get(n) for n in NODE_LABELS):
            out[k] = True
    return out


def _log_ratio(ev: Evidence) -> float:
    """``log(incident / baseline)`` of a positive measurement (NaN otherwise)."""
    if ev.kind != "metric" or not (ev.baseline > 0 and ev.incident_value > 0):
        return math.nan
    return math.log(ev.incident_value / ev.baseline)


def _diluted(
    i: int,
    *,
    pool: Sequence[Series],
    evs: Sequence[Evidence],
    ratios: FloatArray,
    delta: FloatArray,
    half: float,
    changed: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """Without a map, for latency series ``i``: the latency changes in the same sample
    and direction that grew by a clearly larger factor (``ratios``: log of incident
    over baseline). A caller's latency is its own time plus what it waits for, so a
    slowdown's relative size shrinks hop by hop (diluted by the caller's own work
    and its unaffected calls): of latencies that moved together, the one that grew
    most is nearest the source and explains the others."""
    out = np.zeros(delta.shape, dtype=bool)
    if not is_latency(pool[i].metric) or not math.isfinite(float(ratios[i])):
        return out
    n = len(pool)
    for j in np.flatnonzero(changed[:n] & (np.abs(delta[:n]) <= half)):
        k = int(j)
        if (
            k != i
            and is_latency(pool[k].metric)
            and evs[k].direction == evs[i].direction
            and abs(float(ratios[k])) > abs(float(ratios[i])) + _DILUTION_MARGIN
        ):
            out[k] = True
    return out


def _saturated_alongside(
    i: int,
    *,
    pool: Sequence[Series],
    evs: Sequence[Evidence],
    delta: FloatArray,
    half: float,
) -> npt.NDArray[np.bool_]:
    """Without a map, for latency series ``i``: the machine resources (CPU, memory,
    disk, network, by metric name; not themselves latencies) whose use rose in the same
    sample. A latency is what a saturated resource makes of the work queued on it
    (``1 / (1 - utilisation)``), so when both move at once the resource came first; a
    slower answer does not fill a disk within a scrape."""
    out = np.zeros(delta.shape, dtype=bool)
    if not is_latency(pool[i].metric):
        return out
    for k, ev in enumerate(evs):
        if (
            k != i
            and ev.changed
            and ev.direction == "up"
            and abs(float(delta[k])) <= half
            and machine_resource(pool[k].metric) is not None
            and not is_latency(pool[k].metric)
        ):
            out[k] = True
    return out


def _summed_alongside(
    i: int,
    *,
    pool: Sequence[Series],
    evs: Sequence[Evidence],
    delta: FloatArray,
    step: float,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Without a map, a node's usage and its tenants' (``_contained`` without the map):
    ``(explains, summed)``, changes within a step of series ``i``'s, in the same
    direction, of the same resource (CPU, memory, disk, network by metric name). For a
    node's series (one with a node label), ``explains`` holds those of series without a
    node label (a process, a service); for such a series, ``summed`` holds those of
    nodes. A node's usage is the sum of what runs on it: a runaway process moves its
    node, a busy node does not make a process use more. With no map to say which
    tenants are the node's own, any tenant's change explains the node's, and a node's
    change never comes before a tenant's (a process's usage is often a counter's rate,
    which shows the change a sample after the node's gauge)."""
    explains = np.zeros(delta.shape, dtype=bool)
    summed = np.zeros(delta.shape, dtype=bool)
    resource = machine_resource(pool[i].metric)
    if resource is None:
        return explains, summed
    is_node = any(pool[i].labels.get(n) for n in NODE_LABELS)
    for j, ev in enumerate(evs):
        if (
            j != i
            and ev.changed
            and abs(float(delta[j])) <= step
            and ev.direction == evs[i].direction
            and machine_resource(pool[j].metric) == resource
            and any(pool[j].labels.get(n) for n in NODE_LABELS) != is_node
        ):
            (explains if is_node else summed)[j] = True
    return explains, summed


def _sole_tenant(
    node: int,
    tenant: int,
    *,
    pool: Sequence[Series],
    evs: Sequence[Evidence],
    onsets: FloatArray,
    step: float,
) -> bool:
    """Whether ``tenant``'s change is the only one (of series without a node label) that
    ``node``'s change of the same resource sums (``_summed_alongside``): then the node's
    change is the tenant's, seen in the sum. Where several tenants moved (a surge of
    load raises every service's CPU), which of them the node shows is unknown."""
    explains, _ = _summed_alongside(
        node, pool=pool, evs=evs, delta=onsets - onsets[node], step=step
    )
    return bool(explains[tenant]) and int(np.sum(explains)) == 1


def is_marker(series: Series) -> bool:
    """A series whose presence is the news: a version (``*_info``) or an annotated
    change (``*_event``), not a measurement."""
    return series.metric.endswith(MARKER_SUFFIXES)


def _judge_by_peers(
    pool: Sequence[Series], analysed: list[tuple[Evidence, Deviation | None]]
) -> list[tuple[Evidence, Deviation | None]]:
    """A measurement that appeared (or vanished) is no deploy: its level is compared
    with its peers' (the same metric's other series: median level and robust scale).
    One level with the peers (a new pod like the others) is no change; one far from
    them keeps its change event with that robust z as its magnitude."""
    levels: dict[str, list[tuple[float, float]]] = {}
    for series, (ev, _) in zip(pool, analysed, strict=True):
        if ev.kind == "metric" and math.isfinite(ev.baseline) and math.isfinite(ev.baseline_scale):
            levels.setdefault(series.metric, []).append((ev.baseline, ev.baseline_scale))
    out = list(analysed)
    for i, (series, (ev, _)) in enumerate(zip(pool, analysed, strict=True)):
        if ev.kind != "change_event" or is_marker(series):
            continue
        peers = levels.get(series.metric, [])
        value = ev.incident_value if ev.event == "appeared" else ev.baseline
        z = 0.0
        if peers and math.isfinite(value):
            level = float(np.median([p[0] for p in peers]))
            scale = float(np.median([p[1] for p in peers]))
            z = abs(value - level) / scale if scale > 0 else 0.0
        if z < CHANGE_THRESHOLD:
            out[i] = (dataclasses.replace(ev, changed=False, magnitude=z, onset_s=None), None)
        else:
            out[i] = (dataclasses.replace(ev, magnitude=z, sustained=z), None)
    return out


def _may_explain(
    dependencies: DependencyMap | None,
    earlier: str | None,
    entity: str | None,
    related: dict[str, frozenset[str]],
) -> bool:
    """Whether a change of ``earlier`` may have caused one of ``entity`` (per the map)."""
    if dependencies is None or earlier not in dependencies or entity not in dependencies:
        return True
    assert earlier is not None
    assert entity is not None
    if earlier == entity:
        return True
    if entity not in related:
        related[entity] = dependencies.upstream(entity) | dependencies.downstream(entity)
    if earlier in related[entity]:  # either direction: load flows from callers too
        return True
    return bool(dependencies.dependents(entity) & dependencies.dependents(earlier))


def rank_causes(  # noqa: PLR0915 - one pass, the score's parts side by side
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
    """Entities most likely to have caused ``symptom``'s change around ``at_s`` first,
    each by its best series.

    Every series covers ``[at_s - window_s - baseline_s, at_s]``; convert counters
    first (``counters.to_rates``). Without ``window_s`` (and ``baseline_s``) the
    window follows the symptom (``window.symptom_window``). The symptom (by series
    name) is left out; unchanged candidates come last with score 0. See the module
    docstring.
    """
    step = _step(symptom, candidates, step_s)
    if window_s is None or baseline_s is None:
        auto_window, auto_baseline = symptom_window(symptom, at_s=at_s, step_s=step)
        window_s = auto_window if window_s is None else window_s
        baseline_s = auto_baseline if baseline_s is None else baseline_s
    _check(at_s, window_s, baseline_s)
    kw = {"at_s": at_s, "window_s": window_s, "baseline_s": baseline_s, "step_s": step}
    sym_ev, sym_dev = deviation(symptom, **kw)
    ref = sym_ev.onset_s if sym_ev.onset_s is not None else at_s
    sym_name = symptom.name
    pool = [c for c in candidates if c.name != sym_name]
    analysed = _judge_by_peers(pool, [deviation(c, **kw) for c in pool])
    evs = [a[0] for a in analysed]
    n = len(pool)
    changed = np.array([ev.changed for ev in evs] + [True], dtype=bool)
    onsets = np.array(
        [ev.onset_s if ev.changed and ev.onset_s is not None else np.nan for ev in evs] + [ref]
    )
    pairs = _identity_pairs([*pool, symptom], identifying_labels)
    max_lag = max(1, round(TRACK_LAG_S / step))
    tracks = np.array(
        [
            _tracking(dev, sym_dev, max_lag, ref - CASCADE_GAP_S) if ev.changed else 0.0
            for ev, dev in analysed
        ]
        + [1.0]
    )
    settings = [dev is not None and dev.setting for _, dev in analysed]
    _event_tracking(tracks, evs, pairs, onsets, 0.5 * step, settings=settings)
    # What a change counts for (its own strength, and in others' cascade,
    # precedence and shared entities) is scaled by r^2: the share of the
    # symptom's deviation it explains.
    strength = np.array(
        [_strength(ev) * _novelty(ev, dev) for ev, dev in analysed] + [max(_strength(sym_ev), 0.5)]
    )
    strength = strength * np.clip(tracks, 0.0, 1.0) ** 2
    entities = [entity_of(s.labels, dependencies, identifying_labels) for s in [*pool, symptom]]
    sym_entity = entities[n]
    downstream: dict[str, frozenset[str]] = {}
    related: dict[str, frozenset[str]] = {}
    half = 0.5 * step
    roles = load_roles(
        [s.labels for s in pool],
        evs,
        entities[:n],
        symptom_entity=sym_entity,
        symptom_onset_s=ref,
        step_s=step,
        dependencies=dependencies,
        symptom_is_rate=is_counter(symptom),
    )
    loads = roles.origin
    ratios = np.array([_log_ratio(ev) for ev in evs])
    is_load = np.array([v > 0 for v in loads] + [False])

    causes: list[tuple[bool, float, float, Cause]] = []
    for i, (series, ev) in enumerate(zip(pool, evs, strict=True)):
        s = float(strength[i])
        if not ev.changed or ev.onset_s is None:
            cause = _cause(
                series, ev, score=0.0, lead_s=None, entity=entities[i], components={"strength": s}
            )
            causes.append((False, ev.magnitude, 0.0, cause))
            continue
        onset = ev.onset_s
        lead = ref - onset
        delta = onsets - onset
        after = changed & np.isfinite(delta) & (delta >= -half)
        after[i] = False
        near = after & (delta <= CASCADE_GAP_S)
        weights = np.where(np.abs(delta) <= half, 0.5, 1.0) * strength
        cascade = 1.0 - math.exp(-float(np.sum(weights[near])) / 2.0)
        before = changed & np.isfinite(delta) & (delta < -half) & (delta >= -CASCADE_GAP_S)
        before[i] = False
        timing_lead = lead
        if dependencies is not None:
            # A node's usage is the sum of what runs on it: a simultaneous change of the
            # same resource by something running there explains it.
            before |= _contained(
                i,
                pool=pool,
                evs=evs,
                entities=entities,
                delta=delta,
                step=step,
                dependencies=dependencies,
            )
            before |= _needed_alongside(
                i,
                pool=pool,
                entities=entities,
                delta=delta,
                half=half,
                changed=changed,
                dependencies=dependencies,
            )
        elif step <= _SAME_MOMENT_MAX_STEP_S:
            # Without a map, of latencies that moved in the same sample the one that
            # grew by the largest factor is nearest the source, and a machine resource
            # that filled up in that sample comes before them all.
            before |= _diluted(
                i, pool=pool, evs=evs, ratios=ratios, delta=delta, half=half, changed=changed
            )
            before |= _saturated_alongside(i, pool=pool, evs=evs, delta=delta, half=half)
            # A node's usage sums its tenants': a process's change explains its node's.
            explains, summed = _summed_alongside(i, pool=pool, evs=evs, delta=delta, step=step)
            before = (before | explains) & ~summed
            # A host whose change sums this tenant's alone shows that same change, its
            # gauge often a sample before the tenant's rate: the tenant's lead is the host's.
            timing_lead = max(
                [lead]
                + [
                    ref - float(onsets[j])
                    for j in np.flatnonzero(summed & (delta < 0))
                    if _sole_tenant(int(j), i, pool=pool, evs=evs, onsets=onsets, step=step)
                ]
            )
        if loads[i] > 0:
            # Only more load explains load; a surge acts within a step.
            before &= is_load
            lead_for_timing = max(timing_lead, step)
        else:
            lead_for_timing = timing_lead
        n_before = sum(
            float(strength[j])
            for j in np.flatnonzero(before)
            if _may_explain(dependencies, entities[int(j)], entities[i], related)
        )
        shared_n = sum(
            float(strength[j]) for j in np.flatnonzero(after) if pairs[i] & pairs[int(j)]
        )
        shared = 1.0 - math.exp(-shared_n / 3.0)
        parts = {
            "strength": s,
            # Without a map, timing is the only order there is, and a lead is only as
            # sure as the change that sets its onset: a weak mover's onset one coarse
            # step early is no better known than a jump's in the step. With a map the
            # map orders causes (and the fusion reads this ranking's first strength as
            # its confidence, which the discount inflates: PetShop AC@3 .95 -> .80).
            "timing": _timing(
                lead_for_timing,
                step,
                _creep(ev, analysed[i][1]),
                credibility=(
                    _strength(ev) * _novelty(ev, analysed[i][1]) if dependencies is None else 1.0
                ),
            ),
            "cascade": cascade,
            "precedence": math.exp(-n_before / 1.5),
            "persistence": _persistence(ev),
            "shared_entities": shared,
            "change_event": 0.0,
            "dependency": 0.0,
            "tracking": float(tracks[i]),
            "load": (loads[i] - float(roles.effect[i])) * float(np.clip(tracks[i], 0.0, 1.0)),
        }
        if dependencies is not None:
            later = {e for j in np.flatnonzero(after) if (e := entities[int(j)]) is not None}
            parts["dependency"] = _map_term(
                dependencies,
                entity=entities[i],
                symptom_entity=sym_entity,
                later_entities=later,
                lead_s=lead,
                step_s=step,
                downstream=downstream,
            )
        marker = ev.kind == "change_event" and is_marker(series)
        if (marker or settings[i]) and lead >= -half:
            # A deploy or restart (or a setting that moved: a new generation) counts when
            # its own entity changed after it (no map) or when the map relates it to the
            # symptom.
            support = shared if dependencies is None else float(parts["dependency"] >= 0.0)
            parts["change_event"] = (0.6 if ev.event == "disappeared" else 1.0) * support
        raw = (
            parts["strength"]
            + 2.0 * parts["timing"]
            + parts["cascade"]
            + parts["precedence"]
            + 0.5 * parts["persistence"]
            + 0.3 * parts["shared_entities"]
            + parts["dependency"]
            + parts["change_event"]
            + 2.0 * parts["tracking"]
            + parts["load"]
        )
        parts["raw"] = raw
        score = 1.0 / (1.0 + math.exp(-(raw - _RAW_MIDPOINT)))
        causes.append(
            (
                True,
                raw,
                score,
                _cause(series, ev, score=score, lead_s=lead, entity=entities[i], components=parts),
            )
        )

    def seen_again(c: Cause) -> bool:
        # Without a map, the symptom's own metric on its own entity (another pod,
        # quantile or statistic) is the symptom seen again, not a cause of it.
        return (
            dependencies is None
            and sym_entity is not None
            and c.entity == sym_entity
            and c.metric == symptom.metric
        )

    causes.sort(key=lambda c: (not c[0], seen_again(c[3]), -c[1], c[3].series))
    # One cause per entity; a change event (a deploy) is evidence of its own.
    ranked = best_per_entity(
        [c[3] for c in causes],
        lambda c: c.evidence.kind == "change_event" and c.metric.endswith(MARKER_SUFFIXES),
    )
    return ranked if limit is None else ranked[: max(limit, 0)]


def _squash(z: FloatArray) -> FloatArray:
    """``sign(z) log(1 + |z|)``: keeps the shape, tames a 1000 sigma error burst."""
    out: FloatArray = np.sign(z) * np.log1p(np.abs(z))
    return out


def _event_tracking(
    tracks: FloatArray,
    evs: Sequence[Evidence],
    pairs: Sequence[frozenset[tuple[str, str]]],
    onsets: FloatArray,
    half: float,
    *,
    settings: Sequence[bool] = (),
) -> None:
    """A change event (a deploy, a restart) has no curve of its own: it tracks the
    symptom as well as the best of its own entity's metrics (sharing an identifying
    label value) that changed with or after it (within ``half`` a step). So does a
    setting that moved (``settings[i]``: a deployment's generation): its step says
    when, not how much. ``tracks`` and ``onsets`` have one more entry than ``evs``:
    the symptom."""
    n = len(evs)
    for i, ev in enumerate(evs):
        setting = bool(settings[i]) if settings else False
        if (ev.kind != "change_event" and not setting) or ev.onset_s is None:
            continue
        own = [
            float(tracks[j])
            for j in range(n + 1)
            if j != i
            and (j == n or evs[j].kind == "metric")
            and bool(pairs[i] & pairs[j])
            and onsets[j] >= ev.onset_s - half
        ]
        tracks[i] = max(own, default=0.0)


def _tracking(cand: Deviation | None, sym: Deviation | None, max_lag: int, start_s: float) -> float:
    """Best correlation of the candidate's deviation curve with the symptom's, the
    symptom shifted ``0..max_lag`` steps later, over the candidate's samples from
    ``start_s`` on (0 without curves).

    Where the shifted symptom runs past ``at_s`` it is held at its latest state
    (median of the last samples), so a burst of the candidate that is already
    over does not pass for the cause of a symptom that is still on.
    """
    if cand is None or sym is None or sym.z.size < 8 or cand.z.size < 2:
        return 0.0
    keep = sym.timestamps_s >= start_s
    if int(np.sum(keep)) < 8:
        keep[-8:] = True
    first = int(np.argmax(keep))
    c = _squash(np.interp(sym.timestamps_s[first:], cand.timestamps_s, cand.z))
    y = _squash(sym.z)
    n = c.size
    ext = np.concatenate((y[first:], np.full(max_lag, float(np.median(y[-5:])))))
    cc = c - c.mean()
    sc = float(np.sqrt(np.mean(cc * cc)))
    if sc <= 0:
        return 0.0
    best = -1.0
    for lag in range(max_lag + 1):
        b = ext[lag : lag + n]
        sb = float(np.std(b))
        if sb > 0:
            best = max(best, float(np.mean(cc * (b - b.mean()))) / (sc * sb))
    return best if best > -1.0 else 0.0


def _cause(
    series: Series,
    ev: Evidence,
    *,
    score: float,
    lead_s: float | None,
    entity: str | None,
    components: Mapping[str, float],
) -> Cause:
    return Cause(
        series=series.name,
        metric=series.metric,
        labels=series.labels,
        score=score,
        onset_s=ev.onset_s,
        evidence=ev,
        lead_s=lead_s,
        entity=entity,
        components=components,
    )


def naive_rank(
    symptom: Series,
    candidates: Sequence[Series],
    at_s: float,
    window_s: float = DEFAULT_WINDOW_S,
    baseline_s: float = DEFAULT_BASELINE_S,
) -> list[Cause]:
    """The benchmark baseline: largest relative jump first.

    ``score = max |x - median(baseline)| / |median(baseline)|`` over the incident
    window; a series without samples on either side scores 0.
    """
    _check(at_s, window_s, baseline_s)
    split, start = at_s - window_s, at_s - window_s - baseline_s
    sym_name = symptom.name
    sym_ev = compute_evidence(symptom, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
    ref = sym_ev.onset_s if sym_ev.onset_s is not None else at_s
    out: list[Cause] = []
    for c in candidates:
        if c.name == sym_name:
            continue
        t, x = c.timestamps_s, c.values
        ok = np.isfinite(x) & (t >= start) & (t <= at_s)
        base, inc = x[ok & (t < split)], x[ok & (t >= split)]
        jump = 0.0
        if base.size and inc.size:
            med = float(np.median(base))
            jump = float(np.max(np.abs(inc - med))) / max(abs(med), 1e-9)
        ev = compute_evidence(c, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
        lead = ref - ev.onset_s if ev.onset_s is not None else None
        out.append(
            _cause(c, ev, score=jump, lead_s=lead, entity=None, components={"relative_jump": jump})
        )
    out.sort(key=lambda c: (-c.score, c.series))
    return out
