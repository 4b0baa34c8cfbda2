"""Root-cause ranking on seeded synthetic estates and on the demo estate."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.errors import InvalidTarget
from plugin_backend.rca import (
    Cause,
    DependencyMap,
    load_dependency_map,
    naive_rank,
    rank_causes,
    rates_for_counters,
)
from plugin_backend.types import Series, TimeRange

STEP = 15.0
AT = 1_700_000_000.0
T0 = AT - 900.0  # the fault starts 15 min before the symptom is looked at
T = (AT - 5400.0) + STEP * np.arange(int(5400 / STEP) + 1)

DEPS = load_dependency_map(
    {
        "services": {
            "frontend": {"depends_on": ["api"], "runs_on": ["node-a"]},
            "api": {"depends_on": ["postgres", "redis", "payments"], "runs_on": ["node-a"]},
            "payments": {"runs_on": ["node-b"]},
            "postgres": {"runs_on": ["node-b"]},
            "redis": {"runs_on": ["node-b"]},
            "batch": {"runs_on": ["node-c"]},
        }
    }
)


@dataclass(frozen=True)
class Effect:
    labels: dict[str, str]
    lag_s: float  # after T0
    size: float  # in noise sigmas; negative: down
    rise_s: float = 60.0
    level: float = 100.0


def _labels(name: str, **labels: str) -> dict[str, str]:
    return {"__name__": name, "job": "shop", **labels}


def _noise(rng: np.random.Generator, level: float, sigma: float) -> np.ndarray:
    """AR(1) noise (phi 0.6) with stationary sigma ``sigma``."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - 0.36), T.size)
    out = np.empty(T.size)
    out[0] = rng.normal(0.0, sigma)
    for i in range(1, T.size):
        out[i] = 0.6 * out[i - 1] + e[i]
    return level + out


def _ramp(onset: float, rise_s: float) -> np.ndarray:
    return np.clip((T - onset) / max(rise_s, 1e-9), 0.0, 1.0)


def _estate(
    seed: int, effects: Sequence[Effect], n_noise: int = 30, distractor_lag_s: float = 300.0
) -> list[Series]:
    """The effects, ``n_noise`` unrelated noisy series and an unrelated huge jump."""
    rng = np.random.default_rng(seed)
    out = []
    for e in effects:
        sigma = 0.02 * e.level
        x = _noise(rng, e.level, sigma) + e.size * sigma * _ramp(T0 + e.lag_s, e.rise_s)
        out.append(Series(e.labels, T, x))
    for i in range(n_noise):
        level = float(rng.uniform(1.0, 1000.0))
        labels = _labels(f"noise_{i % 6}", service=f"svc-{i}", instance=f"host-{i % 4}:9100")
        out.append(Series(labels, T, _noise(rng, level, 0.03 * level)))
    # An unrelated distractor: a 50x jump after the symptom (the naive ranker's favourite).
    x = _noise(rng, 2.0, 0.05) + 100.0 * _ramp(T0 + distractor_lag_s, 15.0)
    out.append(Series(_labels("batch_queue_depth", service="batch"), T, x))
    return out


def _by_name(series: Sequence[Series], name: str) -> Series:
    return next(s for s in series if s.metric == name)


SCENARIOS: dict[str, tuple[list[Effect], str, str]] = {
    # name: (effects, root metric, symptom metric)
    "db_pool_exhaustion": (
        [
            Effect(_labels("db_connections", service="postgres"), 0, 30, rise_s=180),
            Effect(_labels("api_latency_seconds", service="api"), 120, 12),
            Effect(_labels("frontend_errors_ratio", service="frontend"), 240, 15),
        ],
        "db_connections",
        "frontend_errors_ratio",
    ),
    "traffic_surge": (
        [
            Effect(_labels("http_requests_per_second", service="frontend"), 0, 25, rise_s=120),
            Effect(_labels("process_cpu_ratio", service="api"), 60, 10),
            Effect(_labels("api_latency_seconds", service="api"), 120, 8),
        ],
        "http_requests_per_second",
        "api_latency_seconds",
    ),
    "cpu_hog": (
        [
            Effect(_labels("node_cpu_ratio", node="node-b"), 0, 20, rise_s=30),
            Effect(_labels("payments_latency_seconds", service="payments"), 45, 10),
            Effect(_labels("api_latency_seconds", service="api"), 105, 8),
            Effect(_labels("frontend_latency_seconds", service="frontend"), 165, 8),
        ],
        "node_cpu_ratio",
        "frontend_latency_seconds",
    ),
    "memory_leak": (
        [
            Effect(_labels("process_resident_memory_bytes", service="api"), 0, 30, rise_s=900),
            Effect(_labels("api_gc_pause_seconds", service="api"), 420, 10, rise_s=120),
            Effect(_labels("frontend_latency_seconds", service="frontend"), 480, 8),
        ],
        "process_resident_memory_bytes",
        "frontend_latency_seconds",
    ),
    "slow_dependency": (
        [
            Effect(_labels("payments_latency_seconds", service="payments"), 0, 15),
            Effect(_labels("api_latency_seconds", service="api"), 60, 10),
            Effect(_labels("frontend_latency_seconds", service="frontend"), 120, 8),
        ],
        "payments_latency_seconds",
        "frontend_latency_seconds",
    ),
    "cache_failure": (
        [
            Effect(_labels("redis_hit_ratio", service="redis"), 0, -40, rise_s=30),
            Effect(_labels("db_connections", service="postgres"), 60, 12),
            Effect(_labels("api_latency_seconds", service="api"), 120, 8),
        ],
        "redis_hit_ratio",
        "api_latency_seconds",
    ),
    "disk_saturation": (
        [
            Effect(_labels("node_disk_io_utilization_ratio", node="node-b"), 0, 20, rise_s=60),
            Effect(_labels("db_query_seconds", service="postgres"), 60, 10),
            Effect(_labels("api_latency_seconds", service="api"), 150, 8),
        ],
        "node_disk_io_utilization_ratio",
        "api_latency_seconds",
    ),
}


