"""Auth: bearer token / basic auth everywhere but the allow-list, Grafana's webhook
signature, the open mode, and secrets that never leak."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.config import load_settings
from plugin_backend.errors import ConfigError
from plugin_backend.store import Store
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app
from plugin_backend.web.auth import (
    OPEN_ENDPOINTS,
    Credentials,
    WebhookSigning,
    grafana_signature,
    requires_auth,
)

TOKEN = "tok-0123456789abcdef-SECRET"
USER = "grafana"
PASSWORD = "pw-SECRET-correct-horse"
WEBHOOK_SECRET = "hook-SECRET-battery-staple"
SECRETS = (TOKEN, PASSWORD, WEBHOOK_SECRET)

ALERT = {
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "Latency", "service": "checkout"},
            "startsAt": "2026-01-01T12:00:00Z",
            "fingerprint": "abc123",
        }
    ]
}
METRICS_BODY = {"metric": "", "payload": {}}

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    counter = iter(range(1000))

    def make(**env: str) -> Flask:
        settings = load_settings(
            {
                "PLUGIN_BACKEND_LLM_PROVIDER": "none",
                **{f"PLUGIN_BACKEND_{k.upper()}": v for k, v in env.items()},
            }
        )
        store = Store(f"sqlite:///{tmp_path / f'store-{next(counter)}.db'}")
        app = create_app(
            settings,
            source=DemoSource(seed=7),
            telemetry=Telemetry(CollectorRegistry()),
            store=store,
        )
        app.config["TESTING"] = True
        return app

    return make


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def assert_refused(response: Any, code: str = "unauthorized") -> dict[str, Any]:
    """401 with a challenge; 403 with the reason on the datasource protocol, whose 401s
    Grafana's proxy would turn into a bare 400 "Bad Request"."""
    proxied = response.request.path.startswith("/datasource")
    assert response.status_code == (403 if proxied else 401), response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"]["code"] == code
    assert body["message"] == body["error"]["message"]
    assert ("WWW-Authenticate" in response.headers) is not proxied
    if proxied:
        assert "refused the datasource's credentials" in body["message"]
        assert "Authorization" in body["message"]
    return body


# --- bearer and basic -------------------------------------------------------------------


def test_bearer_token_ok_wrong_missing(make_app: MakeApp) -> None:
    client = make_app(api_token=TOKEN).test_client()
    ok = client.post("/datasource/metrics", json=METRICS_BODY, headers=bearer())
    assert ok.status_code == 200
    assert_refused(
        client.post("/datasource/metrics", json=METRICS_BODY, headers=bearer(TOKEN.lower()))
    )
    wrong = assert_refused(
        client.post("/datasource/metrics", json=METRICS_BODY, headers=bearer("x" * 30))
    )
    assert "(the bearer token is not valid)" in wrong["message"]
    missing = client.post("/datasource/metrics", json=METRICS_BODY)
    body = assert_refused(missing)
    assert "(none were sent)" in body["message"]
    # Outside the datasource protocol a 401 with its challenge, as HTTP clients expect.
    api = assert_refused(client.post("/api/v1/explain", json={}, headers=bearer("x" * 30)))
    assert api["message"] == "authentication required: the bearer token is not valid"
    page = client.get("/incidents")
    assert assert_refused(page)["message"].startswith(
        "authentication required: send Authorization: Bearer"
    )
    assert page.headers["WWW-Authenticate"] == 'Bearer realm="plugin-backend"'


def test_bearer_scheme_is_case_insensitive_and_basic_is_refused_when_not_configured(
    make_app: MakeApp,
) -> None:
    client = make_app(api_token=TOKEN).test_client()
    assert (
        client.get("/datasource/", headers={"Authorization": f"bearer  {TOKEN} "}).status_code
        == 200
    )
    body = assert_refused(client.get("/datasource/", headers=basic()))
    assert "unsupported Authorization scheme" in body["message"]


def test_basic_auth_ok_and_wrong(make_app: MakeApp) -> None:
    client = make_app(basic_auth_user=USER, basic_auth_password=PASSWORD).test_client()
    assert client.get("/datasource/", headers=basic()).status_code == 200
    for headers in (basic(password="nope"), basic(user="admin"), basic("", "")):
        body = assert_refused(client.get("/datasource/", headers=headers))
        assert "(wrong user name or password)" in body["message"]
    malformed = assert_refused(client.get("/datasource/", headers={"Authorization": "Basic %%%"}))
    assert "malformed basic credentials" in malformed["message"]
    no_colon = base64.b64encode(b"grafana").decode()
    assert_refused(client.get("/datasource/", headers={"Authorization": f"Basic {no_colon}"}))
    # Basic configured: the challenge makes a browser prompt (annotation links, pages).
    page = client.get("/incidents")
    assert_refused(page)
    assert page.headers["WWW-Authenticate"] == 'Basic realm="plugin-backend"'
    assert client.get("/incidents", headers=basic()).status_code == 200


