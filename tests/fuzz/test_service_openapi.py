"""Schemathesis against the service's own ``/openapi.json`` (WSGI, no server): every
documented operation, its examples, positive and negative cases, deterministic and
bounded, with and without credentials.

Zero 5xx, every answer documented (status, content type, schema), and every JSON
4xx names its problem instead of a generic "Bad Request".
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.runner import fuzz_schema
from tests.fuzz.support import AUTH, SEEDED_ID, header, names_the_problem

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def service_schema(fuzz_app: Flask) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


def test_with_credentials_every_answer_is_documented(service_schema: Any) -> None:
    def check(case: Case, response: Any) -> None:
        case.validate_response(response, checks=CHECKS)
        names_the_problem(case, response)

    report = fuzz_schema(
        service_schema, lambda case: case.call(headers=AUTH), check, max_examples=30
    )
    print(report.summary())
    assert not report.failures, "\n\n".join(report.failures)
    assert report.operations >= 19


def test_without_credentials_protected_operations_answer_401_or_403(service_schema: Any) -> None:
    def check(case: Case, response: Any) -> None:
        case.validate_response(response, checks=CHECKS)
        if case.operation.definition.raw.get("security") and case.path.startswith("/datasource"):
            # Grafana's proxy would turn a 401 into a bare 400: the reason comes with a 403.
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "unauthorized"
            assert "Authorization" in response.json()["message"]
        elif case.operation.definition.raw.get("security"):
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "unauthorized"
            assert header(response, "WWW-Authenticate") == 'Basic realm="plugin-backend"'
        else:
            assert response.status_code != 401, response.text

    report = fuzz_schema(service_schema, lambda case: case.call(), check, max_examples=3)
    print(report.summary())
    assert not report.failures, "\n\n".join(report.failures)
    assert report.statuses["401"] > 0
    assert report.statuses["403"] > 0


def test_the_stored_incident_pages_conform(service_schema: Any) -> None:
    # Random ids never hit the stored incident: check its answers too.
    for path in ("/incidents/{incident_id}.json", "/incidents/{incident_id}"):
        case = service_schema[path]["GET"].Case(path_parameters={"incident_id": SEEDED_ID})
        response = case.call(headers=AUTH)
        assert response.status_code == 200, response.text
        case.validate_response(response, checks=CHECKS)


def test_the_document_covers_every_route(fuzz_app: Flask) -> None:
    from plugin_backend.web.openapi import UNDOCUMENTED_ENDPOINTS

    paths = fuzz_app.test_client().get("/openapi.json").get_json()["paths"]
    documented = {op["operationId"] for item in paths.values() for op in item.values()}
    routed = {
        rule.endpoint.replace(".", "_")
        for rule in fuzz_app.url_map.iter_rules()
        if rule.endpoint not in UNDOCUMENTED_ENDPOINTS
    }
    assert routed == documented
