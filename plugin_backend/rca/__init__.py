"""Root-cause ranking: which entity (service, node, component) most likely caused a
symptom's change, each by its best series.

Pure numbers in, value objects out (no I/O, no LLM): the caller fetches every
candidate series over ``[at_s - window_s - baseline_s, at_s]`` (without a window:
a long history, ``window.symptom_window`` says how much is used), converts
counters with ``to_rates`` and calls ``ensemble_rank`` (the default) or any other
ranker of the same signature.

* ``ensemble``: the default: ``rank_causes`` fused with the graph walk when a
  dependency map is given, each weighted by how sure ``rank_causes`` is of its
  first cause; ``rank_causes`` alone without one.
* ``evidence``: per-series baseline, robust deviation, onset and change events.
* ``dependencies``: an optional service/node dependency map.
* ``ranking``: timing, cascade and tracking (``rank_causes``) and the naive baseline.
* ``load``: load is a cause (a rising request rate at its origin), or an effect of callers.
* ``window``: a window that follows the symptom's own change-point onset.
* ``counters``: counters to per-second rates.
* ``entities``: the entity (service, node, component) of a series; one cause each.
* ``changepoint``: Bayesian online change points and a symptom's onset.
* Established rankers beside the default, same signature (``methods.Ranker``):
  ``baro`` (BARO, FSE 2024), ``nsigma`` (N-Sigma), ``graph_walk`` (an
  anomaly-weighted random walk on the dependency map, MonitorRank/MicroRank).
"""

from __future__ import annotations

from plugin_backend.rca.counters import is_counter, rates_for_counters, to_rates
from plugin_backend.rca.dependencies import (
    DEFAULT_IDENTIFYING_LABELS,
    DependencyMap,
    load_dependency_map,
)
from plugin_backend.rca.ensemble import ensemble_rank
from plugin_backend.rca.evidence import (
    DEFAULT_BASELINE_S,
    DEFAULT_WINDOW_S,
    Evidence,
    compute_evidence,
)
from plugin_backend.rca.ranking import Cause, naive_rank, rank_causes

__all__ = [
    "DEFAULT_BASELINE_S",
    "DEFAULT_IDENTIFYING_LABELS",
    "DEFAULT_WINDOW_S",
    "Cause",
    "DependencyMap",
    "Evidence",
    "compute_evidence",
    "ensemble_rank",
    "is_counter",
    "load_dependency_map",
    "naive_rank",
    "rank_causes",
    "rates_for_counters",
    "to_rates",
]
