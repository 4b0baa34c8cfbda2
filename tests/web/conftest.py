from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.config import load_settings
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry(CollectorRegistry())


@pytest.fixture
def demo_app(telemetry):
    # Template notes: the LLM paths have their own tests (test_explain_llm.py).
    settings = load_settings(
        {"PLUGIN_BACKEND_MAX_BODY_BYTES": "4096", "PLUGIN_BACKEND_LLM_PROVIDER": "none"}
    )
    return create_app(settings, source=DemoSource(seed=7), telemetry=telemetry)


@pytest.fixture
def client(demo_app):
    return demo_app.test_client()
