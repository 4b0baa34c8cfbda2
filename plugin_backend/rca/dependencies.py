"""A service dependency map, and which entity a series belongs to.

The map comes from a YAML-like mapping (the caller reads the file)::

    services:
      frontend: {depends_on: [checkout]}
      checkout:
        depends_on: [payments, postgres, redis]
        runs_on: [node-a, node-b]
        aliases: [checkout-api]        # other label values naming this entity
      postgres: {runs_on: [node-b]}
    nodes: [node-a, node-b]            # optional: nodes nothing runs on yet

Entities are services, nodes and anything named in ``depends_on``/``runs_on``.
Both ``depends_on`` and ``runs_on`` are "needs" edges: ``checkout`` needs
``postgres`` and ``node-a``.

Direction words follow the *impact*: a failure flows downstream.

* ``upstream(x)``: everything ``x`` needs, transitively: the places a cause of a
  problem in ``x`` can live.
* ``downstream(x)``: everything that needs ``x``, transitively: what a problem in
  ``x`` can hurt.
* ``distance(a, b)``: hops between ``a`` and ``b`` ignoring direction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugin_backend.errors import ConfigError

__all__ = [
    "DEFAULT_IDENTIFYING_LABELS",
    "NODE_LABELS",
    "DependencyMap",
    "entity_candidates",
    "load_dependency_map",
]

DEFAULT_IDENTIFYING_LABELS: tuple[str, ...] = (
    "service",
    "job",
    "instance",
    "node",
    "namespace",
    "pod",
)
NODE_LABELS: tuple[str, ...] = ("node", "host", "hostname", "nodename", "kubernetes_node")
_SERVICE_KEYS = frozenset({"depends_on", "runs_on", "aliases"})
_TOP_KEYS = frozenset({"services", "nodes"})


def entity_candidates(
    labels: Mapping[str, str], identifying_labels: Sequence[str] = DEFAULT_IDENTIFYING_LABELS
) -> list[str]:
    """Label values that may name the entity of a series, most specific label first.

    The identifying labels in order, then node/host labels; an ``instance`` of the
    form ``host:port`` also offers ``host``. Duplicates and empty values are dropped.
    """
    out: list[str] = []
    for name in (*identifying_labels, *NODE_LABELS):
        value = labels.get(name, "")
        if not value:
            continue
        out.append(value)
        if name == "instance" and ":" in value:
            out.append(value.rsplit(":", 1)[0])
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class DependencyMap:
    """Needs-edges between entities (see the module docstring)."""

    needs: Mapping[str, frozenset[str]]
    aliases: Mapping[str, str] = field(default_factory=dict)  # label value -> entity
    identifying_labels: tuple[str, ...] = DEFAULT_IDENTIFYING_LABELS
    _needed_by: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        needed_by: dict[str, set[str]] = {e: set() for e in self.needs}
        for entity, targets in self.needs.items():
            for target in targets:
                needed_by.setdefault(target, set()).add(entity)
        object.__setattr__(self, "_needed_by", {k: frozenset(v) for k, v in needed_by.items()})

    @property
    def entities(self) -> frozenset[str]:
        return frozenset(self.needs) | frozenset(self._needed_by)

    def __contains__(self, entity: object) -> bool:
        return isinstance(entity, str) and (entity in self.needs or entity in self._needed_by)

    def resolve(self, value: str) -> str | None:
        """The entity a label value names (itself or through an alias), if any."""
        if value in self:
            return value
        return self.aliases.get(value)

    def entity_of(
        self, labels: Mapping[str, str], identifying_labels: Sequence[str] | None = None
    ) -> str | None:
        """The first identifying label value that names an entity of the map."""
        names = self.identifying_labels if identifying_labels is None else identifying_labels
        for value in entity_candidates(labels, names):
            entity = self.resolve(value)
            if entity is not None:
                return entity
        return None

    def depends_on(self, entity: str) -> frozenset[str]:
        """What ``entity`` needs directly."""
        return self.needs.get(entity, frozenset())

    def dependents(self, entity: str) -> frozenset[str]:
        """What needs ``entity`` directly."""
        return self._needed_by.get(entity, frozenset())

    def upstream(self, entity: str) -> frozenset[str]:
        """Everything ``entity`` needs, transitively (``entity`` itself excluded)."""
        return _closure(entity, self.needs)

    def downstream(self, entity: str) -> frozenset[str]:
        """Everything that needs ``entity``, transitively (``entity`` itself excluded)."""
        return _closure(entity, self._needed_by)

    def distance(self, a: str, b: str) -> int | None:
        """Hops between ``a`` and ``b`` along edges in either direction (``None``: unlinked)."""
        if a == b:
            return 0 if a in self else None
        seen, queue = {a}, deque([(a, 0)])
        while queue:
            node, hops = queue.popleft()
            for nxt in self.depends_on(node) | self.dependents(node):
                if nxt == b:
                    return hops + 1
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, hops + 1))
        return None


def _closure(start: str, edges: Mapping[str, frozenset[str]]) -> frozenset[str]:
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        node = stack.pop()
        if node in seen or node == start:
            continue
        seen.add(node)
        stack.extend(edges.get(node, ()))
    return frozenset(seen)


def _names(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable) or isinstance(value, Mapping):
        raise ConfigError(f"dependency map: {path} must be a list of names")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"dependency map: {path}[{i}] must be a non-empty string")
        out.append(item.strip())
    return out


def _parse_service(
    name: object, spec: object, needs: dict[str, set[str]], aliases: dict[str, str]
) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"dependency map: services.{name!r} is not a valid service name")
    path = f"services.{name}"
    body: object = {} if spec is None else spec
    if not isinstance(body, Mapping):
        raise ConfigError(f"dependency map: {path} must be a mapping (depends_on, runs_on)")
    bad = sorted(str(k) for k in body if k not in _SERVICE_KEYS)
    if bad:
        raise ConfigError(
            f"dependency map: unknown key {path}.{bad[0]} (allowed: depends_on, runs_on, aliases)"
        )
    targets = needs.setdefault(name, set())
    for key in ("depends_on", "runs_on"):
        for i, target in enumerate(_names(body.get(key), f"{path}.{key}")):
            if target == name:
                raise ConfigError(f"dependency map: {path}.{key}[{i}] names {name} itself")
            targets.add(target)
            needs.setdefault(target, set())
    for i, alias in enumerate(_names(body.get("aliases"), f"{path}.aliases")):
        owner = aliases.get(alias)
        if owner is not None and owner != name:
            raise ConfigError(
                f"dependency map: {path}.aliases[{i}] {alias!r} already names {owner}"
            )
        aliases[alias] = name


def load_dependency_map(
    data: Mapping[str, Any],
    *,
    identifying_labels: Sequence[str] = DEFAULT_IDENTIFYING_LABELS,
) -> DependencyMap:
    """Validate ``data`` (see the module docstring) into a ``DependencyMap``.

    Raises ``ConfigError`` naming the key path of the first problem.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("dependency map: the top level must be a mapping")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"dependency map: unknown top-level key {unknown[0]!r} (allowed: services, nodes)"
        )
    services = data.get("services") or {}
    if not isinstance(services, Mapping):
        raise ConfigError("dependency map: services must be a mapping of service names")
    needs: dict[str, set[str]] = {}
    aliases: dict[str, str] = {}
    for name, spec in services.items():
        _parse_service(name, spec, needs, aliases)
    for node in _names(data.get("nodes"), "nodes"):
        needs.setdefault(node, set())
    clash = sorted(a for a in aliases if a in needs and a != aliases[a])
    if clash:
        raise ConfigError(f"dependency map: alias {clash[0]!r} is also an entity name")
    return DependencyMap(
        needs={k: frozenset(v) for k, v in needs.items()},
        aliases=aliases,
        identifying_labels=tuple(identifying_labels),
    )
