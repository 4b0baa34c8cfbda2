"""The one exception tree of plugin_backend.

Every error a user can cause or meet is one of these; the web layer maps them
to JSON once (``web/errors.py``), the CLI prints their message.

```
BackendError
├── ConfigError                      bad setting at start-up (names the variable)
├── RequestError (400)               the caller's request is wrong
│   ├── InvalidTarget                unknown metric kind, bad payload field
│   ├── InvalidTimeRange             unparsable or reversed range
│   ├── InvalidQuery                 PromQL the source refuses as malformed (bad_data)
│   └── LimitExceeded (413/422)      body size, points, targets, PromQL length
├── UpstreamError (502)              a dependency failed
│   ├── PrometheusError              transport failure or 5xx from Prometheus
│   │   ├── PrometheusTimeout (504)
│   │   └── PrometheusQueryError (422) Prometheus could not execute the query
│   ├── GrafanaError                 Grafana's API failed (annotations: retried from the outbox)
│   ├── DeadlineExceeded (504)       the request's time budget ran out (slow upstream)
│   ├── StoreError (503)             the incident store (SQLite / PostgreSQL) failed
│   └── LLMError                     never reaches Grafana: notes fall back to a template
└── ModelError                       NotFitted, InsufficientData, ArtifactError
```

``code`` is a stable machine-readable string (Grafana's "Save & test" shows
it); ``http_status`` is what the web layer answers.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BackendError",
    "ConfigError",
    "DeadlineExceeded",
    "GrafanaError",
    "InsufficientData",
    "InvalidQuery",
    "InvalidTarget",
    "InvalidTimeRange",
    "LLMError",
    "LimitExceeded",
    "ModelError",
    "NotFitted",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusTimeout",
    "RequestError",
    "StoreError",
    "UpstreamError",
]


class BackendError(Exception):
    """Base of every error plugin_backend raises on purpose."""

    code = "backend_error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(BackendError):
    code = "config_error"


class RequestError(BackendError):
    code = "bad_request"
    http_status = 400


class InvalidTarget(RequestError):
    code = "invalid_target"


class InvalidTimeRange(RequestError):
    code = "invalid_time_range"


class InvalidQuery(RequestError):
    """The source refused the query as malformed (Prometheus ``bad_data``)."""

    code = "invalid_query"


class LimitExceeded(RequestError):
    code = "limit_exceeded"
    http_status = 422

    def __init__(self, message: str, *, limit: str, http_status: int = 422) -> None:
        super().__init__(message)
        self.limit = limit
        self.http_status = http_status


class UpstreamError(BackendError):
    code = "upstream_error"
    http_status = 502


class PrometheusError(UpstreamError):
    code = "prometheus_unavailable"


class PrometheusTimeout(PrometheusError):
    code = "prometheus_timeout"
    http_status = 504


class PrometheusQueryError(PrometheusError):
    """Prometheus understood the query but could not execute it (``execution``)."""

    code = "prometheus_execution"
    http_status = 422


class GrafanaError(UpstreamError):
    """Grafana's HTTP API failed. ``status``: its HTTP status (None: no answer);
    ``in_doubt``: the request may have been applied (timeout, dropped connection);
    ``retryable``: trying again later may succeed (5xx, 429, transport errors)."""

    code = "grafana_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        in_doubt: bool = False,
        retryable: bool = True,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.in_doubt = in_doubt
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class DeadlineExceeded(UpstreamError):
    code = "deadline_exceeded"
    http_status = 504


class StoreError(UpstreamError):
    code = "store_error"
    http_status = 503


class LLMError(UpstreamError):
    code = "llm_error"


class ModelError(BackendError):
    code = "model_error"


class NotFitted(ModelError):
    code = "not_fitted"


class InsufficientData(ModelError):
    code = "insufficient_data"
    http_status = 422

    def __init__(self, needed: int, got: int, what: str = "points") -> None:
        super().__init__(f"need at least {needed} {what}, got {got}")
        self.needed = needed
        self.got = got


class ArtifactError(ModelError):
    code = "artifact_error"
