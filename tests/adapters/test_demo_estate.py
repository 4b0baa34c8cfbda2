"""One shop, two simulations: the built-in demo source and the compose stack's exporter
model the estate of adapters/demo_estate.py (calls, placement, metric names), so one
dashboard, one set of watch rules and one dependency map serve both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from plugin_backend import demoapp
from plugin_backend.adapters.demo import DemoSource
from plugin_backend.adapters.demo_estate import NODES, SERVICES, SHARED_METRICS, depends_on
from plugin_backend.types import TimeRange

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
RANGE = TimeRange(T0, T0 + 3600.0)
PLACED = {(s.name, node) for s in SERVICES for node in s.nodes}


@pytest.fixture(scope="module")
def source() -> DemoSource:
    return DemoSource(seed=7)


@pytest.fixture(scope="module")
def exported() -> list[tuple[str, dict[str, str]]]:
    """(sample name, labels) of the exporter's /metrics after one tick."""
    app = demoapp.DemoApp(seed=1, clock=lambda: T0)
    app.tick()
    families = text_string_to_metric_families(app.exposition().decode())
    return [(s.name, s.labels) for family in families for s in family.samples]


def test_both_simulations_export_the_shared_metric_names(
    source: DemoSource, exported: list[tuple[str, dict[str, str]]]
) -> None:
    assert set(SHARED_METRICS) <= set(source.label_values("__name__", time_range=RANGE))
    assert set(SHARED_METRICS) <= {name for name, _ in exported}


def test_the_demo_source_runs_every_instance_where_the_estate_places_it(
    source: DemoSource,
) -> None:
    up = source.series(["up"], RANGE)
    instances = {s.name: set(s.instances) for s in SERVICES}
    assert {(lab["service"], lab["instance"]) for lab in up} == {
        (name, i) for name, names in instances.items() for i in names
    }
    cpu = source.series(["process_cpu_usage_ratio"], RANGE)
    assert {(lab["service"], lab["node"]) for lab in cpu} == PLACED
    assert set(source.label_values("node", time_range=RANGE)) == set(NODES)


def test_the_exporter_runs_the_shop_but_payments_on_the_estates_nodes(
    exported: list[tuple[str, dict[str, str]]],
) -> None:
    cpu = {
        (lab["service"], lab["node"]) for name, lab in exported if name == "process_cpu_usage_ratio"
    }
    assert {service for service, _ in cpu} == {s.name for s in SERVICES} - {"payments"}
    assert cpu <= PLACED


def test_the_stacks_dependency_map_is_the_estates_call_graph() -> None:
    services = yaml.safe_load((ROOT / "deploy" / "dependencies.yaml").read_text())["services"]
    assert set(services) == set(demoapp.SERVICES)
    for name, spec in services.items():
        calls = [callee for callee in depends_on(name) if callee in services]
        assert spec.get("depends_on", []) == calls, name
        assert {(name, node) for node in spec["runs_on"]} <= PLACED, name
