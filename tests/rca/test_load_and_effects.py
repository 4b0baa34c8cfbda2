"""Load is a cause; effects of a cache failure or of a runaway process rank below it.

Every scenario makes the cause and its effects change within a step of each other, as
they do at a scrape interval of 15-30 s, so timing alone cannot tell them apart.
"""

from __future__ import annotations

import pytest

from plugin_backend.rca import DependencyMap, load_dependency_map, rank_causes
from plugin_backend.rca.evidence import Evidence
from plugin_backend.rca.load import is_request_rate, load_roles
from tests.rca.test_ranking import AT, STEP, T0, Effect, _by_name, _estate, _labels

DEPS = load_dependency_map(
    {
        "services": {
            "gateway": {"depends_on": ["api"], "runs_on": ["node-a"]},
            "api": {"depends_on": ["postgres", "redis"], "runs_on": ["node-a", "node-b"]},
            "postgres": {"runs_on": ["node-c"]},
            "redis": {"runs_on": ["node-c"]},
        }
    }
)
MAPS = pytest.mark.parametrize("deps", [None, DEPS], ids=["no_map", "map"])
SEEDS = pytest.mark.parametrize("seed", range(3))


def _top(effects: list[Effect], symptom: str, seed: int, deps: DependencyMap | None) -> list[str]:
    estate = _estate(seed, effects)
    causes = rank_causes(_by_name(estate, symptom), estate, at_s=AT, dependencies=deps)
    return [c.metric for c in causes]


def test_request_rates_are_told_from_errors_misses_and_durations() -> None:
    assert is_request_rate({"__name__": "http_server_requests_total", "code": "2xx"})
    assert is_request_rate({"__name__": "app_requests_total", "service": "checkout"})
    assert is_request_rate({"__name__": "petshop_requests", "statistic": "Sum"})
    assert not is_request_rate({"__name__": "http_server_requests_total", "code": "5xx"})
    assert not is_request_rate({"__name__": "cache_requests_total", "result": "miss"})
    assert not is_request_rate({"__name__": "http_request_duration_seconds"})
    assert not is_request_rate({"__name__": "app_inflight_requests"})
    assert not is_request_rate({"__name__": "app_request_errors_total"})


SURGE = [
    # The gateway takes twice the traffic; within the same step the api behind it
    # takes more requests, its CPU and latency climb, and so does the gateway's.
    Effect(_labels("http_requests_per_second", service="gateway"), 0, 30, rise_s=120),
    Effect(_labels("http_requests_per_second", service="api"), 0, 30, rise_s=120),
    Effect(_labels("process_cpu_ratio", service="api"), 0, 25, rise_s=120),
    Effect(_labels("api_latency_seconds", service="api"), STEP, 20, rise_s=120),
    Effect(_labels("gateway_latency_seconds", service="gateway"), STEP, 20, rise_s=120),
]


@MAPS
@SEEDS
def test_a_traffic_surge_into_the_symptoms_entity_ranks_its_request_rate_first(
    seed: int, deps: DependencyMap | None
) -> None:
    top = _top(SURGE, "gateway_latency_seconds", seed, deps)
    assert top[0] == "http_requests_per_second"
    estate = _estate(seed, SURGE)
    causes = rank_causes(
        _by_name(estate, "gateway_latency_seconds"), estate, at_s=AT, dependencies=deps
    )
    assert causes[0].labels["service"] == "gateway"  # the entry point, not the api behind it
    assert causes[0].components["load"] > 0.5


CACHE = [
    # The cache stops answering; its misses go to the database, whose request rate
    # and connections climb in the same minute, then the api slows. The api takes no
    # more requests than before.
    Effect(_labels("http_requests_per_second", service="api"), 0, 0),
    Effect(_labels("redis_hit_ratio", service="redis"), 0, -40, rise_s=30),
    Effect(_labels("pg_requests_per_second", service="postgres"), -STEP, 30, rise_s=30),
    Effect(_labels("pg_connections_in_use", service="postgres"), STEP, 25, rise_s=30),
    Effect(_labels("api_latency_seconds", service="api"), 2 * STEP, 12),
]


@MAPS
@SEEDS
def test_a_cache_failure_ranks_the_hit_ratio_above_the_database_load_it_causes(
    seed: int, deps: DependencyMap | None
) -> None:
    estate = _estate(seed, CACHE)
    causes = rank_causes(
        _by_name(estate, "api_latency_seconds"), estate, at_s=AT, dependencies=deps
    )
    assert causes[0].metric == "redis_hit_ratio"
    entities = [c.entity for c in causes]
    assert entities.index("redis") < entities.index("postgres")