def test_both_configured_accepts_either(make_app: MakeApp) -> None:
    app = make_app(api_token=TOKEN, basic_auth_user=USER, basic_auth_password=PASSWORD)
    client = app.test_client()
    assert client.get("/datasource/", headers=bearer()).status_code == 200
    assert client.get("/datasource/", headers=basic()).status_code == 200
    refused = client.get("/incidents")
    body = assert_refused(refused)
    assert "Bearer" in body["message"]
    assert "basic auth" in body["message"]
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="plugin-backend"'


# --- the allow-list ---------------------------------------------------------------------


def test_open_endpoints_answer_without_credentials(make_app: MakeApp) -> None:
    client = make_app(api_token=TOKEN).test_client()
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.head("/healthz").status_code == 200


def test_metrics_can_require_auth(make_app: MakeApp) -> None:
    client = make_app(api_token=TOKEN, metrics_require_auth="true").test_client()
    assert_refused(client.get("/metrics"))
    assert client.get("/metrics", headers=bearer()).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_every_other_route_needs_credentials(make_app: MakeApp) -> None:
    # The hook protects routes nobody listed: walk the real URL map.
    app = make_app(api_token=TOKEN)
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<path:filename>", "x.css")
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", "0123456789abcdef").replace(f"<path:{arg}>", "a/b")
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            response = client.open(path, method=method, json={})
            if rule.endpoint in OPEN_ENDPOINTS or rule.endpoint == "ops.metrics":
                assert response.status_code != 401, (rule.endpoint, path)
            else:
                assert_refused(response)
                checked += 1
    assert checked >= 17
    # Unrouted paths too: no hint of what exists without credentials.
    assert_refused(client.get("/no/such/path"))
    assert client.get("/no/such/path", headers=bearer()).status_code == 404


def test_requires_auth_allow_list() -> None:
    assert not requires_auth("ops.healthz", metrics_require_auth=True)
    assert not requires_auth("openapi.document", metrics_require_auth=True)
    assert not requires_auth("ops.metrics", metrics_require_auth=False)
    assert requires_auth("ops.metrics", metrics_require_auth=True)
    assert requires_auth("datasource.query", metrics_require_auth=False)
    assert requires_auth(None, metrics_require_auth=False)


# --- Grafana's webhook signature ----------------------------------------------------------


def signed_post(
    client: FlaskClient,
    body: bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    header: str = "X-Grafana-Alerting-Signature",
    timestamp: str | None = None,
    auth: dict[str, str] | None = None,
) -> Any:
    headers = {
        **(bearer() if auth is None else auth),
        header: grafana_signature(secret.encode(), body, timestamp),
    }
    if timestamp is not None:
        headers["X-Grafana-Alerting-Timestamp"] = timestamp
    return client.post(
        "/api/v1/alerts/grafana", data=body, headers=headers, content_type="application/json"
    )


def test_webhook_signature_ok_bad_missing(make_app: MakeApp) -> None:
    client = make_app(api_token=TOKEN, webhook_secret=WEBHOOK_SECRET).test_client()
    body = json.dumps(ALERT).encode()
    assert signed_post(client, body).status_code == 202
    # grafana/alerting's hmac.go default header when the contact point leaves it empty
    assert signed_post(client, body, header="X-Grafana-Alert-Signature").status_code == 202
    bad = assert_refused(signed_post(client, body, secret="other-secret"), "invalid_signature")
    assert bad["message"] == (
        "webhook signature in X-Grafana-Alerting-Signature does not match the body"
    )
    tampered = body.replace(b"checkout", b"payments")
    headers = {
        **bearer(),
        "X-Grafana-Alerting-Signature": grafana_signature(WEBHOOK_SECRET.encode(), body),
    }
    assert_refused(
        client.post("/api/v1/alerts/grafana", data=tampered, headers=headers),
        "invalid_signature",
    )
    missing = assert_refused(
        client.post("/api/v1/alerts/grafana", json=ALERT, headers=bearer()), "invalid_signature"
    )
    assert "X-Grafana-Alerting-Signature is missing" in missing["message"]
    # Credentials come first: a signed call without them is still refused.
    assert_refused(signed_post(client, body, auth={}))
    # Alertmanager cannot sign: its webhook needs the credentials only.
    assert (
        client.post("/api/v1/alerts/alertmanager", json=ALERT, headers=bearer()).status_code == 202
    )


