"""Who may call the service: a bearer token or HTTP basic auth on every endpoint but a
small allow-list, and Grafana's HMAC signature on its alert webhook.

The checks (``Credentials``, ``WebhookSigning``) are pure: strings and bytes in, a
reason out (``None``: accepted); secrets are compared with ``hmac.compare_digest``
and never echoed. ``install_auth`` is the Flask glue: one ``before_request`` hook,
so a new endpoint is protected without anyone remembering a decorator; only the
endpoints in ``OPEN_ENDPOINTS`` (and ``/metrics`` unless configured otherwise)
answer without credentials. With no credentials configured the service is open and
says so (a start-up WARNING, ``plugin_backend_auth_enabled 0``).

Grafana's webhook signature, as its code signs (grafana/alerting ``http/hmac.go``,
Grafana 12+ webhook contact point, "HMAC Signature" options): the lowercase hex
HMAC-SHA256, keyed with the shared secret, of the raw body, or, when the contact
point names a timestamp header, of ``<unix seconds> + ":" + <raw body>`` with the
timestamp sent in that header. Grafana's documentation names the signature header
``X-Grafana-Alerting-Signature`` (also the form's placeholder), while ``hmac.go``
falls back to ``X-Grafana-Alert-Signature`` when the form's field is left empty: with
the default setting both are read. Alertmanager cannot sign its webhooks, so only
``/api/v1/alerts/grafana`` is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, request

from plugin_backend.config import Settings
from plugin_backend.telemetry import Telemetry
from plugin_backend.web.errors import error_body
from plugin_backend.web.http import json_response

__all__ = [
    "DEFAULT_SIGNATURE_HEADER",
    "MAX_SIGNATURE_AGE_S",
    "OPEN_ENDPOINTS",
    "PROXIED_BLUEPRINTS",
    "SIGNED_ENDPOINTS",
    "Credentials",
    "WebhookSigning",
    "grafana_signature",
    "install_auth",
    "requires_auth",
]

log = logging.getLogger(__name__)

REALM = "plugin-backend"
#: Flask endpoints answered without credentials (liveness, readiness, the API document).
OPEN_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "openapi.document"})
#: Open unless ``PLUGIN_BACKEND_METRICS_REQUIRE_AUTH=true``.
METRICS_ENDPOINT = "ops.metrics"
#: Endpoints that also need Grafana's signature when ``PLUGIN_BACKEND_WEBHOOK_SECRET`` is set.
SIGNED_ENDPOINTS = frozenset({"alerts.grafana_webhook"})
DEFAULT_SIGNATURE_HEADER = "X-Grafana-Alerting-Signature"
#: What grafana/alerting's ``hmac.go`` sends when the contact point's header field is empty.
GRAFANA_FALLBACK_SIGNATURE_HEADER = "X-Grafana-Alert-Signature"
MAX_SIGNATURE_AGE_S = 300.0

HeaderLookup = Callable[[str], str | None]


def requires_auth(endpoint: str | None, *, metrics_require_auth: bool) -> bool:
    """Whether a request routed to ``endpoint`` needs credentials (unrouted ones do)."""
    if endpoint in OPEN_ENDPOINTS:
        return False
    return not (endpoint == METRICS_ENDPOINT and not metrics_require_auth)


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """The accepted credentials: a bearer token, basic auth, both or none (open)."""

    token: bytes | None = None
    user: bytes | None = None
    password: bytes | None = None

    def __repr__(self) -> str:
        return f"Credentials(token={self.token is not None}, basic={self.user is not None})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        token = settings.api_token
        password = settings.basic_auth_password
        return cls(
            token=token.get_secret_value().encode() if token is not None else None,
            user=settings.basic_auth_user.encode() if settings.basic_auth_user else None,
            password=password.get_secret_value().encode() if password is not None else None,
        )

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.user is not None

    @property
    def challenge(self) -> str:
        """``WWW-Authenticate``: basic when configured, so that a browser prompts."""
        scheme = "Basic" if self.user is not None else "Bearer"
        return f'{scheme} realm="{REALM}"'

    def describe(self) -> str:
        """What a caller may send (names of settings only, never values)."""
        accepted = []
        if self.token is not None:
            accepted.append("Authorization: Bearer <PLUGIN_BACKEND_API_TOKEN>")
        if self.user is not None:
            accepted.append("HTTP basic auth (PLUGIN_BACKEND_BASIC_AUTH_USER/_PASSWORD)")
        return " or ".join(accepted) if accepted else "nothing (authentication is off)"

    def check(self, authorization: str | None) -> str | None:
        """``None`` when the ``Authorization`` header is accepted, else why not."""
        if not self.enabled:
            return None
        if not authorization or not authorization.strip():
            return f"authentication required: send {self.describe()}"
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return _check_token(value.strip(), self.token)
        if scheme == "basic" and self.user is not None and self.password is not None:
            return _check_basic(value.strip(), self.user, self.password)
        return f"authentication required: unsupported Authorization scheme; send {self.describe()}"


def _check_token(token: str, expected: bytes) -> str | None:
    if not _same(_raw(token), expected):
        return "authentication required: the bearer token is not valid"
    return None


def _check_basic(encoded: str, expected_user: bytes, expected_password: bytes) -> str | None:
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "authentication required: malformed basic credentials (not base64)"
    user, sep, password = decoded.partition(b":")
    if not sep:
        return "authentication required: malformed basic credentials (no user:password)"
    user_ok = _same(user, expected_user)
    password_ok = _same(password, expected_password)  # both compared: no early exit
    if not (user_ok and password_ok):
        return "authentication required: wrong user name or password"
    return None


@dataclass(frozen=True, slots=True, repr=False)
class WebhookSigning:
    """Grafana's HMAC-SHA256 webhook signature (see the module docstring)."""

    secret: bytes
    header: str = DEFAULT_SIGNATURE_HEADER
    timestamp_header: str | None = None
    max_age_s: float = MAX_SIGNATURE_AGE_S

    def __repr__(self) -> str:
        return f"WebhookSigning(header={self.header!r}, timestamp_header={self.timestamp_header!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSigning | None:
        if settings.webhook_secret is None:
            return None
        return cls(
            secret=settings.webhook_secret.get_secret_value().encode(),
            header=settings.webhook_signature_header,
            timestamp_header=settings.webhook_timestamp_header,
        )

    def signature_in(self, header: HeaderLookup) -> str | None:
        found = header(self.header)
        if found is None and self.header.lower() == DEFAULT_SIGNATURE_HEADER.lower():
            found = header(GRAFANA_FALLBACK_SIGNATURE_HEADER)
        return found

    def check(self, body: bytes, header: HeaderLookup, now_s: float) -> str | None:
        """``None`` when ``body`` carries a valid signature (and a fresh timestamp);
        ``header`` looks a request header up by name (case-insensitively in Flask)."""
        signature = self.signature_in(header)
        if not signature or not signature.strip():
            return f"webhook signature required: header {self.header} is missing"
        timestamp: str | None = None
        if self.timestamp_header is not None:
            timestamp = (header(self.timestamp_header) or "").strip()
            problem = self._stale(timestamp, now_s)
            if problem is not None:
                return problem
        expected = grafana_signature(self.secret, body, timestamp).encode()
        if not _same(_raw(signature.strip().lower()), expected):
            return f"webhook signature in {self.header} does not match the body"
        return None

    def _stale(self, timestamp: str, now_s: float) -> str | None:
        header = self.timestamp_header
        if not timestamp:
            return f"webhook signature timestamp required: header {header} is missing"
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            return f"webhook signature timestamp in {header} is not a Unix time in seconds"
        age_s = now_s - int(timestamp)
        if abs(age_s) > self.max_age_s:
            when = "old" if age_s > 0 else "in the future"
            return (
                f"webhook signature timestamp in {header} is {abs(age_s):.0f} s {when}; "
                f"at most {self.max_age_s:.0f} s accepted"
            )
        return None


