"""What the RCA benchmark needs from any incident source: cases, series, a dependency map.

A source (the project's simulator, :mod:`benchmarks.estate2`, :mod:`benchmarks.petshop`)
is turned into an :class:`RcaSource`: the series to backfill into one real Prometheus,
the incidents to rank (:class:`RcaCase`) and the dependency map in the mapping format
:func:`plugin_backend.rca.dependencies.load_dependency_map` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from testkit.promserver import SyntheticSeries

__all__ = ["RcaCase", "RcaSource"]


@dataclass(frozen=True)
class RcaCase:
    """One incident to rank.

    ``symptom_series`` is a :func:`plugin_backend.types.format_series_name` string
    of the raw series (a ``*_total`` counter is fetched as its rate). The ranking
    happens at ``noticed_s`` over ``[noticed_s - lookback_s, noticed_s]`` at
    ``step_s``. A ranked series is an entity-level hit when its ``service`` or
    ``node`` label is ``root_cause_entity``; ``root_cause_series`` (``None`` where
    the source names no single series) is the exact-series truth.
    """

    source: str
    fault: str
    name: str
    noticed_s: float
    symptom_series: str
    root_cause_entity: str
    root_cause_series: str | None
    step_s: float
    lookback_s: float


@dataclass
class RcaSource:
    """A named set of incidents over one shared timeline (one backfill holds them all)."""

    name: str
    faults: tuple[str, ...]
    cases: list[RcaCase]
    series: list[SyntheticSeries]
    dependencies: Mapping[str, Any]
    note: str = ""