def test_webhook_signature_with_timestamp(make_app: MakeApp) -> None:
    app = make_app(
        api_token=TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        webhook_timestamp_header="X-Grafana-Alerting-Timestamp",
    )
    client = app.test_client()
    body = json.dumps(ALERT).encode()
    now = int(time.time())
    assert signed_post(client, body, timestamp=str(now)).status_code == 202
    stale = assert_refused(signed_post(client, body, timestamp=str(now - 600)), "invalid_signature")
    assert "s old; at most 300 s accepted" in stale["message"]
    future = assert_refused(
        signed_post(client, body, timestamp=str(now + 600)), "invalid_signature"
    )
    assert "in the future" in future["message"]
    assert_refused(signed_post(client, body, timestamp="yesterday"), "invalid_signature")
    # Signed over the body alone while a timestamp is expected: refused.
    headers = {
        **bearer(),
        "X-Grafana-Alerting-Signature": grafana_signature(WEBHOOK_SECRET.encode(), body),
        "X-Grafana-Alerting-Timestamp": str(now),
    }
    assert_refused(
        client.post("/api/v1/alerts/grafana", data=body, headers=headers), "invalid_signature"
    )
    no_ts = {**headers}
    del no_ts["X-Grafana-Alerting-Timestamp"]
    refused = assert_refused(
        client.post("/api/v1/alerts/grafana", data=body, headers=no_ts), "invalid_signature"
    )
    assert "X-Grafana-Alerting-Timestamp is missing" in refused["message"]


def test_signature_is_grafanas_scheme() -> None:
    # grafana/alerting http/hmac.go: hex(HMAC-SHA256(secret, [ts + ":"] + body)).
    body = b'{"alerts": []}'
    plain = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    stamped = hmac.new(b"s3cret", b"1700000000:" + body, hashlib.sha256).hexdigest()
    assert grafana_signature(b"s3cret", body) == plain
    assert grafana_signature(b"s3cret", body, "1700000000") == stamped
    signing = WebhookSigning(b"s3cret", timestamp_header="X-Ts")
    headers = {"X-Grafana-Alerting-Signature": stamped, "X-Ts": "1700000000"}
    assert signing.check(body, headers.get, now_s=1_700_000_299) is None
    assert signing.check(body, headers.get, now_s=1_700_000_301) is not None
    upper = {**headers, "X-Grafana-Alerting-Signature": stamped.upper()}
    assert signing.check(body, upper.get, now_s=1_700_000_000) is None


def test_webhook_secret_alone_guards_the_webhook_of_an_open_service(make_app: MakeApp) -> None:
    client = make_app(webhook_secret=WEBHOOK_SECRET).test_client()
    body = json.dumps(ALERT).encode()
    assert signed_post(client, body, auth={}).status_code == 202
    assert_refused(client.post("/api/v1/alerts/grafana", json=ALERT), "invalid_signature")
    assert client.post("/datasource/metrics", json=METRICS_BODY).status_code == 200


# --- open mode --------------------------------------------------------------------------


def _auth_gauge(app: Flask) -> float | None:
    telemetry: Telemetry = app.extensions["plugin_backend.telemetry"]
    return telemetry.registry.get_sample_value("plugin_backend_auth_enabled")


