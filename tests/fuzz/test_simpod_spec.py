"""Schemathesis against the plugin's own OpenAPI spec (../shared/contracts), base path
``/datasource``, when the spec is present.

Zero 5xx, and responses valid against the spec up to the deviations that
tests/contracts/test_simpod_spec.py pins (reused here, not restated). The spec lists
only 200 answers, so the status-code check is left out: our 400s that name the bad
field are deliberate (and the error-body check below holds them to that).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
import yaml
from flask import Flask
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.contracts.test_simpod_spec import DEVIATIONS, SPEC_PARTS, SPEC_PATH, response_schema
from tests.fuzz.runner import fuzz_schema
from tests.fuzz.support import AUTH, names_the_problem
from tests.needs import require_shared


@pytest.fixture(scope="module", autouse=True)
def _needs_the_spec() -> None:
    require_shared(*SPEC_PARTS)


CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


def spec_with_pinned_deviations() -> dict[str, Any]:
    """The spec, each 200 schema that a deviation patches replaced by the patched one."""
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    for path, patches in DEVIATIONS.items():
        schema = response_schema(path, spec)
        for patch in patches:
            schema = patch(schema)
        operation = next(iter(spec["paths"][path].values()))
        operation["responses"]["200"]["content"]["application/json"]["schema"] = schema
    spec["servers"] = [{"url": "/datasource"}]
    return spec


@pytest.fixture(scope="module")
def simpod_schema(fuzz_app: Flask) -> Any:
    schema = schemathesis.openapi.from_dict(spec_with_pinned_deviations())
    schema.app = fuzz_app
    return schema


def test_the_plugin_spec_holds_up_to_the_pinned_deviations(simpod_schema: Any) -> None:
    def check(case: Case, response: Any) -> None:
        case.validate_response(response, checks=CHECKS)
        names_the_problem(case, response)

    report = fuzz_schema(
        simpod_schema, lambda case: case.call(headers=AUTH), check, max_examples=30
    )
    print(report.summary())
    assert not report.failures, "\n\n".join(report.failures)
    assert report.operations == 7
    assert report.statuses["200"] > 0


def test_the_plugins_real_requests_answer_per_the_spec(simpod_schema: Any) -> None:
    # Random kinds are refused (400); the requests the plugin really sends reach the
    # time-series, table and anomaly answers, checked by schemathesis the same way.
    from tests.contracts.endpoint_calls import REQUESTS

    spec_paths = {path for path, _ in REQUESTS.values()} & set(simpod_schema.raw_schema["paths"])
    assert "/query" in spec_paths
    for name, (path, body) in REQUESTS.items():
        if path not in spec_paths:
            continue  # legacy /search and /annotations: not in the 0.6.x spec
        case = simpod_schema[path]["POST"].Case(body=body, media_type="application/json")
        response = case.call(headers=AUTH)
        assert response.status_code == 200, (name, response.text)
        case.validate_response(response, checks=CHECKS)
