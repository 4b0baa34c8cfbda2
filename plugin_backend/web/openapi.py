"""``GET /openapi.json``: the OpenAPI 3.1 document of this service's own endpoints.

Request bodies are the JSON schemas of the pydantic models the views validate with
(``model_json_schema``); responses are written out here, as the views and
``web/errors.py`` answer them. The document lists only the routes the app really
has, and ``security`` (plus the 401 answer) only where ``web/auth.py`` asks for
credentials under the running settings. OpenAPI 3.1 because its schema dialect is
the JSON Schema 2020-12 that pydantic writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel

from plugin_backend import __version__
from plugin_backend.alerts import _Payload as AlertWebhookBody
from plugin_backend.config import Settings
from plugin_backend.datasource.catalog import EXAMPLE_QUERY, KINDS
from plugin_backend.datasource.wire import (
    AnnotationQueryBody,
    MetricPayloadOptionsBody,
    MetricsBody,
    QueryBody,
    SearchBody,
    TagValuesBody,
    VariableBody,
)
from plugin_backend.incidents import IncidentOrigin, IncidentStatus
from plugin_backend.web.auth import PROXIED_BLUEPRINTS, SIGNED_ENDPOINTS, requires_auth
from plugin_backend.web.explain_api import ExplainBody
from plugin_backend.web.http import json_response

__all__ = ["UNDOCUMENTED_ENDPOINTS", "build_document", "openapi_blueprint"]

openapi_blueprint = Blueprint("openapi", __name__)

#: Routes the document leaves out on purpose: static files, and the pages' catch-all
#: that answers the HTML 404 for any other path under ``/incidents/``.
UNDOCUMENTED_ENDPOINTS = frozenset({"static", "pages.incident_not_found"})
_CACHE_KEY = "plugin_backend.openapi"
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

JSON = "application/json"
HTML = "text/html"


@openapi_blueprint.get("/openapi.json")
def document() -> Response:
    """This service's OpenAPI document (open: it holds no secrets)."""
    doc = current_app.extensions.get(_CACHE_KEY)
    if doc is None:
        doc = build_document(current_app)
        current_app.extensions[_CACHE_KEY] = doc
    return json_response(doc)


def build_document(app: Flask) -> dict[str, Any]:
    """The document for ``app``'s routes under its settings (auth, webhook signature)."""
    settings: Settings = app.extensions["plugin_backend.settings"]
    components = _Components()
    auth_enabled = bool(app.extensions.get("plugin_backend.auth_enabled", False))
    security = _security(settings) if auth_enabled else []
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        spec = OPERATIONS.get(rule.endpoint)
        if spec is None:
            continue
        operation = spec.build(components)
        operation["operationId"] = rule.endpoint.replace(".", "_")
        signed = rule.endpoint in SIGNED_ENDPOINTS and settings.webhook_secret is not None
        protected = auth_enabled and requires_auth(
            rule.endpoint, metrics_require_auth=settings.metrics_require_auth
        )
        if protected:
            operation["security"] = security
        if signed:
            operation.setdefault("parameters", []).extend(_signature_parameters(settings))
        if (protected or signed) and rule.endpoint.split(".")[0] in PROXIED_BLUEPRINTS:
            operation["responses"]["403"] = {"$ref": "#/components/responses/Refused"}
        elif protected or signed:
            operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
        operation["responses"] = dict(sorted(operation["responses"].items()))
        paths.setdefault(_RULE_ARGUMENT.sub(r"{\1}", rule.rule), {})[spec.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "plugin-backend",
            "version": __version__,
            "description": (
                "AIOps backend for Grafana: the simpod-json-datasource protocol under "
                "/datasource, root-cause explanations, alert webhooks, incident pages and "
                "operational endpoints. Errors are JSON "
                '{"message", "error": {"code", "message"}} unless noted.'
            ),
        },
        "servers": [{"url": settings.advertised_url()}],
        "paths": paths,
        "components": components.render(),
    }


def _security(settings: Settings) -> list[dict[str, list[str]]]:
    """Either scheme that is configured satisfies an operation."""
    out: list[dict[str, list[str]]] = []
    if settings.api_token is not None:
        out.append({"bearerAuth": []})
    if settings.basic_auth_user is not None:
        out.append({"basicAuth": []})
    return out


