"""One place that turns exceptions into JSON answers.

Body: ``{"message": ..., "error": {"code": ..., "message": ...}}`` — Grafana
shows the top-level ``message``; the plugin's "Save & test" reads ``error``.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from plugin_backend.errors import BackendError
from plugin_backend.web.http import json_response

__all__ = ["PLUGIN_ROOT_PATHS", "error_body", "register_error_handlers", "wrong_url_message"]

log = logging.getLogger(__name__)


#: Where the simpod plugin sends its requests, relative to the datasource URL.
PLUGIN_ROOT_PATHS = frozenset(
    {
        "/metrics",
        "/metric-payload-options",
        "/query",
        "/variable",
        "/tag-keys",
        "/tag-values",
        "/search",
        "/annotations",
    }
)


def wrong_url_message() -> str:
    """What to tell the plugin when its datasource URL lacks ``/datasource``."""
    root = request.host_url.rstrip("/")
    return (
        f"this is the backend's root, not its datasource protocol: set the Grafana "
        f"datasource's URL to {root}/datasource (with the /datasource suffix)"
    )


def error_body(code: str, message: str) -> dict[str, object]:
    return {"message": message, "error": {"code": code, "message": message}}


def register_error_handlers(app: Flask, *, max_body_bytes: int) -> None:
    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError) -> Response:
        status = exc.http_status
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(
            level, "request failed: %s", exc.message, extra={"code": exc.code, "status": status}
        )
        return json_response(error_body(exc.code, exc.message), status)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_: RequestEntityTooLarge) -> Response:
        message = (
            f"request body is larger than {max_body_bytes} bytes (PLUGIN_BACKEND_MAX_BODY_BYTES)"
        )
        return json_response(error_body("payload_too_large", message), 413)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status in (404, 405) and request.path.rstrip("/") in PLUGIN_ROOT_PATHS:
            # the plugin calling <URL>/query with a datasource URL that lacks /datasource
            return json_response(error_body("wrong_datasource_url", wrong_url_message()), 404)
        code = (exc.name or "http_error").lower().replace(" ", "_")
        return json_response(error_body(code, exc.description or exc.name), status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        message = f"internal error ({type(exc).__name__}); see the service log"
        return json_response(error_body("internal_error", message), 500)
