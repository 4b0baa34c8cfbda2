"""An app over the demo estate and a temp SQLite store, with auth configured, for the
fuzz tests (schemathesis, WSGI: no server, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.config import load_settings
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Incident, incident_id
from plugin_backend.store import Store
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Bounded work per request: fuzzed ranges and queries stay cheap on two CPUs.
ENV = {
    "PLUGIN_BACKEND_LLM_PROVIDER": "none",
    "PLUGIN_BACKEND_API_TOKEN": TOKEN,
    "PLUGIN_BACKEND_BASIC_AUTH_USER": "grafana",
    "PLUGIN_BACKEND_BASIC_AUTH_PASSWORD": "fuzz-password",
    "PLUGIN_BACKEND_MAX_BODY_BYTES": "65536",
    "PLUGIN_BACKEND_MAX_POINTS_PER_SERIES": "500",
    "PLUGIN_BACKEND_MAX_SCORED_SERIES": "5",
    "PLUGIN_BACKEND_RCA_BUDGET": "20",
}
SEEDED_AT_S = 1_767_243_600.0  # 2026-01-01T05:00:00Z: a demo incident (pool exhaustion)
SEEDED_QUERY = 'http_request_duration_seconds_p99{service="checkout"}'
SEEDED_KEY = f"fuzz:{SEEDED_QUERY}:{SEEDED_AT_S:.0f}"
SEEDED_ID = incident_id(SEEDED_KEY)


@pytest.fixture(scope="session")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    path: Path = tmp_path_factory.mktemp("fuzz") / "store.db"
    store = Store(f"sqlite:///{path}")
    source = DemoSource(seed=7)
    app = create_app(
        load_settings(ENV), source=source, telemetry=Telemetry(CollectorRegistry()), store=store
    )
    store.save_incident(seeded_incident(source), None, now_s=SEEDED_AT_S + 3600)
    return app


def seeded_incident(source: DemoSource) -> Incident:
    """One stored incident with a real root-cause report, so its pages render fully."""
    report = ExplainService(source, budget=20).explain(SEEDED_QUERY, SEEDED_AT_S + 600, 1800.0)
    return Incident(
        id=SEEDED_ID,
        key=SEEDED_KEY,
        origin="rule",
        title="checkout latency",
        query=SEEDED_QUERY,
        series=report.symptom["series"],
        start_s=SEEDED_AT_S,
        end_s=SEEDED_AT_S + 1800,
        status="closed",
        rule="checkout-latency",
        labels=report.symptom["labels"],
        peak_score=4.2,
        direction="up",
        note=report.summary,
        cause=report.causes[0].series if report.causes else None,
        report=report.to_dict(),
    )