def _signature_parameters(settings: Settings) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": settings.webhook_signature_header,
            "in": "header",
            "required": True,
            "description": "Hex HMAC-SHA256 of the raw body (or of timestamp:body), keyed "
            "with PLUGIN_BACKEND_WEBHOOK_SECRET, as Grafana's webhook contact point signs.",
            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        }
    ]
    if settings.webhook_timestamp_header is not None:
        params.append(
            {
                "name": settings.webhook_timestamp_header,
                "in": "header",
                "required": True,
                "description": "Unix time in seconds of the signature; older than 5 min: 401.",
                "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            }
        )
    return params


# == components ==========================================================================


@dataclass
class _Components:
    """Schemas collected while the operations are built (pydantic ``$defs`` included)."""

    schemas: dict[str, Any] = field(default_factory=lambda: dict(_SCHEMAS))

    def model(self, model: type[BaseModel], name: str | None = None) -> dict[str, str]:
        """Register ``model`` (and the models it uses) and return a ``$ref`` to it."""
        name = name or _public(model.__name__)
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        defs = schema.pop("$defs", {})
        renames = {key: _public(key) for key in defs if _public(key) != key}
        for key, sub in defs.items():
            self._add(renames.get(key, key), _renamed(sub, renames))
        self._add(name, _renamed(schema, renames))
        return ref(name)

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas named {name!r} in the OpenAPI document")

    def render(self) -> dict[str, Any]:
        return {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <PLUGIN_BACKEND_API_TOKEN>",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "PLUGIN_BACKEND_BASIC_AUTH_USER / _PASSWORD",
                },
            },
            "schemas": dict(sorted(self.schemas.items())),
            "responses": _RESPONSES,
        }


def _public(name: str) -> str:
    """A component name for a model class (private models lose their underscore)."""
    return name.lstrip("_")


