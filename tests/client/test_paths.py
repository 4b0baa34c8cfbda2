"""Every path the backend serves answers the same with and without a trailing slash, and
no answer redirects (issue 17, finding 1): Grafana hands a datasource's redirect to the
browser, which then calls the backend directly, without the token, and fails.

The paths are those of the backend's own /openapi.json, so a new route is covered."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.client.support import API_TOKEN

pytestmark = pytest.mark.client


def _call(backend, method, path):
    return backend.http.request(
        method,
        backend.url + path,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        json={} if method == "POST" else None,
        allow_redirects=False,
        timeout=60,
    )


def _an_incident_id(backend):
    """The id of one incident the worker stored (the ``incidents`` kind lists them)."""
    now = time.time()
    response = backend.http.post(
        backend.url + "/datasource/query",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        json={
            "range": {"from": _iso(now - 86_400), "to": _iso(now)},
            "intervalMs": 60_000,
            "maxDataPoints": 1_500,
            "targets": [{"refId": "A", "target": "incidents", "payload": {}}],
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    table = response.json()[0]
    at = [c["text"] for c in table["columns"]].index("id")
    return table["rows"][0][at]


def _iso(ts):
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _routes(backend):
    document = backend.http.get(backend.url + "/openapi.json", timeout=10).json()
    incident_id = None
    for template, operations in document["paths"].items():
        path = template
        if "{incident_id}" in template:
            incident_id = incident_id or _an_incident_id(backend)
            path = template.replace("{incident_id}", str(incident_id))
        for method in operations:
            if method in {"get", "post", "put", "delete", "patch"}:
                yield method.upper(), path


def test_no_path_redirects_and_each_answers_with_and_without_trailing_slash(backend):
    seen, problems = 0, []
    for method, path in _routes(backend):
        if path == "/":
            continue
        bare = path.rstrip("/")
        variants = [bare, bare + "/"] if not path.endswith(".json") else [bare]
        statuses = {}
        for variant in variants:
            response = _call(backend, method, variant)
            statuses[variant] = response.status_code
            if 300 <= response.status_code < 400:
                where = response.headers.get("Location")
                problems.append(f"{method} {variant}: {response.status_code} -> {where}")
            elif response.status_code in (404, 405):
                problems.append(f"{method} {variant}: {response.status_code}")
        if len(set(statuses.values())) > 1:
            problems.append(f"{method}: {statuses}")
        seen += 1
    assert seen >= 15
    assert problems == [], "\n".join(problems)


def test_the_datasource_root_answers_save_and_test_without_slash(backend):
    response = _call(backend, "GET", "/datasource")
    assert response.status_code == 200, (response.status_code, response.headers.get("Location"))
    assert response.json()["status"] == "ok"
