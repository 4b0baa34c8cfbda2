"""The built-in demo estate: determinism, shape, incidents and the SeriesSource contract."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_backend.adapters.demo import (
    FAULTS,
    INCIDENT_DURATION_S,
    INCIDENT_PERIOD_S,
    PG_MAX_CONNECTIONS,
    DemoSource,
    incidents_between,
)
from plugin_backend.errors import InvalidQuery
from plugin_backend.ports import SeriesSource
from plugin_backend.types import Series, TimeRange

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC, a Thursday
RPS = "http_requests_per_second"


@pytest.fixture(scope="module")
def src() -> DemoSource:
    return DemoSource(seed=7)


def _by_name(series: list[Series]) -> dict[str, Series]:
    return {s.name: s for s in series}


def _at(series: Series, t: float) -> float:
    (idx,) = np.nonzero(series.timestamps_s == t)
    assert idx.size == 1, f"{series.name} has no point at {t}"
    return float(series.values[idx[0]])


# --- contract ----------------------------------------------------------------------------


def test_implements_the_series_source_protocol(src):
    assert isinstance(src, SeriesSource)
    assert src.kind == "demo"
    assert src.describe().startswith("built-in demo estate (seed 7): ")
    src.check_ready(0.1)


def test_every_series_has_name_job_and_identifying_labels(src):
    found = src.series(['{job="demo"}'], TimeRange(T0, T0 + 3600))
    assert len(found) > 40
    for labels in found:
        assert labels["__name__"]
        assert labels["job"] == "demo"
        assert len(labels) >= 3, labels


def test_range_timestamps_follow_the_step_grid_from_start(src):
    (series, *_) = src.query_range(RPS, TimeRange(T0 + 7, T0 + 7 + 3600), 60)
    assert series.timestamps_s[0] == T0 + 7
    assert np.all(np.diff(series.timestamps_s) == 60)
    assert series.timestamps_s[-1] == T0 + 7 + 3600
    assert len(series) == 61
    (partial, *_) = src.query_range(RPS, TimeRange(T0, T0 + 100), 30)
    assert list(partial.timestamps_s - T0) == [0, 30, 60, 90]


# --- determinism -------------------------------------------------------------------------


def test_overlapping_ranges_agree_point_for_point(src):
    # 03:00-06:00 and 04:00-08:00: no checkout deploy between (01:32 and 17:30, seed 7),
    # so both ranges hold the same series
    a = _by_name(src.query_range('{job="demo"}', TimeRange(T0 + 3 * 3600, T0 + 6 * 3600), 15))
    b = _by_name(src.query_range('{job="demo"}', TimeRange(T0 + 4 * 3600, T0 + 8 * 3600), 15))
    assert a.keys() == b.keys()
    assert len(a) > 40
    compared = 0
    for name, sa in a.items():
        sb = b[name]
        common, ia, ib = np.intersect1d(sa.timestamps_s, sb.timestamps_s, return_indices=True)
        np.testing.assert_array_equal(sa.values[ia], sb.values[ib], err_msg=name)
        compared += common.size
    assert compared == len(a) * (2 * 3600 // 15 + 1)  # every point of the shared 2 h


def test_same_timestamp_same_value_whatever_the_range_step_or_instance(src):
    t = T0 + 13 * 3600 + 45  # inside the 13:00 incident
    ranged = [
        src.query_range(RPS, TimeRange(t - 3600, t + 3600), 15),
        src.query_range(RPS, TimeRange(t - 10 * 60, t), 60),
        src.query_range(RPS, TimeRange(t - 45, t + 7 * 3600), 45),
        src.query_range(RPS, TimeRange(t, t), 1),
        DemoSource(seed=7).query_range(RPS, TimeRange(t - 300, t + 300), 100),
    ]
    instant = _by_name(src.query(RPS, t))
    for result in ranged:
        got = _by_name(result)
        assert got.keys() == instant.keys()
        for name, series in got.items():
            assert _at(series, t) == instant[name].values[0]


def test_values_hold_between_scrapes(src):
    (series, *_) = src.query_range(RPS, TimeRange(T0, T0 + 59), 1)
    assert len(np.unique(series.values)) == 4  # one sample per 15 s
    (coarse, *_) = DemoSource(seed=7, step_floor_s=60).query_range(RPS, TimeRange(T0, T0 + 59), 1)
    assert len(np.unique(coarse.values)) == 1


def test_seeds_give_different_noise():
    tr = TimeRange(T0, T0 + 3600)
    (a, *_) = DemoSource(seed=1).query_range(RPS, tr, 15)
    (b, *_) = DemoSource(seed=2).query_range(RPS, tr, 15)
    assert a.labels == b.labels
    assert not np.array_equal(a.values, b.values)


# --- shape -------------------------------------------------------------------------------


def test_daily_seasonality_peaks_in_the_afternoon(src):
    (series, *_) = src.query_range(
        f'{RPS}{{instance="frontend-0:8080"}}', TimeRange(T0, T0 + 7 * DAY), 300
    )
    hour = (series.timestamps_s % DAY) // 3600
    afternoon = series.values[(hour >= 12) & (hour < 18)].mean()
    night = series.values[hour < 6].mean()
    assert afternoon > 1.5 * night


def test_weekends_are_quieter(src):
    tr = TimeRange(T0 - DAY, T0 + 6 * DAY)  # Wed .. Tue
    (series, *_) = src.query_range(f'{RPS}{{instance="checkout-0:8080"}}', tr, 600)
    day = ((series.timestamps_s - T0) // DAY).astype(int)  # 0 = Thursday
    weekend = series.values[(day == 2) | (day == 3)].mean()  # Saturday, Sunday
    midweek = series.values[(day == -1) | (day == 0)].mean()  # Wednesday, Thursday
    assert weekend < 0.9 * midweek


def test_values_stay_in_their_domains(src):
    tr = TimeRange(T0, T0 + DAY)
    for series in src.query_range('{job="demo"}', tr, 60):
        assert np.all(np.isfinite(series.values)), series.name
        assert np.all(series.values >= 0), series.name
        if series.metric.endswith("_ratio"):
            assert np.all(series.values <= 1), series.name
    (pg, *_) = src.query_range("pg_connections_in_use", tr, 15)
    assert pg.values.max() == PG_MAX_CONNECTIONS  # the pool does run dry
    assert np.all(pg.values == np.round(pg.values))


def test_counter_rate_matches_the_gauge(src):
    tr = TimeRange(T0, T0 + 6 * 3600)
    rates = src.query_range('rate(http_requests_total{service="payments"}[5m])', tr, 60)
    assert len(rates) == 1
    assert "__name__" not in rates[0].labels
    (gauge, *_) = src.query_range(f'{RPS}{{service="payments"}}', tr, 60)
    assert abs(rates[0].values.mean() / gauge.values.mean() - 1) < 0.02
    (increase, *_) = src.query_range(
        'increase(http_requests_total{service="payments"}[1h])', tr, 60
    )
    assert increase.values[-1] == pytest.approx(3600 * rates[0].values[-1], rel=0.1)
    (counter, *_) = src.query_range('http_requests_total{service="payments"}', tr, 60)
    assert np.all(np.diff(counter.values) >= 0)


def test_rate_of_a_gauge_is_refused(src):
    with pytest.raises(InvalidQuery, match="http_requests_total"):
        src.query_range(f"rate({RPS}[5m])", TimeRange(T0, T0 + 60), 15)


# --- incidents ---------------------------------------------------------------------------


def test_one_incident_every_period_rotating_faults():
    found = incidents_between(T0, T0 + DAY - 1, seed=7)
    assert len(found) in (5, 6)
    assert np.all(np.diff([i.start_s for i in found]) == INCIDENT_PERIOD_S)
    assert DAY % INCIDENT_PERIOD_S  # it drifts through the day ...
    assert (7 * DAY) % INCIDENT_PERIOD_S  # ... and the week
    assert all(i.end_s - i.start_s == INCIDENT_DURATION_S for i in found)
    assert {i.fault for i in found[:4]} == set(FAULTS)
    assert all(i.root_cause_series and i.description and i.symptom_series for i in found)
    assert incidents_between(T0, T0 + DAY - 1, seed=7) == found  # pure


@pytest.mark.parametrize("minutes", range(0, 240, 17))
def test_an_incident_is_always_visible_in_the_last_six_hours(minutes):
    now = T0 + minutes * 60
    found = incidents_between(now - 6 * 3600, now, seed=3)
    assert any(now - 6 * 3600 <= i.start_s and i.end_s <= now for i in found)


def _coverage(period_s: float, periods: int, seed: int, fault: str | None) -> float:
    """The largest share of periods in which one minute of the period is inside an
    incident (of ``fault``, or of any fault)."""
    minutes = int(period_s // 60)
    hit = np.zeros((periods, minutes), dtype=bool)
    for i in incidents_between(T0, T0 + periods * period_s - 1, seed=seed):
        if fault is None or i.fault == fault:
            first, last = int((i.start_s - T0) // 60), int((i.end_s - T0) // 60)
            for m in range(first, min(last, periods * minutes)):
                hit[m // minutes, m % minutes] = True
    return float(hit.mean(axis=0).max())


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_faults_do_not_recur_at_a_fixed_time_of_day_or_week(seed):
    # A seasonal detector learns what recurs at one time of day as normal: in four weeks
    # no minute of the day is inside the same fault's incident on more than 10% of days
    # (it was 50%, and 100% for any fault, when incidents started at fixed hours).
    for fault in FAULTS:
        assert _coverage(DAY, 28, seed, fault) <= 0.1, fault
        assert _coverage(7 * DAY, 8, seed, fault) <= 0.25, fault
    assert _coverage(DAY, 28, seed, None) <= 0.2


def _onset(values: np.ndarray, baseline: int, threshold: float = 6.0) -> int:
    """First index after the baseline where |robust z| stays over the threshold twice."""
    base = values[:baseline]
    med = np.median(base)
    mad = 1.4826 * np.median(np.abs(base - med)) or 1e-9
    over = np.abs(values - med) / mad > threshold
    hits = np.nonzero(over[baseline:-1] & over[baseline + 1 :])[0]
    assert hits.size, "no onset found"
    return int(baseline + hits[0])


def _onsets(src: DemoSource, incident, names: list[str]) -> dict[str, int]:
    tr = TimeRange(incident.start_s - 1800, incident.start_s + 900)
    series = _by_name(src.query_range('{job="demo"}', tr, 15))
    return {name: _onset(series[name].values, baseline=120) for name in names}


def test_pool_exhaustion_root_cause_moves_before_its_symptoms(src):
    cases = [
        i for i in incidents_between(T0, T0 + 4 * DAY, seed=7) if i.fault == "pg_pool_exhaustion"
    ]
    assert len(cases) >= 5
    for incident in cases:
        root = incident.root_cause_series
        assert root == 'pg_connections_in_use{job="demo", service="postgres"}'
        latency = 'http_request_duration_seconds_p99{job="demo", service="checkout"}'
        errors = 'http_errors_ratio{job="demo", service="frontend"}'
        assert {latency, errors} <= set(incident.symptom_series)
        onset = _onsets(src, incident, [root, latency, errors])
        assert 120 <= onset[root] < onset[latency] < onset[errors]
        assert (onset[latency] - onset[root]) * 15 >= 60  # minutes, not samples, apart


@pytest.mark.parametrize("fault", ["disk_saturation", "redis_failure"])
def test_other_root_causes_lead_every_symptom(src, fault):
    cases = [i for i in incidents_between(T0, T0 + 4 * DAY, seed=7) if i.fault == fault]
    assert cases
    for incident in cases:
        onset = _onsets(src, incident, [incident.root_cause_series, *incident.symptom_series])
        root = onset.pop(incident.root_cause_series)
        assert all(root < t for t in onset.values()), (incident, root, onset)


def test_bad_deploy_swaps_the_build_info_version(src):
    (incident, *_) = [
        i for i in incidents_between(T0, T0 + 2 * DAY, seed=7) if i.fault == "bad_deploy"
    ]
    tr = TimeRange(incident.start_s - 3600, incident.end_s + 3600)
    builds = _by_name(src.query_range('app_build_info{service="checkout"}', tr, 15))
    assert len(builds) == 3  # before, the bad one, the fix
    new = builds[incident.root_cause_series]
    assert new.timestamps_s[0] == incident.start_s  # no points before it existed
    assert new.timestamps_s[-1] < incident.end_s
    old = min(builds.values(), key=lambda s: s.timestamps_s[0])
    assert old.timestamps_s[-1] == incident.start_s - 15
    assert np.all(new.values == 1)
    assert len(src.query('app_build_info{service="checkout"}', incident.start_s + 60)) == 1
    versions = src.label_values("version", ['app_build_info{service="checkout"}'], tr)
    assert len(versions) == 3
    errors = _by_name(src.query_range('http_errors_ratio{service="checkout"}', tr, 15))
    (series,) = errors.values()
    assert _at(series, incident.start_s + 300) > 10 * _at(series, incident.start_s - 300)


# --- selection and metadata -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "services"),
    [
        (f'{RPS}{{service="checkout"}}', {"checkout"}),
        (f'{RPS}{{service!="checkout"}}', {"frontend", "payments"}),
        (f'{RPS}{{service=~"check.*|pay.*"}}', {"checkout", "payments"}),
        (f'{RPS}{{service!~"check.*"}}', {"frontend", "payments"}),
        (f'{RPS}{{service=~"check"}}', set()),  # anchored
        (f'{{__name__="{RPS}", instance=~".*-1:8080"}}', {"frontend", "checkout"}),
    ],
)
def test_matchers_filter_series(src, selector, services):
    found = src.query_range(selector, TimeRange(T0, T0 + 600), 60)
    assert {s.labels["service"] for s in found} == services
    assert all(s.metric == RPS for s in found)


def test_regex_on_metric_names(src):
    found = src.query('{__name__=~"pg_.*"}', T0)
    assert {s.metric for s in found} == {
        "pg_connections_in_use",
        "pg_connections_max",
        "pg_query_duration_seconds_p99",
    }


def test_unknown_metric_gives_no_series(src):
    assert src.query_range("no_such_metric", TimeRange(T0, T0 + 60), 15) == []


def test_label_values_and_labels(src):
    names = src.label_values("__name__")
    for metric in (
        RPS,
        "http_request_duration_seconds_p99",
        "http_errors_ratio",
        "process_cpu_usage_ratio",
        "process_resident_memory_bytes",
        "pg_connections_in_use",
        "pg_connections_max",
        "redis_hit_ratio",
        "node_cpu_usage_ratio",
        "node_disk_io_utilization_ratio",
        "app_build_info",
    ):
        assert metric in names
    assert names == sorted(names)
    assert src.label_values("service", [RPS]) == ["checkout", "frontend", "payments"]
    assert src.label_values("node", ['{__name__=~"node_.*"}']) == ["node-a", "node-b"]
    assert src.labels([RPS]) == ["__name__", "instance", "job", "service"]
    assert "version" in src.labels()


def test_series_needs_a_matcher_and_unions_them(src):
    with pytest.raises(InvalidQuery):
        src.series([])
    found = src.series(["redis_hit_ratio", 'pg_connections_max{service="postgres"}'])
    assert [s["__name__"] for s in found] == ["pg_connections_max", "redis_hit_ratio"]


def test_metadata_without_a_range_uses_the_clock():
    deploy = next(i for i in incidents_between(T0, T0 + 2 * DAY, seed=7) if i.fault == "bad_deploy")
    src = DemoSource(seed=7, clock=lambda: deploy.start_s + 600)  # during a bad deploy
    versions = src.label_values("version", ['app_build_info{service="checkout"}'])
    assert len(versions) == 2


# --- errors and limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(foo[5m]))",
        f"{RPS} + 1",
        f"{RPS} offset 5m",
        f"{RPS}[5m]",
        f"rate({RPS}[5m]) / rate({RPS}[5m])",
        "1",
    ],
)
def test_unsupported_expressions_say_what_the_demo_answers(src, expr):
    with pytest.raises(InvalidQuery, match="PLUGIN_BACKEND_PROMETHEUS_URL") as info:
        src.query_range(expr, TimeRange(T0, T0 + 60), 15)
    assert info.value.message.startswith("the demo source answers series selectors such as")


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        (f'{RPS}{{service="checkout', "unterminated"),
        ('{service=~".*"}', "non-empty matcher"),
        ("  ", "empty"),
    ],
)
def test_malformed_selectors_keep_their_own_message(src, expr, fragment):
    with pytest.raises(InvalidQuery, match=fragment):
        src.query(expr, T0)


def test_long_ranges_are_answered_up_to_a_sanity_cap(src):
    # Like the Prometheus client, which splits ranges over Prometheus' 11,000 steps.
    assert len(src.query_range("up", TimeRange(T0, T0 + 20_000 * 15), 15)[0]) == 20_001
    with pytest.raises(InvalidQuery, match="at most 200,000 points"):
        src.query_range("up", TimeRange(T0, T0 + 200_001 * 15), 15)
    for step in (0, -15, float("nan")):
        with pytest.raises(InvalidQuery, match="step"):
            src.query_range("up", TimeRange(T0, T0 + 60), step)


def test_a_day_of_one_metric_has_every_point(src):
    found = src.query_range("process_cpu_usage_ratio", TimeRange(T0, T0 + DAY), 15)
    assert len(found) == 7
    assert all(len(series) == 5761 for series in found)