def _renamed(node: Any, renames: dict[str, str]) -> Any:
    if not renames:
        return node
    if isinstance(node, dict):
        out = {k: _renamed(v, renames) for k, v in node.items()}
        target = out.get("$ref")
        if isinstance(target, str):
            prefix, _, name = target.rpartition("/")
            out["$ref"] = f"{prefix}/{renames.get(name, name)}"
        return out
    if isinstance(node, list):
        return [_renamed(v, renames) for v in node]
    return node


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(required: Iterable[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_LABELS = {"type": "object", "additionalProperties": _STR}

_EVIDENCE = _object(
    (
        "baseline",
        "baseline_scale",
        "incident_value",
        "peak_value",
        "magnitude",
        "direction",
        "onset_s",
        "changed",
        "kind",
        "sustained",
        "event",
    ),
    baseline=_NUM_OR_NULL,
    baseline_scale=_NUM_OR_NULL,
    incident_value=_NUM_OR_NULL,
    peak_value=_NUM_OR_NULL,
    magnitude=_NUM_OR_NULL,
    direction={"enum": ["up", "down"]},
    onset_s=_NUM_OR_NULL,
    changed=_BOOL,
    kind={"enum": ["metric", "change_event"]},
    sustained=_NUM_OR_NULL,
    event={"enum": ["appeared", "disappeared", None]},
)

_SCHEMAS: dict[str, Any] = {
    "Error": {
        **_object(
            ("message", "error"),
            message={"type": "string", "minLength": 1, "description": "shown by Grafana"},
            error=_object(
                ("code", "message"),
                code={"type": "string", "description": "stable machine-readable code"},
                message={"type": "string", "minLength": 1},
            ),
        ),
        "description": "Every JSON error; /readyz adds status: unavailable.",
    },
    "TimeSeries": {
        **_object(
            ("target", "datapoints"),
            target=_STR,
            datapoints=_array(
                {
                    "type": "array",
                    "description": "[value or null (a gap), epoch milliseconds]",
                    "prefixItems": [_NUM_OR_NULL, _NUM],
                    "minItems": 2,
                    "maxItems": 2,
                }
            ),
        ),
        "additionalProperties": False,
    },
    "Table": {
        **_object(
            ("type", "columns", "rows"),
            type={"const": "table"},
            columns=_array(
                _object(("text", "type"), text=_STR, type={"enum": ["time", "string", "number"]})
            ),
            rows=_array(_array({"type": ["string", "number", "null"]})),
        ),
        "additionalProperties": False,
    },
    "Evidence": _EVIDENCE,
    "Cause": _object(
        (
            "series",
            "metric",
            "labels",
            "score",
            "onset",
            "lead_s",
            "entity",
            "components",
            "evidence",
        ),
        series=_STR,
        metric=_STR,
        labels=_LABELS,
        score=_NUM_OR_NULL,
        onset={**_NUM_OR_NULL, "description": "Unix seconds"},
        lead_s=_NUM_OR_NULL,
        entity=_STR_OR_NULL,
        components={"type": "object", "additionalProperties": _NUM_OR_NULL},
        evidence=ref("Evidence"),
    ),
    "RootCauseReport": _object(
        ("symptom", "causes", "summary", "candidates", "llm"),
        symptom=_object(
            ("query", "series", "labels", "at", "window_s", "evidence"),
            query=_STR,
            series=_STR,
            labels=_LABELS,
            at=_NUM,
            window_s=_NUM,
            evidence=ref("Evidence"),
        ),
        causes=_array(ref("Cause")),
        summary=_STR,
        candidates=_INT,
        llm=_object(
            ("provider", "model", "latency_s", "fallback", "reason"),
            provider=_STR,
            model=_STR_OR_NULL,
            latency_s=_NUM,
            fallback=_BOOL,
            reason=_STR_OR_NULL,
            prompt_version=_STR_OR_NULL,
            prompt_tokens={"type": ["integer", "null"]},
            completion_tokens={"type": ["integer", "null"]},
        ),
    ),
    "Incident": _object(
        ("id", "key", "origin", "title", "query", "series", "start_s", "end_s", "status"),
        id=_STR,
        key=_STR,
        origin={"enum": list(get_args(IncidentOrigin))},
        title=_STR,
        query=_STR,
        series=_STR,
        start_s=_NUM,
        end_s=_NUM,
        status={"enum": list(get_args(IncidentStatus))},
        rule=_STR_OR_NULL,
        labels=_LABELS,
        peak_score=_NUM_OR_NULL,
        direction=_STR_OR_NULL,
        dashboard_uid=_STR_OR_NULL,
        panel_id={"type": ["integer", "null"]},
        note=_STR,
        cause=_STR_OR_NULL,
        report={"type": ["object", "null"]},
        created_s=_NUM,
        updated_s=_NUM,
    ),
}

_ERROR_CONTENT = {JSON: {"schema": ref("Error")}}
_HTML_CONTENT = {HTML: {"schema": _STR}}
_RESPONSES: dict[str, Any] = {
    "BadRequest": {
        "description": "Malformed JSON, a missing or invalid field (named in the message)",
        "content": _ERROR_CONTENT,
    },
    "Refused": {
        "description": "No or wrong credentials on the datasource protocol: 403 with the reason, "
        "because Grafana's proxy turns a datasource's 401 into a bare 400",
        "content": _ERROR_CONTENT,
    },
    "Unauthorized": {
        "description": "No or wrong credentials, or a bad webhook signature",
        "headers": {
            "WWW-Authenticate": {
                "description": 'Basic realm="plugin-backend" when basic auth is configured, '
                "else Bearer",
                "schema": _STR,
            }
        },
        "content": _ERROR_CONTENT,
    },
    "NotFound": {"description": "No such incident", "content": _ERROR_CONTENT},
    "PayloadTooLarge": {
        "description": "Body over PLUGIN_BACKEND_MAX_BODY_BYTES",
        "content": _ERROR_CONTENT,
    },
    "Unprocessable": {
        "description": "A limit (points, targets, PromQL length), too little history, or "
        "the series source could not execute the query",
        "content": _ERROR_CONTENT,
    },
    "BadGateway": {"description": "The series source failed", "content": _ERROR_CONTENT},
    "StoreUnavailable": {"description": "The store failed", "content": _ERROR_CONTENT},
    "TooManyRequests": {
        "description": "Too many anomaly/root-cause requests at once in this worker "
        "(PLUGIN_BACKEND_MAX_CONCURRENT_HEAVY): retry shortly",
        "content": _ERROR_CONTENT,
    },
    "GatewayTimeout": {
        "description": "The series source timed out, or the request's time budget ran out",
        "content": _ERROR_CONTENT,
    },
}
_ERROR_NAMES = {
    400: "BadRequest",
    404: "NotFound",
    413: "PayloadTooLarge",
    422: "Unprocessable",
    429: "TooManyRequests",
    502: "BadGateway",
    503: "StoreUnavailable",
    504: "GatewayTimeout",
}
_SOURCE_ERRORS = (422, 502, 504)

# Request examples over the built-in demo estate (an incident at 05:00 UTC that day).
_EXAMPLE_RANGE = {"from": "2026-01-01T04:00:00Z", "to": "2026-01-01T08:00:00Z"}
_EXAMPLE_QUERY = EXAMPLE_QUERY
_EXAMPLE_ALERT = {
    "receiver": "plugin-backend",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "CheckoutLatency", "service": "checkout"},
            "annotations": {"plugin_backend_query": _EXAMPLE_QUERY},
            "startsAt": "2026-01-01T05:02:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "3f1c6a1b2e4d5f60",
            "dashboardURL": "http://grafana:3000/d/anomaly-overview",
            "panelURL": "http://grafana:3000/d/anomaly-overview?viewPanel=2",
        }
    ],
    "externalURL": "http://grafana:3000/",
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/{_ERROR_NAMES[s]}"} for s in statuses}


