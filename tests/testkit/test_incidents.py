"""The incident simulator of testkit.incidents (no Prometheus needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plugin_backend.types import format_series_name
from testkit.incidents import (
    DAY_S,
    FAULTS,
    HISTORY_S,
    SLOT_S,
    STEP_S,
    SUITE_EPOCH_S,
    IncidentCase,
    dependency_map,
    merge_cases,
    scenario_suite,
    simulate,
)
from testkit.promserver import SyntheticSeries, write_openmetrics

START = SUITE_EPOCH_S + 10 * 3600 + 15 * 77  # a weekday morning, on the 15 s grid


@pytest.fixture(scope="module")
def cases() -> dict[str, IncidentCase]:
    return {fault: simulate(fault, 11, START) for fault in FAULTS}


def _signal(s: SyntheticSeries) -> tuple[np.ndarray, np.ndarray]:
    """Gauges as they are; counters as per-second rates."""
    if s.kind == "counter":
        return s.timestamps_s[1:], np.diff(s.values) / np.diff(s.timestamps_s)
    return s.timestamps_s, s.values


def _onset(s: SyntheticSeries, start_s: float, *, baseline_s: float = 1200) -> float:
    """First of 4 consecutive points beyond 6 robust sigmas (or 2 %) off the level in
    the ``baseline_s`` before ``start_s - 300``, searched from ``start_s - 300`` on.

    A series that only begins after the baseline (a new build_info version) starts
    moving at its first sample.
    """
    ts, values = _signal(s)
    base = (ts >= start_s - 300 - baseline_s) & (ts < start_s - 300)
    if not base.any():
        return float(ts[0])
    med = float(np.median(values[base]))
    p5, p95 = np.percentile(values[base], [5, 95])
    # MAD, or the 5-95 % spread where MAD is 0 (quantised counts)
    sigma = max(1.4826 * float(np.median(np.abs(values[base] - med))), (p95 - p5) / 3.29)
    out = np.abs(values - med) > max(6.0 * sigma, 0.02 * abs(med), 1e-9)
    run = np.convolve(out.astype(int), np.ones(4, dtype=int), mode="full")[: out.size]
    hits = np.flatnonzero((run == 4) & (ts >= start_s - 300 + 3 * STEP_S))
    return float(ts[hits[0] - 3]) if hits.size else float("inf")


def test_same_seed_same_case_and_other_seed_differs() -> None:
    a, b = simulate("cpu_hog", 5, START), simulate("cpu_hog", 5, START)
    assert [format_series_name(s.labels) for s in a.series] == [
        format_series_name(s.labels) for s in b.series
    ]
    for x, y in zip(a.series, b.series, strict=True):
        np.testing.assert_array_equal(x.timestamps_s, y.timestamps_s)
        np.testing.assert_array_equal(x.values, y.values)
    assert (a.noticed_s, a.root_cause_series, a.distractor_series) == (
        b.noticed_s,
        b.root_cause_series,
        b.distractor_series,
    )
    c = simulate("cpu_hog", 6, START)
    assert any(
        not np.array_equal(x.values, y.values) for x, y in zip(a.series, c.series, strict=False)
    )


def test_case_shape(cases: dict[str, IncidentCase]) -> None:
    services = dependency_map()["services"]
    nodes = {n for svc in services.values() for n in svc["runs_on"]}
    for fault, case in cases.items():
        assert case.fault == fault
        assert 150 <= len(case.series) <= 250
        assert case.start_s < case.symptom_onset_s < case.noticed_s
        assert 180 <= case.noticed_s - case.symptom_onset_s <= 300
        assert case.noticed_s - case.start_s < 3600  # the cause is in the hour before
        assert case.root_cause_entity in services or case.root_cause_entity in nodes
        assert case.find(case.root_cause_series) is not None
        assert case.find(case.symptom_series) is not None
        first = min(float(s.timestamps_s[0]) for s in case.series)
        last = max(float(s.timestamps_s[-1]) for s in case.series)
        assert first <= case.start_s - HISTORY_S + STEP_S
        assert last >= case.start_s + 1800
        assert all(np.all(np.isfinite(s.values)) for s in case.series)
        assert all(np.all(np.diff(s.timestamps_s) == STEP_S) for s in case.series)


@pytest.mark.parametrize("fault", FAULTS)
def test_root_cause_moves_before_the_symptom(cases: dict[str, IncidentCase], fault: str) -> None:
    case = cases[fault]
    cause = _onset(case.find(case.root_cause_series), case.start_s)
    symptom = _onset(case.find(case.symptom_series), case.start_s)
    assert case.start_s - 60 <= cause <= case.start_s + 300, (cause - case.start_s, fault)
    assert cause < symptom, (cause - case.start_s, symptom - case.start_s)
    assert symptom <= case.noticed_s


def test_distractors_exist_and_move(cases: dict[str, IncidentCase]) -> None:
    for case in cases.values():
        assert len(case.distractor_series) >= 4
        assert case.root_cause_series not in case.distractor_series
        moved = []
        for name in case.distractor_series:
            if "reporting" in name:
                continue  # always bursty: no onset to find
            s = case.find(name)
            # the hour before noticed_s, against the 2 h before that
            onset = _onset(s, case.noticed_s - 3300, baseline_s=3600)
            if case.noticed_s - 3600 <= onset <= case.noticed_s:
                moved.append(name)
        assert len(moved) >= 2, (case.fault, moved, case.distractor_series)
    # the reporting batch jobs: huge natural variance
    rep = cases["cpu_hog"].find(
        'process_cpu_usage_ratio{instance="reporting-0:8080", service="reporting"}'
    )
    assert np.ptp(rep.values) > 0.5


def test_counters_are_monotone_with_a_daily_pattern() -> None:
    # 24 h of history to see the whole day
    case = simulate("traffic_surge", 3, START + DAY_S, history_s=DAY_S)
    counters = [s for s in case.series if s.kind == "counter"]
    assert counters
    assert all(s.name.endswith("_total") for s in counters)
    for s in counters:
        assert np.all(np.diff(s.values) >= 0), format_series_name(s.labels)
    req = case.find('app_requests_total{instance="catalog-0:8080", service="catalog"}')
    ts, rate = _signal(req)
    hour = ((ts % DAY_S) // 3600).astype(int)
    by_hour = np.array([np.median(rate[hour == h]) for h in range(24)])
    assert by_hour.argmax() in range(12, 17)  # peak in the early afternoon (UTC)
    assert by_hour.max() > 2.0 * by_hour.min()


def test_suite_places_cases_in_distinct_slots_and_merges() -> None:
    suite = scenario_suite(1, 4, history_s=3600)
    assert [c.fault for c in suite] == list(FAULTS)
    spans = sorted(
        (min(s.timestamps_s[0] for s in c.series), max(s.timestamps_s[-1] for s in c.series))
        for c in suite
    )
    for k, (first, last) in enumerate(spans):
        assert SUITE_EPOCH_S + k * SLOT_S <= first < last < SUITE_EPOCH_S + (k + 1) * SLOT_S
    assert len({c.start_s % DAY_S for c in suite}) == len(suite)  # times of day vary
    merged = merge_cases(suite)
    assert len({format_series_name(s.labels) for s in merged}) == len(merged)
    assert len(merged) < 2 * len(suite[0].series)  # identities continue across cases
    for s in merged:
        assert np.all(np.diff(s.timestamps_s) > 0)
        if s.kind == "counter":
            assert np.all(np.diff(s.values) >= 0)


def test_one_case_writes_as_openmetrics(tmp_path: Path, cases: dict[str, IncidentCase]) -> None:
    case = cases["bad_deploy"]
    path = tmp_path / "case.om"
    write_openmetrics(case.series, path)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("# EOF\n")
    assert "# TYPE app_requests counter\n" in text
    assert "# TYPE app_request_latency_p99_seconds gauge\n" in text
    assert 'version="' in text
