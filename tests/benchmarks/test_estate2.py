"""The second incident generator: deterministic, and every case's truth is in its data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.estate2 import (
    EPOCH_S,
    FAULTS,
    SLOT_S,
    STEP_S,
    Estate2Case,
    build_source,
    dependency_map,
    simulate,
)
from plugin_backend.rca.dependencies import load_dependency_map
from plugin_backend.types import format_series_name

START = EPOCH_S + 6 * 3600


def _by_name(case: Estate2Case) -> dict[str, np.ndarray]:
    return {format_series_name(s.labels): s.values for s in case.series}


def _rate_or_level(case: Estate2Case, name: str) -> tuple[np.ndarray, np.ndarray]:
    (s,) = [s for s in case.series if format_series_name(s.labels) == name]
    if s.kind == "counter":
        return s.timestamps_s[1:], np.diff(s.values) / np.diff(s.timestamps_s)
    return s.timestamps_s, s.values


@pytest.fixture(scope="module")
def cases() -> dict[str, Estate2Case]:
    return {fault: simulate(fault, 5, START) for fault in FAULTS}


def test_same_seed_same_case_other_seed_other_case(cases: dict[str, Estate2Case]) -> None:
    again = simulate("cache_failure", 5, START)
    first = _by_name(cases["cache_failure"])
    assert first.keys() == _by_name(again).keys()
    assert all(np.array_equal(first[k], v) for k, v in _by_name(again).items())
    other = simulate("cache_failure", 6, START)
    assert any(
        k not in first or not np.array_equal(first[k], v) for k, v in _by_name(other).items()
    )


def test_every_case_has_its_symptom_root_series_and_entity(cases: dict[str, Estate2Case]) -> None:
    deps = load_dependency_map(dependency_map())
    for fault, case in cases.items():
        names = _by_name(case)
        assert case.symptom_series in names, fault
        assert case.root_cause_series in names, fault
        entities = {s.labels.get("service") or s.labels.get("node") for s in case.series}
        assert case.root_cause_entity in entities, fault
        # the truth is the symptom's entity or something it needs
        assert case.root_cause_entity in deps.upstream("gateway") | {"gateway"}, fault
        assert case.fault_start_s < case.noticed_s <= case.fault_start_s + 4500 + 600
        ts = case.series[0].timestamps_s
        assert ts[0] <= case.noticed_s - 3 * 3600
        assert ts[-1] >= case.noticed_s


def test_the_root_series_moves_after_the_fault_starts(cases: dict[str, Estate2Case]) -> None:
    for fault, case in cases.items():
        ts, v = _rate_or_level(case, case.root_cause_series)
        before = v[(ts < case.fault_start_s) & (ts > case.fault_start_s - 3600)]
        after = v[(ts > case.fault_start_s) & (ts <= case.noticed_s)]
        level, spread = np.median(before), np.median(np.abs(before - np.median(before)))
        assert np.max(np.abs(after - level)) > 5 * max(spread, 1e-9), fault


def test_a_memory_leak_ramps_for_a_long_time_before_it_is_noticed() -> None:
    leads = [simulate("memory_leak", seed, START) for seed in range(4)]
    assert all(c.noticed_s - c.fault_start_s >= 20 * 60 for c in leads)
    assert max(c.noticed_s - c.fault_start_s for c in leads) >= 35 * 60


def test_source_cases_get_their_own_slots_and_one_series_per_identity() -> None:
    source = build_source(1, 3)
    assert [c.fault for c in source.cases] == list(FAULTS)
    starts = [c.noticed_s for c in source.cases]
    assert all(b - a >= SLOT_S - 3600 for a, b in itertools.pairwise(starts))
    keys = [tuple(sorted(s.labels.items())) for s in source.series]
    assert len(keys) == len(set(keys))
    for s in source.series:
        assert np.all(np.diff(s.timestamps_s) >= STEP_S)
        if s.kind == "counter":
            assert np.all(np.diff(s.values) >= 0), s.labels
    load_dependency_map(source.dependencies)