def _ok(description: str, schema: dict[str, Any], status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description, "content": {JSON: {"schema": schema}}}}


def _body(
    schema: dict[str, Any], *, required: bool = True, **examples: dict[str, Any]
) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"required": required, "content": {JSON: media}}


def _html_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _HTML_CONTENT}


# == operations ==========================================================================


@dataclass(frozen=True)
class _Operation:
    method: str
    summary: str
    tags: tuple[str, ...]
    build_parts: Callable[[_Components], dict[str, Any]]

    def build(self, components: _Components) -> dict[str, Any]:
        return {"summary": self.summary, "tags": list(self.tags), **self.build_parts(components)}


def _test_connection(_: _Components) -> dict[str, Any]:
    status = _object(("status", "source"), status={"const": "ok"}, source=_STR)
    return {"responses": {**_ok("The series source answers", status), **_errors(*_SOURCE_ERRORS)}}


def _metric_kinds(c: _Components) -> dict[str, Any]:
    option = _object(("label", "value"), label=_STR, value=_STR)
    payload_field = _object(
        ("name", "label", "type"),
        name=_STR,
        label=_STR,
        type={"enum": ["select", "multi-select", "input", "textarea"]},
        placeholder=_STR,
        reloadMetric=_BOOL,
        width=_INT,
        options=_array(option),
    )
    kind = _object(("label", "value", "payloads"), label=_STR, value=_STR)
    kind["properties"]["payloads"] = _array(payload_field)
    return {
        "requestBody": _body(c.model(MetricsBody), required=False, plugin={"metric": ""}),
        "responses": {**_ok("The metric kinds", _array(kind)), **_errors(400, 413)},
    }


def _payload_options(c: _Components) -> dict[str, Any]:
    options = _array(_object(("label", "value"), label=_STR, value=_STR))
    return {
        "requestBody": _body(
            c.model(MetricPayloadOptionsBody),
            metric_names={"metric": "promql", "payload": {}, "name": "metric"},
        ),
        "responses": {**_ok("Select-box options", options), **_errors(400, 413, *_SOURCE_ERRORS)},
    }


def _query(c: _Components) -> dict[str, Any]:
    body = c.model(QueryBody)
    # The kinds and their payload models are what the views validate targets against;
    # the plain alternatives keep the schema as wide as the request model.
    payloads = [c.model(m) for m in dict.fromkeys(k.payload for k in KINDS)]
    target = c.schemas["TargetBody"]["properties"]
    target["target"] = {
        "anyOf": [{"enum": [k.value for k in KINDS]}, {"type": "string"}, {"type": "null"}],
        "description": "the metric kind; empty or hidden targets are skipped",
    }
    target["payload"] = {
        "anyOf": [*payloads, {"type": "object"}, {"type": "string"}, {"type": "null"}],
        "description": "the kind's options: an object (a JSON string from older plugins)",
    }
    frames = _array({"anyOf": [ref("TimeSeries"), ref("Table")]})
    examples: dict[str, Any] = {
        name: {
            "range": _EXAMPLE_RANGE,
            "intervalMs": 60_000,
            "maxDataPoints": 500,
            "targets": [{"refId": "A", "target": kind.value, "payload": dict(payload)}],
        }
        for kind in KINDS
        for name, payload in kind.examples.items()
    }
    return {
        "requestBody": _body(body, **examples),
        "responses": {
            **_ok("Time series and tables, in target order", frames),
            **_errors(400, 413, 429, 503, *_SOURCE_ERRORS),
        },
    }