def test_the_database_load_of_a_cache_failure_counts_as_an_effect_not_as_load() -> None:
    estate = _estate(0, CACHE)
    causes = rank_causes(_by_name(estate, "api_latency_seconds"), estate, at_s=AT)
    by_metric = {c.metric: c for c in causes}
    # The api took no more requests: more database requests are its changed demand.
    assert by_metric["pg_requests_per_second"].components["load"] < 0


HOG = [
    # A runaway process on node-b: the process's CPU and its node's climb together.
    Effect(_labels("process_cpu_ratio", service="api", node="node-b"), 0, 30, rise_s=60),
    Effect(_labels("node_cpu_ratio", node="node-b"), 0, 30, rise_s=60),
    Effect(_labels("api_latency_seconds", service="api"), 2 * STEP, 15),
    Effect(_labels("gateway_latency_seconds", service="gateway"), 3 * STEP, 12),
]


@SEEDS
def test_with_a_map_a_runaway_process_ranks_above_the_node_its_cpu_adds_to(seed: int) -> None:
    estate = _estate(seed, HOG)
    causes = rank_causes(
        _by_name(estate, "gateway_latency_seconds"), estate, at_s=AT, dependencies=DEPS
    )
    entities = [c.entity for c in causes]
    assert entities.index("api") < entities.index("node-b")


def test_load_that_rises_after_the_symptom_is_no_cause() -> None:
    late = [
        Effect(_labels("api_latency_seconds", service="api"), 0, 20, rise_s=60),
        Effect(_labels("gateway_latency_seconds", service="gateway"), STEP, 20, rise_s=60),
        # Clients retry after the slowdown: more requests, 3 min later.
        Effect(_labels("http_requests_per_second", service="gateway"), 180, 20, rise_s=60),
    ]
    estate = _estate(0, late)
    causes = rank_causes(_by_name(estate, "gateway_latency_seconds"), estate, at_s=AT)
    by_metric = {c.metric: c for c in causes}
    assert causes[0].metric == "api_latency_seconds"
    assert by_metric["http_requests_per_second"].components.get("load", 0.0) <= 0.0
    assert T0 < AT


def _rise(onset_s: float) -> Evidence:
    return Evidence(
        baseline=100.0,
        baseline_scale=2.0,
        incident_value=160.0,
        peak_value=160.0,
        magnitude=30.0,
        direction="up",
        onset_s=onset_s,
        changed=True,
        kind="metric",
    )


@pytest.mark.parametrize(
    ("name", "symptom_is_rate", "origin"),
    [
        # A counter's rate averages over its window: a sample after a latency (a
        # gauge) that moved at once, the rise may still be where the load began.
        ("http_requests_total", False, True),
        # A gauge of requests, or a rate next to a symptom that is a rate too, lags
        # nothing: a rise a sample after the symptom came after it.
        ("http_requests_per_second", False, False),
        ("http_requests_total", True, False),
    ],
)
def test_a_counters_request_rate_may_start_a_sample_after_a_gauge_symptom(
    name: str, symptom_is_rate: bool, origin: bool
) -> None:
    roles = load_roles(
        [_labels(name, service="gateway")],
        [_rise(AT - 600.0 + STEP)],
        ["gateway"],
        symptom_entity="gateway",
        symptom_onset_s=AT - 600.0,
        step_s=STEP,
        dependencies=None,
        symptom_is_rate=symptom_is_rate,
    )
    assert (roles.origin[0] > 0.5) is origin
    assert roles.effect[0] is not origin
    # Two samples late is late for any rate.
    late = load_roles(
        [_labels(name, service="gateway")],
        [_rise(AT - 600.0 + 2 * STEP)],
        ["gateway"],
        symptom_entity="gateway",
        symptom_onset_s=AT - 600.0,
        step_s=STEP,
        dependencies=None,
        symptom_is_rate=symptom_is_rate,
    )
    assert late.origin[0] == 0.0


SURGE_COUNTED = [
    # The gateway takes twice the traffic, counted by a counter whose rate shows the
    # rise a sample after the gateway's latency (a gauge); the api's rate and CPU with it.
    Effect(_labels("http_requests_total", service="gateway"), STEP, 30, rise_s=60),
    Effect(_labels("http_requests_total", service="api"), STEP, 30, rise_s=60),
    Effect(_labels("process_cpu_ratio", service="api"), STEP, 25, rise_s=60),
    Effect(_labels("gateway_latency_seconds", service="gateway"), 0, 20, rise_s=60),
]


@MAPS
@SEEDS
def test_a_surge_whose_counted_rate_trails_the_latency_by_a_sample_still_ranks_first(
    seed: int, deps: DependencyMap | None
) -> None:
    estate = _estate(seed, SURGE_COUNTED)
    causes = rank_causes(
        _by_name(estate, "gateway_latency_seconds"), estate, at_s=AT, dependencies=deps
    )
    assert causes[0].metric == "http_requests_total"
    assert causes[0].labels["service"] == "gateway"
    assert causes[0].components["load"] > 0.5
