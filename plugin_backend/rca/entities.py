"""Which entity (service, node, component) a series belongs to, and one cause per entity.

Operators fix entities, not series: a ranked list of series lets one component's
many metrics crowd out every other component. ``best_per_entity`` keeps each
entity's best-ranked cause, in rank order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from plugin_backend.rca.dependencies import NODE_LABELS, DependencyMap

__all__ = ["ENTITY_LABELS", "best_per_entity", "entity_of"]

# Most specific first: a service or component names what runs; a node what it runs on.
ENTITY_LABELS: tuple[str, ...] = (
    "service",
    "component",
    "app",
    "container",
    *NODE_LABELS,
    "pod",
    "instance",
)  # not ``job``: a scrape pool (every node exporter), no one thing to fix


class _Ranked(Protocol):
    @property
    def entity(self) -> str | None: ...
    @property
    def series(self) -> str: ...


_C = TypeVar("_C", bound=_Ranked)


def entity_of(
    labels: Mapping[str, str],
    dependencies: DependencyMap | None = None,
    identifying_labels: Sequence[str] | None = None,
) -> str | None:
    """The entity of a series: the dependency map's name when it knows one, else the
    first ``ENTITY_LABELS`` value (``None``: a series with no identifying label)."""
    if dependencies is not None:
        found = dependencies.entity_of(labels, identifying_labels)
        if found is not None:
            return found
    for name in ENTITY_LABELS:
        value = labels.get(name)
        if value:
            return value
    return None


def best_per_entity(ranked: Sequence[_C], keep: Callable[[_C], bool] | None = None) -> list[_C]:
    """``ranked`` (best first) with only the first cause of each entity; a cause
    without an entity, or one ``keep`` accepts (a deploy event), stands for itself."""
    seen: set[str] = set()
    out: list[_C] = []
    for cause in ranked:
        alone = cause.entity is None or (keep is not None and keep(cause))
        key = f"series:{cause.series}" if alone else f"entity:{cause.entity}"
        if key not in seen:
            seen.add(key)
            out.append(cause)
    return out
