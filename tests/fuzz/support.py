"""What the fuzz tests share: the app they fuzz (demo estate, temp SQLite store, auth
configured, one stored incident), its credentials, and the error-body check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import default_exceptions
from werkzeug.http import HTTP_STATUS_CODES

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
# Werkzeug's stock names and descriptions ("Bad Request", "The browser (or proxy)
# sent a request that this server could not understand."): a catch-all, not a reason.
GENERIC = {text.strip().lower() for text in HTTP_STATUS_CODES.values()} | {
    str(exc.description).strip().lower() for exc in default_exceptions.values()
}
SEEDED_AT_S = 1_767_243_600.0  # 2026-01-01T05:00:00Z: a demo incident (pool exhaustion)
SEEDED_QUERY = 'http_request_duration_seconds_p99{service="checkout"}'
SEEDED_KEY = f"fuzz:{SEEDED_QUERY}:{SEEDED_AT_S:.0f}"
SEEDED_ID = incident_id(SEEDED_KEY)


def build_app(store_path: Path) -> Flask:
    """The fuzzed app; it answers over WSGI (no server, no network)."""
    store = Store(f"sqlite:///{store_path}")
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


def header(response: Any, name: str) -> str:
    """One header of a schemathesis response (its names are lower case, values lists)."""
    values = {k.lower(): v for k, v in response.headers.items()}.get(name.lower(), [""])
    return str(values[0]) if isinstance(values, list) else str(values)


def names_the_problem(_case: Any, response: Any) -> None:
    """A JSON 4xx says what is wrong: a non-empty message that is no stock phrase."""
    content_type = header(response, "Content-Type")
    if not (400 <= response.status_code < 500) or not content_type.startswith("application/json"):
        return
    body = response.json()
    message = body.get("message") if isinstance(body, dict) else None
    assert isinstance(message, str), body
    assert message.strip(), body
    assert message.strip().lower() not in GENERIC, body
    assert body["error"]["code"], body
