"""The dependency map: parsing, validation, directions and series entities."""

from __future__ import annotations

from typing import Any

import pytest

from plugin_backend.errors import ConfigError
from plugin_backend.rca.dependencies import (
    DependencyMap,
    entity_candidates,
    load_dependency_map,
)

ESTATE: dict[str, Any] = {
    "services": {
        "frontend": {"depends_on": ["checkout"], "runs_on": ["node-a"]},
        "checkout": {
            "depends_on": ["payments", "postgres", "redis"],
            "runs_on": ["node-a", "node-b"],
            "aliases": ["checkout-api"],
        },
        "payments": {"runs_on": ["node-b"]},
        "postgres": {"runs_on": ["node-b"]},
        "redis": None,
    },
    "nodes": ["node-a", "node-b", "node-c"],
}


@pytest.fixture
def deps() -> DependencyMap:
    return load_dependency_map(ESTATE)


def test_directions(deps: DependencyMap) -> None:
    assert deps.depends_on("checkout") == {"payments", "postgres", "redis", "node-a", "node-b"}
    assert deps.dependents("postgres") == {"checkout"}
    assert deps.upstream("frontend") == {
        "checkout",
        "payments",
        "postgres",
        "redis",
        "node-a",
        "node-b",
    }
    assert deps.downstream("postgres") == {"checkout", "frontend"}
    assert deps.downstream("node-b") == {"checkout", "payments", "postgres", "frontend"}
    assert deps.downstream("frontend") == frozenset()
    assert deps.upstream("redis") == frozenset()
    assert "node-c" in deps
    assert deps.downstream("node-c") == frozenset()


def test_distance(deps: DependencyMap) -> None:
    assert deps.distance("checkout", "checkout") == 0
    assert deps.distance("frontend", "checkout") == 1
    assert deps.distance("frontend", "postgres") == 2
    assert deps.distance("postgres", "frontend") == 2
    assert deps.distance("redis", "payments") == 2  # siblings through checkout
    assert deps.distance("node-c", "frontend") is None
    assert deps.distance("nope", "frontend") is None
    assert deps.distance("nope", "nope") is None


def test_entity_of(deps: DependencyMap) -> None:
    assert deps.entity_of({"__name__": "x", "service": "checkout", "job": "demo"}) == "checkout"
    # job="demo" names no entity, so the node label decides
    assert deps.entity_of({"job": "demo", "node": "node-b"}) == "node-b"
    assert deps.entity_of({"job": "postgres"}) == "postgres"
    assert deps.entity_of({"instance": "node-a:9100"}) == "node-a"
    assert deps.entity_of({"host": "node-b"}) == "node-b"
    assert deps.entity_of({"service": "checkout-api"}) == "checkout"
    assert deps.entity_of({"service": "billing"}) is None
    # a custom label list
    assert deps.entity_of({"app": "redis"}, identifying_labels=("app",)) == "redis"
    assert deps.entity_of({"app": "redis"}) is None


def test_entity_candidates_order() -> None:
    labels = {"job": "demo", "service": "a", "instance": "h1:80", "node": "n1"}
    assert entity_candidates(labels) == ["a", "demo", "h1:80", "h1", "n1"]


def test_cycles_are_allowed() -> None:
    deps = load_dependency_map(
        {"services": {"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}}}
    )
    assert deps.upstream("a") == {"b"}
    assert deps.downstream("a") == {"b"}


def test_empty_map() -> None:
    deps = load_dependency_map({})
    assert deps.entities == frozenset()
    assert deps.entity_of({"service": "x"}) is None


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"service": {}}, "'service'"),
        ({"services": ["a"]}, "services"),
        ({"services": {"a": ["b"]}}, "services.a"),
        ({"services": {"a": {"depends": ["b"]}}}, "services.a.depends"),
        ({"services": {"a": {"depends_on": "b"}}}, r"services.a.depends_on"),
        ({"services": {"a": {"depends_on": ["b", 3]}}}, r"services.a.depends_on\[1\]"),
        ({"services": {"a": {"runs_on": [""]}}}, r"services.a.runs_on\[0\]"),
        ({"services": {"a": {"depends_on": ["a"]}}}, r"services.a.depends_on\[0\]"),
        (
            {"services": {"a": {"aliases": ["x"]}, "b": {"aliases": ["x"]}}},
            r"services.b.aliases\[0\]",
        ),
        ({"services": {"a": {"aliases": ["b"]}, "b": None}}, "alias 'b'"),
        ({"nodes": "node-a"}, "nodes"),
    ],
)
def test_validation_names_the_key_path(data: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError, match=path):
        load_dependency_map(data)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_dependency_map(["services"])  # type: ignore[arg-type]
