"""``POST /api/v1/explain``: rank the likely root causes of a symptom.

The request names the symptom only; the series source is always the configured
one (a request can never choose an upstream URL).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from pydantic import BaseModel, ConfigDict, Field

from plugin_backend.datasource.parse import parse_body
from plugin_backend.explain import ExplainService
from plugin_backend.timeparse import parse_duration_s, parse_time_s
from plugin_backend.web.http import json_body, json_response
from plugin_backend.web.limits import heavy_request

__all__ = ["explain_blueprint"]

explain_blueprint = Blueprint("explain", __name__, url_prefix="/api/v1")


class ExplainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=20_000)
    at: str | float
    window: str | float = "30m"


@explain_blueprint.post("/explain")
def explain() -> Response:
    body = parse_body(ExplainBody, json_body())
    at_s = parse_time_s(body.at, what="at")
    window_s = parse_duration_s(body.window, what="window")
    service: ExplainService = current_app.extensions["plugin_backend.explain"]
    with heavy_request():
        report = service.explain(body.query, at_s, window_s)
    return json_response(report.to_dict())