def _variable(c: _Components) -> dict[str, Any]:
    value = _object(
        ("__text", "__value", "text", "value"), __text=_STR, __value=_STR, text=_STR, value=_STR
    )
    return {
        "requestBody": _body(
            c.model(VariableBody),
            label_values={"payload": {"target": "label_values(service)"}, "range": _EXAMPLE_RANGE},
        ),
        "responses": {
            **_ok("Variable values", _array(value)),
            **_errors(400, 413, *_SOURCE_ERRORS),
        },
    }


def _tag_keys(_: _Components) -> dict[str, Any]:
    keys = _array(_object(("type", "text"), type={"const": "string"}, text=_STR))
    return {
        "requestBody": _body({"description": "ignored (any JSON)"}, required=False, plugin={}),
        "responses": {**_ok("Ad-hoc filter keys", keys), **_errors(400, 413, *_SOURCE_ERRORS)},
    }


def _tag_values(c: _Components) -> dict[str, Any]:
    values = _array(_object(("text",), text=_STR))
    return {
        "requestBody": _body(c.model(TagValuesBody), service={"key": "service"}),
        "responses": {**_ok("Ad-hoc filter values", values), **_errors(400, 413, *_SOURCE_ERRORS)},
    }


def _search(c: _Components) -> dict[str, Any]:
    return {
        "requestBody": _body(c.model(SearchBody), required=False, http={"target": "http"}),
        "responses": {
            **_ok("Metric names containing target", _array(_STR)),
            **_errors(400, 413, *_SOURCE_ERRORS),
        },
    }


def _annotations(c: _Components) -> dict[str, Any]:
    event = _object(
        ("time", "timeEnd", "title", "text", "tags"),
        time=_INT,
        timeEnd=_INT,
        title=_STR,
        text=_STR,
        tags=_array(_STR),
    )
    return {
        "requestBody": _body(
            c.model(AnnotationQueryBody),
            builds={
                "annotation": {"name": "builds", "query": "app_build_info"},
                "range": _EXAMPLE_RANGE,
            },
        ),
        "responses": {
            **_ok("One event per run of non-zero values", _array(event)),
            **_errors(400, 413, *_SOURCE_ERRORS),
        },
    }


def _explain(c: _Components) -> dict[str, Any]:
    return {
        "requestBody": _body(
            c.model(ExplainBody),
            latency={"query": _EXAMPLE_QUERY, "at": "2026-01-01T05:10:00Z", "window": "30m"},
        ),
        "responses": {
            **_ok("Likely root causes, best first", ref("RootCauseReport")),
            **_errors(400, 413, 429, *_SOURCE_ERRORS),
        },
    }


def _alert_webhook(c: _Components) -> dict[str, Any]:
    accepted = _object(
        ("status", "queued", "duplicates", "alerts"),
        status={"const": "accepted"},
        queued=_INT,
        duplicates=_INT,
        alerts=_array(
            _object(
                ("fingerprint", "status", "incident", "queued"),
                fingerprint=_STR,
                status={"enum": ["firing", "resolved"]},
                incident=_STR,
                queued=_BOOL,
            )
        ),
    )
    return {
        "requestBody": _body(c.model(AlertWebhookBody, "AlertWebhookBody"), firing=_EXAMPLE_ALERT),
        "responses": {**_ok("Queued for the worker", accepted, 202), **_errors(400, 413, 503)},
    }


def _healthz(_: _Components) -> dict[str, Any]:
    return {"responses": _ok("The process answers", _object(("status",), status={"const": "ok"}))}


