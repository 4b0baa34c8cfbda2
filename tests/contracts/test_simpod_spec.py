"""Responses checked against the plugin's own OpenAPI spec (../shared/contracts), when present.

The spec is wrong in places; each deviation we follow (because the plugin
accepts it, see ../shared/docs/architecture.md) is pinned by a named test that
proves the spec rejects our real answer for exactly that reason.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from tests.contracts.endpoint_calls import REQUESTS
from tests.needs import require_shared, shared_path

SPEC_PARTS = ("contracts", "simpod-json-datasource-openapi.yaml")
SPEC_PATH = shared_path(*SPEC_PARTS)


@pytest.fixture(scope="module", autouse=True)
def _needs_the_spec() -> None:
    require_shared(*SPEC_PARTS)


def _spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def _inline_refs(node: Any, spec: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return _inline_refs(target, spec)
        return {k: _inline_refs(v, spec) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, spec) for v in node]
    return node


def response_schema(path: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = spec or _spec()
    operation = next(iter(spec["paths"][path].values()))
    content = operation["responses"]["200"].get("content")
    if content is None:  # e.g. /tag-values: "A valid response", no schema (golden covers it)
        return {}
    return _inline_refs(content["application/json"]["schema"], spec)


# --- the deviations, each a patch to the spec's schema -------------------------------


def _rows_are_arrays(schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    table = schema["items"]["anyOf"][1]
    table["properties"]["rows"]["items"] = {
        "type": "array",
        "items": {"anyOf": [{"type": "string"}, {"type": "number"}], "nullable": True},
    }
    return schema


def _datapoint_values_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    pair = schema["items"]["anyOf"][0]["properties"]["datapoints"]["items"]
    pair["items"] = {"type": "number", "nullable": True}
    return schema


DEVIATIONS = {"/query": [_rows_are_arrays, _datapoint_values_nullable]}


def _errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    return [e.message for e in OAS30Validator(schema).iter_errors(instance)]


# /search and /annotations are legacy endpoints the 0.6.x spec no longer lists.
CURRENT = sorted(n for n, (path, _) in REQUESTS.items() if path not in ("/search", "/annotations"))


@pytest.mark.parametrize("name", CURRENT)
def test_responses_match_the_spec_up_to_the_pinned_deviations(responses, name):
    path, body = responses[name]
    schema = response_schema(path)
    for patch in DEVIATIONS.get(path, []):
        schema = patch(schema)
    assert _errors(body, schema) == []


def test_deviation_table_rows_are_arrays_of_arrays(responses):
    _, table = responses["query-table"]
    errors = _errors(table, response_schema("/query"))
    assert errors, "the spec lists rows as flat strings/numbers; the plugin reads arrays of arrays"
    assert _errors(table, _rows_are_arrays(response_schema("/query"))) == []


def test_deviation_datapoints_may_hold_null():
    # A missing Prometheus point (NaN) is sent as null: the plugin draws a gap.
    with_gap = [{"target": "x", "datapoints": [[1.0, 1_000], [None, 2_000]]}]
    assert _errors(with_gap, response_schema("/query"))
    assert _errors(with_gap, _datapoint_values_nullable(response_schema("/query"))) == []


def test_deviation_variable_items_carry_both_spellings(responses):
    # The spec requires text/value; the plugin's parser reads __text/__value. We send both.
    _, values = responses["variable"]
    assert _errors(values, response_schema("/variable")) == []
    assert all({"__text", "__value", "text", "value"} <= set(v) for v in values)


def test_the_spec_copy_lists_the_endpoints_we_serve():
    assert {
        "/",
        "/metrics",
        "/metric-payload-options",
        "/query",
        "/variable",
        "/tag-keys",
        "/tag-values",
    } <= set(_spec()["paths"])
