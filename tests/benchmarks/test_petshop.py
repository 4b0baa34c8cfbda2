"""The PetShop loader: parsing on small inline files, the cases on the real dataset."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmarks.petshop import (
    DAY_S,
    STEP_S,
    PetshopData,
    build_source,
    dataset_available,
    dependency_map,
    load_dataset,
    parse_graph_csv,
    parse_metrics_csv,
    parse_target,
)
from plugin_backend.rca.dependencies import load_dependency_map
from plugin_backend.types import format_series_name

METRICS = """\
microservice,PetSite,PetSite,PetSearch
metric,latency,requests,availability
statistic,p90,Sum,Average
unix_timestamp,,,
1681350000.0,0.08,,100.0
1681350300.0,0.12,1200,
"""


def test_metrics_csv_columns_timestamps_and_missing_cells() -> None:
    table = parse_metrics_csv(METRICS)
    assert table.columns == (
        ("PetSite", "latency", "p90"),
        ("PetSite", "requests", "Sum"),
        ("PetSearch", "availability", "Average"),
    )
    assert table.timestamps_s.tolist() == [1681350000.0, 1681350300.0]
    assert table.values[0, 0] == 0.08
    assert table.values[1, 1] == 1200.0
    assert math.isnan(table.values[0, 1])
    assert math.isnan(table.values[1, 2])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (METRICS.replace("statistic,", "stat,"), "header row 'statistic'"),
        (METRICS.replace("0.12", "slow"), "'slow' is not a number"),
        (METRICS.replace("1681350300.0", "1681350000.0"), "strictly ascending"),
        (METRICS.replace("Sum,Average", "p90,Average").replace("requests", "latency"), "duplicate"),
    ],
)
def test_metrics_csv_problems_are_named(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_metrics_csv(text)


def test_graph_row_calls_column_and_becomes_a_dependency_map() -> None:
    graph = parse_graph_csv(",A,B,C\nA,0.0,1.0,1.0\nB,0.0,0.0,1.0\nC,0.0,0.0,0.0\n")
    assert graph == {"A": ["B", "C"], "B": ["C"], "C": []}
    deps = load_dependency_map(dependency_map(graph))
    assert deps.upstream("A") == {"B", "C"}
    assert deps.downstream("C") == {"A", "B"}
    with pytest.raises(ValueError, match="same nodes"):
        parse_graph_csv(",A,B\nB,0,1\nA,0,0\n")


def test_target_json() -> None:
    target = parse_target(
        '{"target": {"node": "PetSite", "metric": "latency", "agg": "p90", "timestamp": 7},'
        ' "root_cause": {"node": "PetSearch", "metric": null}}'
    )
    assert (target.node, target.metric, target.statistic, target.timestamp_s) == (
        "PetSite",
        "latency",
        "p90",
        7.0,
    )
    assert target.root_cause_node == "PetSearch"
    with pytest.raises(ValueError, match="root_cause"):
        parse_target('{"target": {"node": "x", "metric": "y", "agg": "z", "timestamp": 1}}')


# ------------------------------------------------------------ the real training split


@pytest.fixture(scope="module")
def petshop() -> PetshopData:
    if not dataset_available():
        pytest.skip("petshop-train not found (../shared/datasets/petshop-train)")
    return load_dataset()


def test_every_training_issue_becomes_a_case_with_its_symptom_and_root(
    petshop: PetshopData,
) -> None:
    source = build_source(petshop)
    assert len(source.cases) == 20
    assert {c.fault for c in source.cases} == {"delay", "errors"}
    by_name = {format_series_name(s.labels): s for s in source.series}
    deps = load_dependency_map(source.dependencies)
    for case, issue in zip(source.cases, petshop.issues, strict=True):
        symptom = by_name[case.symptom_series]
        root = [s for s in source.series if s.labels["service"] == case.root_cause_entity]
        assert root, case.name
        # the root cause is something the symptom's component calls
        assert case.root_cause_entity in deps.upstream(symptom.labels["service"])
        # whole-day moves keep the time of day; the issue ends at the incident time
        last_row = float(issue.metrics.timestamps_s[-1])
        assert (case.noticed_s - last_row) % DAY_S == 0
        moved = case.noticed_s - last_row
        first_row = float(issue.metrics.timestamps_s[0]) + moved
        seen = symptom.timestamps_s[
            (symptom.timestamps_s >= first_row - 2 * DAY_S)
            & (symptom.timestamps_s <= case.noticed_s)
        ]
        history = seen[seen < first_row]
        # 25-49 h of normal operation right before the issue, on the 5-minute grid
        assert first_row - history[-1] == STEP_S
        assert 25 * 3600 <= first_row - history[0] <= 49 * 3600
        assert np.all(np.diff(seen) % STEP_S == 0)


def test_cases_do_not_overlap_on_the_shared_timeline(petshop: PetshopData) -> None:
    source = build_source(petshop)
    ends = sorted(c.noticed_s for c in source.cases)
    assert all(b - a >= 2 * DAY_S for a, b in itertools.pairwise(ends))
    for s in source.series:
        assert np.all(np.diff(s.timestamps_s) > 0)
        assert np.all(np.isfinite(s.values))


def test_ranking_at_the_target_timestamp_is_offered(petshop: PetshopData) -> None:
    at_end = build_source(petshop)
    at_target = build_source(petshop, at="target")
    for a, b in zip(at_end.cases, at_target.cases, strict=True):
        assert b.noticed_s < a.noticed_s
        assert (a.noticed_s - b.noticed_s) % STEP_S == 0
