"""The orders the default ranker enforces with a map after fusing its rankers: a
saturated need explains its caller's latency."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from plugin_backend.rca import Cause, load_dependency_map
from plugin_backend.rca.ensemble import Change, ensemble_rank, saturated_needs_above_latency
from plugin_backend.rca.evidence import Evidence
from plugin_backend.types import Series

STEP = 30.0
AT = 1_700_000_000.0
T = np.asarray(AT - 3 * 3600.0 + STEP * np.arange(int(3 * 3600 / STEP) + 1), dtype=np.float64)
FAULT = AT - 600.0

# A web service calls a database; the database and a worker run on host-d.
DEPS = load_dependency_map(
    {
        "services": {
            "web": {"depends_on": ["db"], "runs_on": ["host-a"]},
            "db": {"runs_on": ["host-d"]},
            "worker": {"runs_on": ["host-d"]},
        },
        "nodes": ["host-a", "host-d"],
    }
)


def _cause(entity: str, metric: str, onset: float) -> Cause:
    ev = Evidence(1.0, 0.1, 2.0, 2.0, 10.0, "up", onset, True, "metric")
    labels = {"service": entity}
    return Cause(f"{metric}{{{entity}}}", metric, labels, 0.9, onset, ev, 60.0, entity, {})


def _changes(table: dict[str, Sequence[Change]]) -> Callable[[str], Sequence[Change]]:
    return lambda entity: table.get(entity, ())


def test_a_host_whose_disk_filled_with_its_tenants_query_latency_goes_above_it() -> None:
    ranked = [
        _cause("db", "db_query_latency_seconds", FAULT),
        _cause("host-d", "node_disk_io_time_seconds", FAULT),
    ]
    changes = _changes({"host-d": [("disk", "up", FAULT + STEP)]})
    out = saturated_needs_above_latency(ranked, DEPS, changes, STEP)
    assert [c.entity for c in out] == ["host-d", "db"]
    assert out[0].score == ranked[0].score  # the host takes the latency's place and score


def test_a_rise_that_sums_a_users_earlier_one_or_comes_later_moves_nothing() -> None:
    ranked = [
        _cause("db", "db_query_latency_seconds", FAULT),
        _cause("host-d", "node_cpu_utilisation", FAULT),
    ]
    # The worker's CPU rose first: the host's CPU is the sum of its tenants' use.
    summed = _changes({"host-d": [("cpu", "up", FAULT)], "worker": [("cpu", "up", FAULT - 600)]})
    assert saturated_needs_above_latency(ranked, DEPS, summed, STEP) == ranked
    # Two steps after the latency: not what slowed it.
    later = _changes({"host-d": [("cpu", "up", FAULT + 2 * STEP)]})
    assert saturated_needs_above_latency(ranked, DEPS, later, STEP) == ranked
    # A host does not need its tenants: a tenant's rise never goes above the host's latency.
    up = [_cause("host-d", "node_latency_seconds", FAULT), _cause("db", "db_cpu", FAULT)]
    assert (
        saturated_needs_above_latency(up, DEPS, _changes({"db": [("cpu", "up", FAULT)]}), STEP)
        == up
    )


def _series(rng: np.random.Generator, name: str, labels: dict[str, str], level: float) -> Series:
    x = level * (1.0 + rng.normal(0.0, 0.03, T.size))
    return Series({"__name__": name, **labels}, T, x)


def _ramped(s: Series, at: float, factor: float, ramp_s: float) -> Series:
    x = s.values.copy()
    frac = np.clip((s.timestamps_s - at) / ramp_s, 0.0, 1.0)
    return Series(s.labels, s.timestamps_s, x * (1.0 + (factor - 1.0) * frac))


def _disk_backup(seed: int) -> tuple[Series, list[Series]]:
    """host-d's disk saturates (a backup) and the database's queries slow sharply (queued
    on the disk); the disk's busy time, a counter's rate, shows it a step later, with the
    web latency (the symptom). ``rank_causes`` puts the database first on timing."""
    rng = np.random.default_rng(seed)
    busy = _series(rng, "node_disk_io_time_seconds", {"node": "host-d"}, 0.2)
    disk = _ramped(busy, FAULT + STEP, 3.0, 60)
    db = _ramped(_series(rng, "db_query_latency_seconds", {"service": "db"}, 0.01), FAULT, 8.0, 30)
    web = _ramped(
        _series(rng, "http_latency_seconds", {"service": "web"}, 0.2), FAULT + STEP, 2.0, 30
    )
    quiet = [
        _series(rng, "node_cpu_utilisation", {"node": "host-a"}, 0.3),
        _series(rng, "node_cpu_utilisation", {"node": "host-d"}, 0.3),
        _series(rng, "process_cpu", {"service": "worker"}, 0.1),
    ]
    return web, [disk, db, web, *quiet]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_a_map_a_saturated_disk_ranks_above_the_queries_it_slowed(seed: int) -> None:
    symptom, candidates = _disk_backup(seed)
    ranked = ensemble_rank(symptom, candidates, at_s=AT, dependencies=DEPS)
    entities = [c.entity for c in ranked]
    assert entities.index("host-d") < entities.index("db")
    assert ranked[0].entity == "host-d"
