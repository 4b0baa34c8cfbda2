"""Load is a cause: a rise in the request rate into the symptom's entity, or into what
calls it, drives the symptom (a traffic surge), it is not one more effect.

``is_request_rate`` tells a request-rate series by its name and labels: a metric named
for requests (``http_server_requests_total``, ``app_requests_total``,
``petshop_requests``) that is not a duration, a size or a count of requests waiting
(``inflight``, ``pending``), and none of whose labels marks failures (a 5xx or 4xx
code, ``error``, ``miss``, ``timeout``): errors and cache misses are effects.

``load_roles`` gives each candidate two roles.

``origin`` (``[0, 1]``)
    A rising request rate that may feed the symptom: its own entity's, or (with a
    map) one of an entity that needs the symptom's, transitively (a caller: load flows
    from callers to callees). Without a map, load is judged only where the symptom's
    entity counts its requests: it counts when that entity took more, and another
    entity's rise when it came before (a caller's surge leads its callees'). The
    origin is the rise no other feeding rise preceded (``exp(-n / 1.5)``, ``n`` the
    earlier ones): the entry point of a surge leads the tiers it calls. Onsets within
    one step count as simultaneous: a surge reaches every tier within a scrape
    interval, and onsets jitter by a step. A counter's rate (``*_total``) may start up
    to a step after a symptom that is no rate (a latency): the rate averages over its
    window and shows a rise a sample after a gauge that moved at once.
``effect``
    A rising request rate that is no origin, into an entity that has callers (with a
    map; without one, any, where load is judged): requests come from callers, by
    their own load (a surge passing through) or by a changed demand (a cache that
    stopped answering sends its misses to the database, retries). The cause lies
    with them: a cache failure's database load ranks below the cache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from plugin_backend.rca.counters import is_counter_name
from plugin_backend.rca.dependencies import DependencyMap
from plugin_backend.rca.evidence import Evidence

__all__ = ["LoadRoles", "is_request_rate", "load_roles"]

_REQUEST = re.compile(r"(^|_)requests?(_|$)")
_NOT_LOAD_WORDS = frozenset(
    {"duration", "latency", "seconds", "bytes", "size", "inflight", "pending", "queued"}
)
_FAILURE = re.compile(r"^[45]\d\d$|^[45]xx$|error|fail|miss|timeout|reject|denied", re.I)


def is_request_rate(labels: Mapping[str, str]) -> bool:
    """Whether the series counts requests served (see the module docstring)."""
    name = labels.get("__name__", "").lower()
    if not _REQUEST.search(name) or "error" in name or "fail" in name:
        return False
    if _NOT_LOAD_WORDS & set(name.split("_")) or "in_flight" in name:
        return False
    return not any(_FAILURE.search(v) for k, v in labels.items() if k != "__name__")


@dataclass(frozen=True, slots=True)
class LoadRoles:
    """Per candidate: ``origin`` in ``[0, 1]`` (how far it is where a load rise that feeds
    the symptom began) and ``effect`` (a rising request rate that is no origin: its
    callers sent it, by their own load or by a changed demand)."""

    origin: list[float]
    effect: list[bool]


def load_roles(
    labels: Sequence[Mapping[str, str]],
    evs: Sequence[Evidence],
    entities: Sequence[str | None],
    *,
    symptom_entity: str | None,
    symptom_onset_s: float,
    step_s: float,
    dependencies: DependencyMap | None,
    symptom_is_rate: bool = False,
) -> LoadRoles:
    """The load role of each candidate (see the module docstring)."""
    n = len(evs)
    rising = [
        i
        for i, (lab, ev) in enumerate(zip(labels, evs, strict=True))
        if ev.changed
        and ev.onset_s is not None
        and ev.direction == "up"
        and ev.kind == "metric"
        and is_request_rate(lab)
    ]
    onset = {i: float(evs[i].onset_s or 0.0) for i in rising}
    feeding: set[str] | None = None
    if dependencies is not None and symptom_entity in dependencies:
        assert symptom_entity is not None
        feeding = {symptom_entity, *dependencies.downstream(symptom_entity)}
    # A counter's rate averages over a window: it shows a rise a sample after a gauge
    # (a latency) that moved at once, so it may start up to a step after such a symptom.
    trail = 0.0 if symptom_is_rate else step_s
    fed = [
        i
        for i in rising
        if onset[i]
        <= symptom_onset_s + 0.5 * step_s + trail * is_counter_name(labels[i].get("__name__", ""))
    ]
    # Without a map, load is judged only where the symptom's entity counts its requests.
    observed = any(
        is_request_rate(lab) for lab, e in zip(labels, entities, strict=True) if e == symptom_entity
    )
    if dependencies is not None and feeding is not None:
        # The map says which entities can load the symptom's (itself and its callers).
        known = dependencies
        fed = [i for i in fed if entities[i] not in known or entities[i] in feeding]
    elif observed:
        # Load counts when the symptom's entity took more requests; another entity's rise
        # when it came first (a caller's surge leads its callees').
        own = [onset[i] for i in fed if entities[i] == symptom_entity]
        first_own = min(own, default=-math.inf)
        fed = [i for i in fed if entities[i] == symptom_entity or onset[i] < first_own - step_s]
    else:
        fed = []
    origin = [0.0] * n
    for i in fed:
        earlier = sum(1 for j in fed if j != i and onset[j] < onset[i] - step_s)
        origin[i] = math.exp(-earlier / 1.5)
    effect = [False] * n
    for i in rising:
        if origin[i] > 0:
            continue
        entity = entities[i]
        if feeding is None:
            effect[i] = observed  # no map: a rise that is no origin is an effect
        elif entity is not None and dependencies is not None and entity in dependencies:
            # Requests into an entity come from its callers: their load, or their
            # changed demand (a cache that stopped answering, retries).
            effect[i] = bool(dependencies.dependents(entity))
    return LoadRoles(origin=origin, effect=effect)