def _run(name: str, seed: int, deps: DependencyMap | None) -> tuple[list[Cause], list[Cause], str]:
    effects, root, symptom = SCENARIOS[name]
    estate = _estate(seed, effects)
    sym = _by_name(estate, symptom)
    return (
        rank_causes(sym, estate, at_s=AT, dependencies=deps),
        naive_rank(sym, estate, AT),
        root,
    )


@pytest.mark.parametrize("deps", [None, DEPS], ids=["no_map", "map"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_true_cause_ranks_first(name: str, seed: int, deps: DependencyMap | None) -> None:
    ranked, _, root = _run(name, seed, deps)
    assert ranked[0].metric == root, [(c.series, round(c.score, 3)) for c in ranked[:4]]
    assert ranked[0].lead_s is not None
    assert ranked[0].lead_s > 0
    assert ranked[0].evidence.changed


def test_naive_ranker_is_fooled_by_the_big_jump() -> None:
    naive_hits = ranked_hits = 0
    for name in SCENARIOS:
        for seed in range(3):
            ranked, naive, root = _run(name, seed, None)
            naive_hits += naive[0].metric == root
            ranked_hits += ranked[0].metric == root
    total = 3 * len(SCENARIOS)
    assert ranked_hits == total
    assert naive_hits <= total // 2
    ranked, naive, root = _run("db_pool_exhaustion", 0, None)
    assert naive[0].metric == "batch_queue_depth"
    assert ranked[0].metric == root


def test_victims_and_unchanged_candidates_rank_low() -> None:
    ranked, _, _ = _run("db_pool_exhaustion", 1, None)
    names = [c.metric for c in ranked]
    assert "frontend_errors_ratio" not in names  # the symptom is excluded
    distractor = next(c for c in ranked if c.metric == "batch_queue_depth")
    assert distractor.lead_s is not None
    assert distractor.lead_s < 0  # changed after the symptom: a victim at best
    assert distractor.score < ranked[0].score
    changed = [c.evidence.changed for c in ranked]
    assert changed == sorted(changed, reverse=True)  # unchanged ones come last
    assert all(c.score == 0.0 for c in ranked if not c.evidence.changed)
    scores = [c.score for c in ranked]
    assert scores == sorted(scores, reverse=True)


def test_bad_deploy_ranks_the_new_version_first() -> None:
    rng = np.random.default_rng(11)
    old, new = T < T0, T >= T0
    info = [
        Series(_labels("app_build_info", service="api", version="1.2"), T[old], np.ones(old.sum())),
        Series(_labels("app_build_info", service="api", version="1.3"), T[new], np.ones(new.sum())),
        Series(_labels("app_build_info", service="frontend", version="3.1"), T, np.ones(T.size)),
    ]
    errors = _noise(rng, 0.01, 0.002) + 0.2 * _ramp(T0 + 45, 60)
    sym_x = _noise(rng, 0.02, 0.003) + 0.1 * _ramp(T0 + 120, 60)
    cpu = _noise(rng, 0.3, 0.01) + 0.3 * _ramp(T0 + 45, 60)
    memory = _noise(rng, 5e8, 1e7) - 3e8 * _ramp(T0, 1)  # the restart frees leaked memory
    estate = [
        *info,
        Series(_labels("http_errors_ratio", service="api"), T, errors),
        Series(_labels("process_cpu_ratio", service="api"), T, cpu),
        Series(_labels("process_resident_memory_bytes", service="api"), T, memory),
        *_estate(11, [], n_noise=30),
    ]
    symptom = Series(_labels("http_errors_ratio", service="frontend"), T, sym_x)
    for deps in (None, DEPS):
        ranked = rank_causes(symptom, [symptom, *estate], at_s=AT, dependencies=deps)
        top = ranked[0]
        assert top.metric == "app_build_info"
        assert top.labels["service"] == "api"
        assert top.labels["version"] == "1.3"
        assert top.evidence.kind == "change_event"
        assert top.entity == "api"


def test_early_unrelated_change_does_not_beat_the_cascade_root() -> None:
    effects, root, symptom = SCENARIOS["slow_dependency"]
    for seed in range(3):
        estate = _estate(seed, effects)
        rng = np.random.default_rng(100 + seed)
        # Unrelated, long before: nothing follows it within the cascade gap.
        early = _noise(rng, 50.0, 1.0) + 20.0 * _ramp(T0 - 900, 15)
        estate.append(Series(_labels("backup_running", service="batch"), T, early))
        sym = _by_name(estate, symptom)
        assert rank_causes(sym, estate, at_s=AT)[0].metric == root
        # Unrelated, just before: only the dependency map can tell.
        close = _noise(rng, 50.0, 1.0) + 20.0 * _ramp(T0 - 120, 15)
        estate.append(Series(_labels("batch_jobs_running", service="batch"), T, close))
        assert rank_causes(sym, estate, at_s=AT, dependencies=DEPS)[0].metric == root


def test_finished_burst_and_harmless_deploy_do_not_track_the_symptom() -> None:
    effects, root, symptom = SCENARIOS["slow_dependency"]
    for seed in range(3):
        estate = _estate(seed, effects)
        rng = np.random.default_rng(200 + seed)
        # A big burst on an unrelated service that started first and is over by now.
        burst = _noise(rng, 50.0, 1.0) + 40.0 * _ramp(T0 - 60, 15) * (T < T0 + 240)
        estate.append(Series(_labels("reporting_jobs_running", service="reporting"), T, burst))
        # A deploy of a service none of whose metrics then moves.
        new = T >= T0 - 30
        labels = _labels("app_build_info", service="catalog", version="2.0")
        estate.append(Series(labels, T[new], np.ones(int(new.sum()))))
        estate.append(
            Series(_labels("process_cpu_ratio", service="catalog"), T, _noise(rng, 0.3, 0.01))
        )
        sym = _by_name(estate, symptom)
        ranked = rank_causes(sym, estate, at_s=AT)
        assert ranked[0].metric == root
        by_metric = {c.metric: c for c in ranked}
        assert by_metric["reporting_jobs_running"].components["tracking"] < 0.5
        assert by_metric["app_build_info"].components["tracking"] == 0.0
        assert ranked[0].components["tracking"] > 0.8


def test_counter_root_cause_after_rate_conversion() -> None:
    rng = np.random.default_rng(4)
    per_s = 50.0 + rng.normal(0.0, 1.0, T.size) + 60.0 * _ramp(T0, 60)
    counter = np.cumsum(per_s * STEP)
    counter[T > T0 - 2000] -= counter[np.argmax(T > T0 - 2000)]  # a restart: reset to 0
    counter = np.maximum(counter, 0.0)
    latency = _noise(rng, 0.2, 0.005) + 0.2 * _ramp(T0 + 90, 60)
    estate = [
        Series(_labels("http_requests_total", service="frontend"), T, counter),
        Series(_labels("api_latency_seconds", service="api"), T, latency),
        *_estate(4, [], n_noise=20),
    ]
    estate = rates_for_counters(estate)
    ranked = rank_causes(estate[1], estate, at_s=AT)
    assert ranked[0].metric == "http_requests_total"


def test_nan_gaps_do_not_break_ranking() -> None:
    effects, root, symptom = SCENARIOS["db_pool_exhaustion"]
    estate = _estate(2, effects)
    rng = np.random.default_rng(2)
    holed = []
    for s in estate:
        x = s.values.copy()
        x[rng.random(x.size) < 0.1] = np.nan
        holed.append(Series(s.labels, s.timestamps_s, x))
    ranked = rank_causes(_by_name(holed, symptom), holed, at_s=AT)
    assert ranked[0].metric == root


def test_cause_to_dict_is_json_ready() -> None:
    ranked, naive, _ = _run("cache_failure", 0, DEPS)
    data = ranked[0].to_dict()
    text = json.dumps(data)
    assert "redis_hit_ratio" in text
    assert set(data) >= {"series", "metric", "labels", "score", "onset", "lead_s", "evidence"}
    assert "timing" in data["components"]  # type: ignore[operator]
    json.dumps(naive[0].to_dict())


def test_limit_and_bad_arguments() -> None:
    effects, _, symptom = SCENARIOS["cpu_hog"]
    estate = _estate(0, effects, n_noise=5)
    sym = _by_name(estate, symptom)
    assert len(rank_causes(sym, estate, at_s=AT, limit=2)) == 2
    assert rank_causes(sym, [], at_s=AT) == []
    with pytest.raises(InvalidTarget):
        rank_causes(sym, estate, at_s=float("inf"))
    with pytest.raises(InvalidTarget):
        rank_causes(sym, estate, at_s=AT, window_s=-1)
    with pytest.raises(InvalidTarget):
        rank_causes(sym, estate, at_s=AT, step_s=0.0)


def test_200_candidates_rank_as_one_cause_per_entity() -> None:
    # (their speed, <= 1 s for 200 candidates, is measured by `python -m benchmarks rca`)
    step = 5400.0 / 239
    t = (AT - 5400.0) + step * np.arange(240)
    rng = np.random.default_rng(0)
    candidates = []
    for i in range(200):
        x = rng.normal(100.0, 3.0, t.size)
        if i % 10 == 0:  # a fifth of them change, at different times
            x += 30.0 * np.clip((t - (AT - 1500 + 60 * i / 10)) / 60.0, 0.0, 1.0)
        labels = {"__name__": f"m{i % 7}", "service": f"s{i % 13}", "node": f"n{i % 3}"}
        labels["instance"] = f"i{i}"
        candidates.append(Series(labels, t, x))
    sym = Series({"__name__": "symptom"}, t, rng.normal(1.0, 0.05, t.size) + (t > AT - 600))
    ranked = rank_causes(sym, candidates, at_s=AT)
    assert len({c.entity for c in ranked}) == len(ranked) == 13  # one per service


# --- the demo estate ------------------------------------------------------------

DEMO_DEPS = load_dependency_map(
    {
        "services": {
            "frontend": {"depends_on": ["checkout"], "runs_on": ["node-a", "node-b"]},
            "checkout": {
                "depends_on": ["payments", "postgres", "redis"],
                "runs_on": ["node-a", "node-b"],
            },
            "payments": {"runs_on": ["node-b"]},
            "postgres": {"runs_on": ["node-b"]},
            "redis": {"runs_on": ["node-a"]},
        }
    }
)


def _selector(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{labels.get('__name__', '')}{{{inner}}}"


def _demo_accuracy(offset_s: float, deps: DependencyMap | None) -> tuple[float, float]:
    source = DemoSource()
    day0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400
    incidents = incidents_between(day0, day0 + 2 * 86400)
    hits = naive_hits = 0
    for incident in incidents:
        at = incident.start_s + offset_s
        window = TimeRange(at - 5400.0, at)
        estate = []
        for labels in source.series(['{job="demo"}'], window):
            for s in source.query_range(_selector(dict(labels)), window, STEP):
                if dict(s.labels) == dict(labels):
                    estate.append(s)
        estate = rates_for_counters(estate)
        symptom = next(s for s in estate if s.name == incident.symptom_series[0])
        hits += rank_causes(symptom, estate, at_s=at, dependencies=deps)[0].series == (
            incident.root_cause_series
        )
        naive_hits += naive_rank(symptom, estate, at)[0].series == incident.root_cause_series
    return hits / len(incidents), naive_hits / len(incidents)


@pytest.mark.parametrize("deps", [None, DEMO_DEPS], ids=["no_map", "map"])
def test_demo_estate_top1_accuracy(deps: DependencyMap | None) -> None:
    accuracy, naive = _demo_accuracy(600.0, deps)
    print(f"demo estate top-1: {accuracy:.2f} (naive {naive:.2f})")
    assert accuracy >= 0.75
    assert naive < accuracy


def _with_bursty_distractor(seed: int) -> tuple[list[Series], Series, str]:
    """The slow-dependency cascade plus a batch job that bursts just before it, as
    it did (as high) in the baseline: without novelty it looks like the cause."""
    effects, root, symptom = SCENARIOS["slow_dependency"]
    estate = _estate(seed, effects)
    rng = np.random.default_rng(200 + seed)
    on = ((T >= AT - 4800) & (T < AT - 4200)) | (T >= T0 - 60)
    estate.append(
        Series(
            _labels("batch_jobs_running", service="batch"), T, _noise(rng, 50.0, 1.0) + 40.0 * on
        )
    )
    return estate, _by_name(estate, symptom), root


@pytest.mark.parametrize("seed", range(3))
def test_a_change_the_baseline_already_saw_loses_to_a_novel_one(seed: int) -> None:
    estate, sym, root = _with_bursty_distractor(seed)
    ranked = rank_causes(sym, estate, at_s=AT)
    assert ranked[0].metric == root, [(c.series, round(c.score, 3)) for c in ranked[:3]]
    batch = next(c for c in ranked if c.metric == "batch_jobs_running")
    assert batch.evidence.changed
    assert batch.lead_s is not None
    assert ranked[0].lead_s is not None
    assert batch.lead_s > ranked[0].lead_s  # it changed first
    assert batch.components["strength"] < 0.1


def test_without_novelty_the_bursty_series_would_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from plugin_backend.rca import ranking

    # Novelty scales the strength and the lead's credibility; the credibility's other
    # factor, the size of the change, alone already makes a weak burst's lead count less.
    timing = ranking._timing
    monkeypatch.setattr(ranking, "_novelty", lambda ev, dev: 1.0)
    monkeypatch.setattr(
        ranking, "_timing", lambda lead, step, creep=0.0, credibility=1.0: timing(lead, step, creep)
    )
    wins = 0
    for seed in range(3):
        estate, sym, _ = _with_bursty_distractor(seed)
        wins += rank_causes(sym, estate, at_s=AT)[0].metric == "batch_jobs_running"
    assert wins >= 2  # the case above is a real test of the novelty term


def test_earliest_of_a_cascade_beats_a_bigger_later_victim() -> None:
    for seed in range(3):
        rng = np.random.default_rng(300 + seed)
        estate = _estate(seed, [])
        root = _noise(rng, 100.0, 2.0) + 20.0 * _ramp(T0, 30)  # 10 sigma, first
        victim = _noise(rng, 100.0, 2.0) + 400.0 * _ramp(T0 + 60, 30)  # 200 sigma, later
        sym_x = _noise(rng, 1.0, 0.02) + 0.5 * _ramp(T0 + 150, 30)
        estate += [
            Series(_labels("disk_io_ratio", node="node-b"), T, root),
            Series(_labels("db_query_seconds", service="postgres"), T, victim),
        ]
        sym = Series(_labels("api_latency_seconds", service="api"), T, sym_x)
        ranked = rank_causes(sym, estate, at_s=AT)
        assert ranked[0].metric == "disk_io_ratio", [c.series for c in ranked[:3]]


# --- entities and the window that follows the symptom ------------------------------


def test_one_components_many_series_do_not_crowd_out_the_others() -> None:
    effects, root, symptom = SCENARIOS["db_pool_exhaustion"]
    estate = _estate(0, effects)
    rng = np.random.default_rng(5)
    # The api has a dozen series that all moved with its latency.
    api_twins = [
        Series(
            _labels(f"api_metric_{i}", service="api"),
            T,
            _noise(rng, 10.0, 0.2) + 3.0 * _ramp(T0 + 120, 60),
        )
        for i in range(12)
    ]
    sym = _by_name(estate, symptom)
    ranked = rank_causes(sym, [*estate, *api_twins], at_s=AT)
    entities = [c.entity for c in ranked]
    assert len(entities) == len(set(entities))
    assert ranked[0].metric == root
    assert entities[:2] == ["postgres", "api"]


def test_the_window_follows_the_symptom_back_to_a_slow_leak() -> None:
    # 4 h of data; the leak starts 50 min before the alert and the symptom
    # 10 min before it: a fixed 30 min window would start inside the ramp.
    t = (AT - 4 * 3600.0) + STEP * np.arange(int(4 * 3600 / STEP) + 1)
    rng = np.random.default_rng(2)
    leak_start, sym_start = AT - 3000.0, AT - 600.0
    memory = 1e9 + rng.normal(0.0, 5e6, t.size) + 4e8 * np.clip((t - leak_start) / 2400, 0, 1)
    latency = 0.2 + rng.normal(0.0, 0.004, t.size) + 0.2 * (t >= sym_start)
    noise = [
        Series(_labels(f"noise_{i}", service=f"svc-{i}"), t, rng.normal(50.0, 1.0, t.size))
        for i in range(20)
    ]
    leak = Series(_labels("process_resident_memory_bytes", service="api"), t, memory)
    symptom = Series(_labels("frontend_latency_seconds", service="frontend"), t, latency)
    ranked = rank_causes(symptom, [leak, *noise], at_s=AT)
    assert ranked[0].metric == "process_resident_memory_bytes"
    assert ranked[0].onset_s is not None
    assert ranked[0].onset_s < sym_start - 600
    # An explicit window is an override: 10 min sees no leak start in it.
    fixed = rank_causes(symptom, [leak, *noise], at_s=AT, window_s=600.0, baseline_s=3600.0)
    assert fixed[0].onset_s is None or fixed[0].onset_s > leak_start + 1200


def test_a_series_appearing_from_nothing_is_judged_against_its_peers_not_as_a_deploy() -> None:
    effects, root, symptom = SCENARIOS["slow_dependency"]
    estate = _estate(3, effects)
    rng = np.random.default_rng(8)
    late = T >= T0 - 300
    # A table first queried 5 min before the fault: a few requests, like its peers'.
    peers = [
        Series(_labels("table_requests", component=f"table-{i}"), T, rng.normal(3.0, 1.0, T.size))
        for i in range(6)
    ]
    new = Series(
        _labels("table_requests", component="table-new"), T[late], rng.normal(3.5, 1.0, late.sum())
    )
    sym = _by_name(estate, symptom)
    ranked = rank_causes(sym, [*estate, *peers, new], at_s=AT)
    assert ranked[0].metric == root
    appeared = next(c for c in ranked if c.entity == "table-new")
    assert not appeared.evidence.changed
    # ... while a new version (a marker series) still counts as a deploy.
    version = Series(
        _labels("app_build_info", service="payments", version="2"), T[late], np.ones(late.sum())
    )
    ranked = rank_causes(sym, [*estate, version], at_s=AT)
    assert next(c for c in ranked if c.metric == "app_build_info").evidence.changed


def _latency_step(rng: np.random.Generator, service: str, level: float, jump: float) -> Series:
    x = _noise(rng, level, 0.02 * level) + np.where(T >= T0, jump, 0.0)
    return Series(_labels("http_latency_seconds", service=service), T, x)


@pytest.mark.parametrize("seed", range(4))
def test_with_a_map_a_slow_dependency_ranks_above_callers_that_slowed_in_the_same_step(
    seed: int,
) -> None:
    # payments slows; api and frontend wait on it within the same scrape, and their
    # latencies move more (relative to their noise) than the dependency's own.
    rng = np.random.default_rng(seed)
    payments = _latency_step(rng, "payments", 0.2, 0.04)
    api = _latency_step(rng, "api", 0.05, 0.6)
    front = _latency_step(rng, "frontend", 0.1, 1.2)
    symptom = Series(
        _labels("http_latency_p99_seconds", service="frontend"),
        T,
        _noise(rng, 0.3, 0.01) + np.where(T >= T0, 2.0, 0.0),
    )
    ranked = rank_causes(symptom, [payments, api, front], at_s=AT, dependencies=DEPS)
    assert ranked[0].entity == "payments"
    assert ranked[0].components["precedence"] == pytest.approx(1.0)
    assert {c.entity for c in ranked[1:3]} == {"api", "frontend"}


@pytest.mark.parametrize("seed", range(3))
def test_a_rollout_s_new_generation_ranks_first_a_harmless_one_does_not(seed: int) -> None:
    # No build info, only a generation gauge that steps by one when the rollout starts
    # (below the relative noise floor of a measurement); the new pods fail at once.
    rng = np.random.default_rng(seed)
    generation = Series(
        _labels("deployment_generation", service="api"), T, np.where(T >= T0, 46.0, 45.0)
    )
    # A harmless rollout of another service, earlier: nothing of its own moves after it.
    harmless = Series(
        _labels("deployment_generation", service="catalog"), T, np.where(T >= T0 - 240, 13.0, 12.0)
    )
    errors = _noise(rng, 0.01, 0.002) + 0.2 * _ramp(T0 + 15, 30)
    sym_x = _noise(rng, 0.02, 0.003) + 0.1 * _ramp(T0 + 15, 30)
    estate = [
        generation,
        harmless,
        Series(_labels("http_errors_ratio", service="api"), T, errors),
        Series(_labels("process_cpu_ratio", service="catalog"), T, _noise(rng, 0.3, 0.01)),
        *_estate(seed, [], n_noise=30),
    ]
    symptom = Series(_labels("http_errors_ratio", service="frontend"), T, sym_x)
    for deps in (None, DEPS):
        ranked = rank_causes(symptom, estate, at_s=AT, dependencies=deps)
        assert ranked[0].metric == "deployment_generation"
        assert ranked[0].entity == "api"
        assert ranked[0].components["change_event"] > 0.0
        other = next(c for c in ranked if c.series == harmless.name)
        assert other.components["tracking"] == 0.0  # nothing of its own moved after it
        if deps is None:
            assert other.components["change_event"] == 0.0


def _slow_dependency_in_one_step(seed: int) -> tuple[Series, list[Series]]:
    # payments slows 6x; api and frontend wait on it within the same scrape: each adds
    # its own time, so each grew by a smaller factor, though their noise is lower.
    rng = np.random.default_rng(seed)

    def latency(service: str, level: float, noise: float) -> Series:
        x = _noise(rng, level, noise * level) + np.where(T >= T0, 0.5, 0.0)
        return Series(_labels("http_latency_seconds", service=service), T, x)

    estate = [
        latency("payments", 0.1, 0.05),
        latency("api", 0.15, 0.01),
        latency("frontend", 0.2, 0.01),
        *_estate(seed, [], n_noise=30),
    ]
    symptom = Series(
        _labels("http_latency_p99_seconds", service="frontend"),
        T,
        _noise(rng, 0.3, 0.01) + np.where(T >= T0, 1.0, 0.0),
    )
    return symptom, estate


@pytest.mark.parametrize("seed", range(4))
def test_without_a_map_the_latency_that_grew_most_in_the_step_ranks_first(seed: int) -> None:
    symptom, estate = _slow_dependency_in_one_step(seed)
    ranked = rank_causes(symptom, estate, at_s=AT)
    assert ranked[0].entity == "payments"
    assert {c.entity for c in ranked[1:3]} == {"api", "frontend"}
    assert all(c.components["precedence"] < 0.6 for c in ranked[1:3])


def test_without_the_dilution_rule_a_caller_would_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from plugin_backend.rca import ranking

    monkeypatch.setattr(ranking, "_SAME_MOMENT_MAX_STEP_S", 0.0)
    tops = [rank_causes(*_slow_dependency_in_one_step(s), at_s=AT)[0].entity for s in range(4)]
    assert tops.count("payments") < 4


def _disk_fills_with_the_queries(seed: int) -> tuple[Series, list[Series]]:
    # A backup saturates node-b's disk; in the same 15 s sample the database's queries
    # slow 50x (their noise is tiny, so they move thousands of sigmas) and the callers
    # wait.
    rng = np.random.default_rng(seed)
    disk = _noise(rng, 0.2, 0.004) + np.where(T >= T0, 0.7, 0.0)
    queries = _noise(rng, 0.01, 0.0002) + np.where(T >= T0, 0.5, 0.0)
    estate = [
        Series(_labels("node_disk_io_util_ratio", node="node-b"), T, disk),
        Series(_labels("db_query_latency_seconds", service="postgres"), T, queries),
        _latency_step(rng, "api", 0.05, 1.5),
        *_estate(seed, [], n_noise=30),
    ]
    symptom = Series(
        _labels("http_latency_p99_seconds", service="frontend"),
        T,
        _noise(rng, 0.3, 0.01) + np.where(T >= T0, 3.0, 0.0),
    )
    return symptom, estate


@pytest.mark.parametrize("seed", range(4))
def test_without_a_map_a_resource_that_filled_in_the_step_ranks_above_the_latencies(
    seed: int,
) -> None:
    symptom, estate = _disk_fills_with_the_queries(seed)
    ranked = rank_causes(symptom, estate, at_s=AT)
    assert ranked[0].entity == "node-b"
    queries = next(c for c in ranked if c.metric == "db_query_latency_seconds")
    assert queries.lead_s == ranked[0].lead_s  # the same sample: order cannot be read
    assert queries.components["precedence"] < ranked[0].components["precedence"]


def test_without_the_saturation_rule_the_database_latency_would_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugin_backend.rca import ranking

    monkeypatch.setattr(
        ranking, "_saturated_alongside", lambda i, **kw: np.zeros(kw["delta"].shape, dtype=bool)
    )
    tops = [rank_causes(*_disk_fills_with_the_queries(s), at_s=AT)[0].entity for s in range(4)]
    assert tops.count("node-b") < 4


# At 5 min samples (CloudWatch-style): a day of history, the symptom 25 min before `at`.
STEP_5M = 300.0
T_5M = (AT - 86_400.0) + STEP_5M * np.arange(int(86_400 / STEP_5M) + 1)
ONSET_5M = AT - 1500.0


def _coarse(
    rng: np.random.Generator,
    service: str,
    level: float,
    jump: float,
    at: float,
    *,
    name: str = "latency_seconds",
    wobble: float = 0.0,
) -> Series:
    """A series at 5 min samples with 2 % noise that steps by ``jump`` noise sigmas at
    ``at`` and then wobbles by ``wobble`` sigmas more."""
    sigma = 0.02 * level
    after = at <= T_5M
    x = level + rng.normal(0.0, sigma, T_5M.size)
    x += after * sigma * (jump + wobble * rng.normal(0.0, 1.0, T_5M.size))
    return Series(_labels(name, service=service), T_5M, x)


def _two_movers_one_sample_early(seed: int) -> tuple[Series, list[Series]]:
    # Both lead the symptom by one 5 min sample: search spikes 150 sigmas and stays 20
    # up (a jump that eases, as PetShop's root does); the database's latency clears its
    # noise by 7 sigmas and wobbles on.
    rng = np.random.default_rng(seed)
    early = ONSET_5M - STEP_5M
    search = _coarse(rng, "search", 0.2, 20.0, early)
    search.values[np.searchsorted(T_5M, early)] += 130.0 * 0.02 * 0.2
    estate = [
        search,
        _coarse(rng, "database", 0.05, 7.0, early, wobble=1.5),
        *[
            _coarse(rng, f"svc-{i}", float(rng.uniform(1, 100)), 0.0, AT, name=f"noise_{i % 3}")
            for i in range(20)
        ],
    ]
    symptom = _coarse(rng, "frontend", 1.0, 30.0, ONSET_5M)
    return symptom, estate


def test_of_two_equal_leads_the_credible_change_s_counts_more() -> None:
    firsts = []
    for seed in range(12):
        symptom, estate = _two_movers_one_sample_early(seed)
        ranked = rank_causes(symptom, estate, at_s=AT)
        firsts.append(ranked[0].entity)
        search = next(c for c in ranked if c.entity == "search")
        weak = next(c for c in ranked if c.entity == "database")
        if weak.lead_s == search.lead_s == STEP_5M:
            assert weak.components["timing"] < search.components["timing"]
    assert firsts.count("search") >= 11


def test_with_full_credit_for_any_lead_the_weak_mover_would_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugin_backend.rca import ranking

    timing = ranking._timing
    monkeypatch.setattr(
        ranking, "_timing", lambda lead, step, creep=0.0, credibility=1.0: timing(lead, step, creep)
    )
    tops = [rank_causes(*_two_movers_one_sample_early(s), at_s=AT)[0].entity for s in range(12)]
    assert tops.count("database") >= 4


def _process_hogs_its_node(
    seed: int, symptom_steps: int = 4, busy_neighbour: bool = False
) -> tuple[Series, list[Series]]:
    # A runaway api process takes a core; node-a's CPU (the sum of what runs there, api
    # among it) rises with it, and the frontend slows. The process's usage is a rate of
    # a counter, which shows the change a sample later than the node's gauge. No map
    # says api runs on node-a, and the api's pod carries no node label.
    rng = np.random.default_rng(seed)
    node = _noise(rng, 0.3, 0.005) + np.where(T >= T0, 0.25, 0.0)
    process = _noise(rng, 0.2, 0.01) + np.where(T >= T0 + STEP, 1.0, 0.0)
    estate = [
        Series(_labels("node_cpu_utilisation_ratio", node="node-a"), T, node),
        Series(_labels("process_cpu_usage_cores", service="api", pod="api-1"), T, process),
        *_estate(seed, [], n_noise=30),
    ]
    if busy_neighbour:  # another process's CPU rose with it: which one node-a shows is unknown
        other = _noise(rng, 0.2, 0.01) + np.where(T >= T0 + STEP, 0.5, 0.0)
        estate.append(Series(_labels("process_cpu_usage_cores", service="search"), T, other))
    slows = T0 + symptom_steps * STEP
    symptom = Series(
        _labels("http_latency_p99_seconds", service="frontend"),
        T,
        _noise(rng, 0.3, 0.01) + np.where(slows <= T, 0.6, 0.0),
    )
    return symptom, estate


@pytest.mark.parametrize("seed", range(4))
def test_without_a_map_a_process_ranks_above_its_node_when_both_rose_within_a_step(
    seed: int,
) -> None:
    symptom, estate = _process_hogs_its_node(seed)
    ranked = rank_causes(symptom, estate, at_s=AT)
    assert ranked[0].entity == "api", [c.series for c in ranked[:3]]
    node = next(c for c in ranked if c.entity == "node-a")
    assert node.components["precedence"] < ranked[0].components["precedence"]


def test_without_the_sum_rule_the_node_would_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from plugin_backend.rca import ranking

    monkeypatch.setattr(
        ranking,
        "_summed_alongside",
        lambda i, **kw: (np.zeros(kw["delta"].shape, dtype=bool),) * 2,
    )
    tops = [rank_causes(*_process_hogs_its_node(s), at_s=AT)[0].entity for s in range(4)]
    assert tops.count("api") < 4, tops


@pytest.mark.parametrize("seed", range(4))
def test_without_a_map_a_process_takes_the_lead_of_the_node_that_shows_it_alone(
    seed: int,
) -> None:
    # The symptom two samples after the node's gauge, one after the process's rate: the
    # node's earlier onset is the process's change seen in the sum.
    symptom, estate = _process_hogs_its_node(seed, symptom_steps=2)
    ranked = rank_causes(symptom, estate, at_s=AT)
    assert ranked[0].entity == "api", [c.series for c in ranked[:3]]
    node = next(c for c in ranked if c.entity == "node-a")
    assert ranked[0].lead_s == pytest.approx(STEP)  # its own onset is reported
    assert ranked[0].components["timing"] == pytest.approx(node.components["timing"], abs=0.01)


def test_without_a_map_a_process_keeps_its_own_lead_when_other_tenants_moved() -> None:
    symptom, estate = _process_hogs_its_node(0, symptom_steps=2, busy_neighbour=True)
    ranked = rank_causes(symptom, estate, at_s=AT)
    api = next(c for c in ranked if c.entity == "api")
    node = next(c for c in ranked if c.entity == "node-a")
    assert api.components["timing"] < node.components["timing"]


def _symptom_seen_on_another_pod(seed: int) -> tuple[Series, list[Series]]:
    # api's process slows (a hot loop) and frontend waits on it; the frontend pod the
    # alert watches crosses its threshold a sample after its sibling pod, whose own
    # latency (the same metric, the same service) moves first by noise.
    rng = np.random.default_rng(seed)
    sibling = _noise(rng, 0.3, 0.01) + np.where(T >= T0, 0.6, 0.0)
    api = _noise(rng, 0.1, 0.002) + np.where(T >= T0 + STEP, 0.5, 0.0)
    estate = [
        Series(_labels("http_latency_p99_seconds", service="frontend", pod="fe-1"), T, sibling),
        Series(_labels("http_latency_p99_seconds", service="api", pod="api-1"), T, api),
        *_estate(seed, [], n_noise=30),
    ]
    watched = _noise(rng, 0.3, 0.01) + np.where(T >= T0 + 2 * STEP, 0.6, 0.0)
    symptom = Series(
        _labels("http_latency_p99_seconds", service="frontend", pod="fe-0"), T, watched
    )
    return symptom, estate


@pytest.mark.parametrize("seed", range(4))
def test_without_a_map_the_symptom_seen_on_another_pod_ranks_after_the_causes(
    seed: int,
) -> None:
    symptom, estate = _symptom_seen_on_another_pod(seed)
    ranked = rank_causes(symptom, estate, at_s=AT)
    assert ranked[0].entity == "api", [c.series for c in ranked[:3]]
    sibling = next(c for c in ranked if c.entity == "frontend")
    assert sibling.lead_s is not None
    assert ranked[0].lead_s is not None
    assert sibling.lead_s > ranked[0].lead_s  # it moved earlier, yet ranks after
