"""Fixtures for contract tests: real responses of every datasource endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.config import load_settings
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app
from tests.contracts.endpoint_calls import REQUESTS


@pytest.fixture(scope="module")
def responses() -> dict[str, tuple[str, Any]]:
    app = create_app(
        load_settings({}), source=DemoSource(seed=7), telemetry=Telemetry(CollectorRegistry())
    )
    client = app.test_client()
    out: dict[str, tuple[str, Any]] = {}
    for name, (path, body) in REQUESTS.items():
        response = client.post("/datasource" + path, json=body)
        assert response.status_code == 200, (name, response.get_json())
        out[name] = (path, response.get_json())
    return out
