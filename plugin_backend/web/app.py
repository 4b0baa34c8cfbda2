"""The Flask app factory (composition root of the web process)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request

from plugin_backend.bootstrap import (
    build_detection,
    build_explain,
    build_grafana,
    build_llm,
    build_source,
    build_store,
)
from plugin_backend.config import Settings, load_settings
from plugin_backend.datasource.parse import QueryLimits
from plugin_backend.detection import DetectionService
from plugin_backend.errors import StoreError
from plugin_backend.health import (
    HealthService,
    grafana_dependency,
    llm_dependency,
    source_dependency,
    store_dependency,
)
from plugin_backend.incident_review import IncidentReview
from plugin_backend.ports import SeriesSource
from plugin_backend.service import DatasourceService
from plugin_backend.store import Store
from plugin_backend.telemetry import Telemetry
from plugin_backend.web.alerts_api import alerts_blueprint
from plugin_backend.web.auth import install_auth
from plugin_backend.web.datasource_api import datasource_blueprint
from plugin_backend.web.errors import register_error_handlers
from plugin_backend.web.explain_api import explain_blueprint
from plugin_backend.web.http import CollapseSlashes
from plugin_backend.web.limits import install_request_limits
from plugin_backend.web.openapi import openapi_blueprint
from plugin_backend.web.ops import ops_blueprint
from plugin_backend.web.pages import pages_blueprint

if TYPE_CHECKING:
    from plugin_backend.adapters.grafana import GrafanaClient

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# Metric label values must stay a small fixed set, whatever clients send.
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})


def create_app(
    settings: Settings | None = None,
    *,
    source: SeriesSource | None = None,
    telemetry: Telemetry | None = None,
    store: Store | None = None,
) -> Flask:
    """Build the app. Tests inject a source, a store and a telemetry with a fresh registry."""
    settings = settings if settings is not None else load_settings()
    telemetry = telemetry if telemetry is not None else Telemetry()
    source = source if source is not None else build_source(settings, telemetry)
    store = store if store is not None else build_store(settings)
    try:  # a no-op once `serve` migrated; direct uses (tests, flask run) get a schema too
        store.migrate()
    except StoreError as exc:  # the datasource still works; store endpoints answer 503
        log.error("store unavailable: %s", exc.message)

    app = Flask(__name__)
    # Every path answers with and without its trailing slash, and never redirects: Grafana
    # hands a datasource's redirect to the browser, which then calls us without the token.
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    app.wsgi_app = CollapseSlashes(app.wsgi_app)  # type: ignore[method-assign]
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        READINESS_TIMEOUT_S=settings.readiness_timeout_s,
        JSON_SORT_KEYS=False,
    )
    app.extensions["plugin_backend.settings"] = settings
    app.extensions["plugin_backend.telemetry"] = telemetry
    app.extensions["plugin_backend.store"] = store
    detection = build_detection(settings, source, telemetry)
    app.extensions["plugin_backend.datasource"] = DatasourceService(
        source, detection, store, default_rate_control=settings.default_rate_control
    )
    app.extensions["plugin_backend.limits"] = QueryLimits(
        max_targets=settings.max_targets,
        max_points_per_series=settings.max_points_per_series,
        max_promql_length=settings.max_promql_length,
    )
    # deploy annotations count as change events when Grafana is configured
    grafana = build_grafana(settings)
    app.extensions["plugin_backend.explain"] = build_explain(
        settings, source, telemetry, events=grafana
    )
    _install_page_services(
        app, settings, source=source, store=store, detection=detection, grafana=grafana
    )
    app.register_blueprint(ops_blueprint)
    app.register_blueprint(explain_blueprint)
    app.register_blueprint(alerts_blueprint)
    app.register_blueprint(datasource_blueprint)
    app.register_blueprint(pages_blueprint)
    app.register_blueprint(openapi_blueprint)
    register_error_handlers(app, max_body_bytes=settings.max_body_bytes)
    install_request_limits(app, settings)
    _instrument(app, telemetry)
    install_auth(app, settings, telemetry)  # after the timer: refusals are measured too
    return app


def _install_page_services(
    app: Flask,
    settings: Settings,
    *,
    source: SeriesSource,
    store: Store,
    detection: DetectionService,
    grafana: GrafanaClient | None,
) -> None:
    """What the human pages read: incidents, the health of each dependency, links."""
    grafana_url = str(settings.grafana_url).rstrip("/") if settings.grafana_url else None
    app.extensions["plugin_backend.grafana_url"] = grafana_url
    app.extensions["plugin_backend.advertised_url"] = settings.advertised_url()
    app.extensions["plugin_backend.incident_review"] = IncidentReview(store, source, detection)
    llm = build_llm(settings)
    llm_target = f"provider {settings.llm_provider}, {llm.models_url}" if llm else ""
    app.extensions["plugin_backend.health"] = HealthService(
        [
            source_dependency(source, settings.readiness_timeout_s),
            grafana_dependency(grafana_url, grafana),
            llm_dependency(settings.llm_provider, llm, llm_target),
            store_dependency(
                store,
                grafana_configured=grafana_url is not None,
                retention_days=settings.retention_days,
            ),
        ]
    )


def _instrument(app: Flask, telemetry: Telemetry) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = g.get("request_started")
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            method = request.method if request.method in _KNOWN_METHODS else "other"
            telemetry.observe_request(
                endpoint, method, response.status_code, time.perf_counter() - started
            )
        return response