def _readyz(_: _Components) -> dict[str, Any]:
    ready = _object(("status", "source"), status={"const": "ok"}, source=_STR)
    unavailable = {"allOf": [ref("Error"), _object(("status",), status={"const": "unavailable"})]}
    return {
        "responses": {
            **_ok("The series source answers a query in time", ready),
            "503": {
                "description": "The series source failed",
                "content": {JSON: {"schema": unavailable}},
            },
        }
    }


def _metrics(_: _Components) -> dict[str, Any]:
    return {
        "responses": {
            "200": {
                "description": "Prometheus text exposition of the service's own metrics",
                "content": {"text/plain": {"schema": _STR}},
            }
        }
    }


def _openapi(_: _Components) -> dict[str, Any]:
    doc = _object(("openapi", "info", "paths"), openapi=_STR, info={"type": "object"})
    doc["properties"]["paths"] = {"type": "object"}
    return {"responses": _ok("This document", doc)}


def _landing(_: _Components) -> dict[str, Any]:
    return {"responses": {"200": _html_error("Landing page: links and dependency health")}}


_INCIDENT_ID = {
    "name": "incident_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
}


def _incident_list(_: _Components) -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema}

    return {
        "parameters": [
            query("status", {"enum": ["open", "closed"]}),
            query("rule", _STR),
            query("service", _STR),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}),
        ],
        "responses": {
            "200": _html_error("Stored incidents, newest first"),
            "400": _html_error("A bad filter (named on the page)"),
            "503": _html_error("The store failed"),
        },
    }


def _incident_json(_: _Components) -> dict[str, Any]:
    return {
        "parameters": [_INCIDENT_ID],
        "responses": {
            **_ok("The incident, its root-cause report included", ref("Incident")),
            **_errors(404),
            "503": _html_error("The store failed"),
        },
    }


def _incident_page(_: _Components) -> dict[str, Any]:
    return {
        "parameters": [_INCIDENT_ID],
        "responses": {
            "200": _html_error("The incident with live plots of symptom and causes"),
            "404": _html_error("No such incident"),
            "503": _html_error("The store failed"),
        },
    }


_DS = ("datasource",)
OPERATIONS: dict[str, _Operation] = {
    "datasource.test_connection": _Operation("get", "Save & test", _DS, _test_connection),
    "datasource.list_metric_kinds": _Operation("post", "Metric kinds", _DS, _metric_kinds),
    "datasource.metric_payload_options": _Operation(
        "post", "Options of a payload select box", _DS, _payload_options
    ),
    "datasource.query": _Operation("post", "Panel query", _DS, _query),
    "datasource.variable": _Operation("post", "Template-variable values", _DS, _variable),
    "datasource.tag_keys": _Operation("post", "Ad-hoc filter keys", _DS, _tag_keys),
    "datasource.tag_values": _Operation("post", "Ad-hoc filter values", _DS, _tag_values),
    "datasource.search": _Operation("post", "Metric names (legacy plugins)", _DS, _search),
    "datasource.legacy_annotations": _Operation(
        "post", "Annotation query (legacy plugins)", _DS, _annotations
    ),
    "explain.explain": _Operation("post", "Likely root causes of a symptom", ("rca",), _explain),
    "alerts.grafana_webhook": _Operation(
        "post", "Grafana unified-alerting webhook", ("alerts",), _alert_webhook
    ),
    "alerts.alertmanager_webhook": _Operation(
        "post", "Alertmanager webhook", ("alerts",), _alert_webhook
    ),
    "ops.healthz": _Operation("get", "Liveness", ("ops",), _healthz),
    "ops.readyz": _Operation("get", "Readiness", ("ops",), _readyz),
    "ops.metrics": _Operation("get", "Self-metrics", ("ops",), _metrics),
    "openapi.document": _Operation("get", "This OpenAPI document", ("ops",), _openapi),
    "pages.landing": _Operation("get", "Landing page (HTML)", ("pages",), _landing),
    "pages.incident_list": _Operation("get", "Incident list (HTML)", ("pages",), _incident_list),
    "pages.incident_json": _Operation("get", "One incident (JSON)", ("pages",), _incident_json),
    "pages.incident_page": _Operation("get", "One incident (HTML)", ("pages",), _incident_page),
}