def grafana_signature(secret: bytes, body: bytes, timestamp: str | None = None) -> str:
    """Hex HMAC-SHA256 of ``body``, or of ``timestamp:body``, as Grafana signs webhooks."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    if timestamp is not None:
        mac.update(timestamp.encode("ascii") + b":")
    mac.update(body)
    return mac.hexdigest()


def _same(given: bytes | None, expected: bytes) -> bool:
    if given is None:
        hmac.compare_digest(expected, expected)  # same work for an unencodable value
        return False
    return hmac.compare_digest(given, expected)


def _raw(value: str) -> bytes | None:
    """A header value's bytes as sent (WSGI decodes headers as Latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return None


# == Flask glue ========================================================================


def install_auth(app: Flask, settings: Settings, telemetry: Telemetry) -> None:
    """Check credentials (and the webhook signature) before every request."""
    credentials = Credentials.from_settings(settings)
    signing = WebhookSigning.from_settings(settings)
    app.extensions["plugin_backend.auth_enabled"] = credentials.enabled
    telemetry.auth_enabled.set(1 if credentials.enabled else 0)
    if not credentials.enabled:
        log.warning(
            "authentication is OFF: anyone who reaches this service can query data, post "
            "alerts and read incidents; set PLUGIN_BACKEND_API_TOKEN and/or "
            "PLUGIN_BACKEND_BASIC_AUTH_USER/_PASSWORD (docs/security.md)"
        )
    metrics_require_auth = settings.metrics_require_auth

    @app.before_request
    def _authenticate() -> Response | None:
        endpoint = request.endpoint
        if not requires_auth(endpoint, metrics_require_auth=metrics_require_auth):
            return None
        problem = credentials.check(request.headers.get("Authorization"))
        if problem is not None:
            return _refuse("unauthorized", problem, credentials.challenge)
        if signing is not None and endpoint in SIGNED_ENDPOINTS:
            body = request.get_data(cache=True)  # the view reads the cached body
            problem = signing.check(body, request.headers.get, time.time())
            if problem is not None:
                return _refuse("invalid_signature", problem, credentials.challenge)
        return None


#: Blueprints that only Grafana's datasource proxy calls. Grafana rewrites a datasource's
#: 401 into a bare 400 "Bad Request" and drops its body, so a refused token would read as
#: a malformed request in Save & test: these answer 403 with the reason instead.
PROXIED_BLUEPRINTS = frozenset({"datasource"})


def _refuse(code: str, message: str, challenge: str) -> Response:
    log.info("refused %s %s: %s", request.method, request.path, message, extra={"code": code})
    if request.blueprint in PROXIED_BLUEPRINTS:
        sent = bool((request.headers.get("Authorization") or "").strip())
        reason = message.removeprefix("authentication required: ") if sent else "none were sent"
        text = (
            f"the backend refused the datasource's credentials ({reason}): in the Grafana "
            "datasource's settings, add the HTTP header Authorization with the value "
            "Bearer <PLUGIN_BACKEND_API_TOKEN>"
        )
        return json_response(error_body(code, text), 403)
    response = json_response(error_body(code, message), 401)
    response.headers["WWW-Authenticate"] = challenge
    return response
