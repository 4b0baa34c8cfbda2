"""Operational endpoints: liveness, readiness, and the Prometheus exposition."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from plugin_backend.errors import UpstreamError
from plugin_backend.service import DatasourceService
from plugin_backend.telemetry import Telemetry
from plugin_backend.web.errors import error_body
from plugin_backend.web.http import json_response

__all__ = ["ops_blueprint"]

ops_blueprint = Blueprint("ops", __name__)


@ops_blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Never touches dependencies."""
    return json_response({"status": "ok"})


@ops_blueprint.get("/readyz")
def readyz() -> Response:
    """Readiness: a real query to the series source succeeds within a short timeout."""
    service: DatasourceService = current_app.extensions["plugin_backend.datasource"]
    try:
        service.check_ready(current_app.config["READINESS_TIMEOUT_S"])
    except UpstreamError as exc:
        body = error_body(exc.code, exc.message)
        body["status"] = "unavailable"
        return json_response(body, 503)
    return json_response({"status": "ok", "source": service.source.kind})


@ops_blueprint.get("/metrics")
def metrics() -> Response:
    telemetry: Telemetry = current_app.extensions["plugin_backend.telemetry"]
    payload, content_type = telemetry.exposition()
    return Response(payload, 200, content_type=content_type)