def test_no_credentials_runs_open_and_says_so(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plugin_backend.web.auth"):
        app = make_app()
    assert any(
        r.levelno == logging.WARNING and "authentication is OFF" in r.getMessage()
        for r in caplog.records
    )
    assert app.extensions["plugin_backend.auth_enabled"] is False
    assert _auth_gauge(app) == 0
    client = app.test_client()
    assert client.post("/datasource/metrics", json=METRICS_BODY).status_code == 200
    assert "plugin_backend_auth_enabled 0.0" in client.get("/metrics").get_data(as_text=True)
    assert "security" not in json.dumps(client.get("/openapi.json").get_json()["paths"])


def test_credentials_configured_sets_gauge_and_no_warning(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plugin_backend.web.auth"):
        app = make_app(api_token=TOKEN)
    assert not [r for r in caplog.records if "authentication is OFF" in r.getMessage()]
    assert app.extensions["plugin_backend.auth_enabled"] is True
    assert _auth_gauge(app) == 1


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PLUGIN_BACKEND_API_TOKEN": "short-SECRET"}, "PLUGIN_BACKEND_API_TOKEN"),
        ({"PLUGIN_BACKEND_BASIC_AUTH_USER": "u"}, "PLUGIN_BACKEND_BASIC_AUTH_PASSWORD"),
        ({"PLUGIN_BACKEND_BASIC_AUTH_PASSWORD": PASSWORD}, "PLUGIN_BACKEND_BASIC_AUTH_USER"),
        (
            {"PLUGIN_BACKEND_BASIC_AUTH_USER": "a:b", "PLUGIN_BACKEND_BASIC_AUTH_PASSWORD": "p"},
            "PLUGIN_BACKEND_BASIC_AUTH_USER",
        ),
        (
            {"PLUGIN_BACKEND_WEBHOOK_TIMESTAMP_HEADER": "X-Grafana-Alerting-Timestamp"},
            "PLUGIN_BACKEND_WEBHOOK_SECRET",
        ),
        (
            {"PLUGIN_BACKEND_WEBHOOK_SIGNATURE_HEADER": "X Sig"},
            "PLUGIN_BACKEND_WEBHOOK_SIGNATURE_HEADER",
        ),
    ],
)
def test_bad_auth_settings_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert named in info.value.message
    assert "short-SECRET" not in info.value.message
    assert PASSWORD not in info.value.message


def test_token_of_16_characters_is_enough() -> None:
    assert load_settings({"PLUGIN_BACKEND_API_TOKEN": "a" * 16}).api_token is not None


# --- secrets never leak ---------------------------------------------------------------------


def test_secrets_absent_from_repr_logs_bodies_and_pages(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "api_token": TOKEN,
        "basic_auth_user": USER,
        "basic_auth_password": PASSWORD,
        "webhook_secret": WEBHOOK_SECRET,
    }
    settings = load_settings({f"PLUGIN_BACKEND_{k.upper()}": v for k, v in env.items()})
    texts = [repr(settings), str(settings), repr(Credentials.from_settings(settings))]
    signing = WebhookSigning.from_settings(settings)
    texts.append(repr(signing))
    with caplog.at_level(logging.DEBUG):
        app = make_app(**env)
        client = app.test_client()
        responses = [
            client.get("/datasource/"),
            client.get("/datasource/", headers=bearer(TOKEN[:-1])),
            client.get("/datasource/", headers=basic(password=PASSWORD[:-1])),
            client.get("/datasource/", headers={"Authorization": f"Token {TOKEN}"}),
            client.post("/api/v1/alerts/grafana", json=ALERT, headers=bearer()),
            signed_post(client, json.dumps(ALERT).encode(), secret=WEBHOOK_SECRET[:-1]),
            client.get("/", headers=basic()),
            client.get("/openapi.json"),
            client.get("/metrics"),
        ]
    texts += [r.get_data(as_text=True) + str(r.headers) for r in responses]
    texts.append(caplog.text)
    texts += [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
            assert secret[:-1] not in text
    assert responses[6].status_code == 200  # the landing page was rendered


# --- constant time --------------------------------------------------------------------------


def test_comparisons_use_compare_digest(make_app: MakeApp) -> None:
    app = make_app(
        api_token=TOKEN,
        basic_auth_user=USER,
        basic_auth_password=PASSWORD,
        webhook_secret=WEBHOOK_SECRET,
    )
    client = app.test_client()
    with mock.patch(
        "plugin_backend.web.auth.hmac.compare_digest", wraps=hmac.compare_digest
    ) as compare:
        assert client.get("/datasource/", headers=bearer()).status_code == 200
        assert compare.call_args_list == [mock.call(TOKEN.encode(), TOKEN.encode())]
        compare.reset_mock()
        assert_refused(client.get("/datasource/", headers=basic(user="someone")))
        # user and password both compared, as bytes: no early exit on the user
        assert compare.call_count == 2
        assert all(isinstance(a, bytes) for call in compare.call_args_list for a in call.args)
        compare.reset_mock()
        assert_refused(signed_post(client, b"{}", secret="x"), "invalid_signature")
        assert compare.call_count == 2  # the bearer token, then the signature
