"""Save & test as a user does it: the plugin's testDatasource through Grafana's proxy.

Issue 17, findings 1 (the documented URL without a trailing slash redirected, and the
browser then called the backend without the token), 2 (a wrong token read "Bad
Request": Grafana turns a datasource's 401 into a bare 400) and 5 (a set-but-empty
PLUGIN_BACKEND_PROMETHEUS_URL stopped start-up).
"""

from __future__ import annotations

import re

import pytest

from testkit.promserver import find_free_port
from tests.client.support import (
    API_TOKEN,
    BASIC_PASSWORD,
    BASIC_USER,
    backend_env,
    dashboard,
    ds,
    json_targets,
    query_step,
    redirects,
    start_backend,
)

pytestmark = pytest.mark.client

WORKING = {"status": "success", "message": "Data source is working", "title": "Success"}


def _save_and_test(plugin, backend, **config):
    return plugin.run({"op": "testDatasource", "ds": ds(backend, **config)})


def test_the_documented_url_without_trailing_slash_works(plugin, backend):
    answer = _save_and_test(plugin, backend)  # http://HOST:PORT/datasource, README step 2
    assert answer.get("result") == WORKING, answer
    assert redirects(answer) == []
    assert [(e["via"], e["path"], e["status"]) for e in answer["exchanges"]] == [
        ("proxy", "/datasource", 200)
    ]


def test_the_url_with_trailing_slash_works_too(plugin, backend):
    answer = _save_and_test(plugin, backend, url=backend.datasource_url + "/")
    assert answer.get("result") == WORKING, answer
    assert redirects(answer) == []


def _refusal(answer):
    result = answer["result"]
    assert result["status"] == "error", answer
    return result["message"]


def test_a_wrong_token_reads_as_a_refused_token_in_save_and_test(plugin, backend):
    message = _refusal(_save_and_test(plugin, backend, token="mistyped-token"))
    # Grafana turns a 401 into "Bad Request" and drops the body: the user must read why.
    assert message != "Bad Request"
    assert re.search(r"token", message, re.IGNORECASE), message
    assert re.search(r"refused|not valid|invalid|rejected|wrong", message, re.IGNORECASE), message


def test_no_token_configured_says_what_to_configure(plugin, backend):
    message = _refusal(_save_and_test(plugin, backend, token=None))
    assert message != "Bad Request"
    assert re.search(r"Authorization|token", message), message


def test_a_wrong_token_never_leaks_the_configured_one(plugin, backend):
    answer = _save_and_test(plugin, backend, token="mistyped-token")
    assert API_TOKEN not in str(answer)


def test_a_browser_on_an_incident_link_still_gets_the_basic_auth_prompt(backend):
    for path in ("/incidents", "/incidents/", "/"):
        response = backend.http.get(backend.url + path, allow_redirects=False, timeout=10)
        assert response.status_code == 401, (path, response.status_code, response.text[:200])
        assert response.headers.get("WWW-Authenticate", "").startswith("Basic "), path


def test_the_browser_gets_in_with_basic_auth(backend):
    response = backend.http.get(
        backend.url + "/incidents",
        auth=(BASIC_USER, BASIC_PASSWORD),
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    assert "text/html" in response.headers["Content-Type"]


def test_wrong_basic_credentials_prompt_again(backend):
    response = backend.http.get(
        backend.url + "/incidents", auth=(BASIC_USER, "wrong"), allow_redirects=False, timeout=10
    )
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Basic ")


def test_a_set_but_empty_prometheus_url_serves_the_demo_estate(plugin, tmp_path):
    # Compose files, shells and Helm values write PLUGIN_BACKEND_PROMETHEUS_URL= for "unset".
    port = find_free_port()
    env = backend_env(port, tmp_path, prometheus_url="", workers="1")
    empty_url = start_backend(tmp_path, env, port)
    try:
        answer = plugin.run({"op": "testDatasource", "ds": ds(empty_url)})
        assert answer.get("result") == WORKING, (answer, empty_url.log_tail())
        source = empty_url.http.get(
            empty_url.datasource_url, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert "demo" in str(source.json().get("source", "")).lower(), source.text
    finally:
        empty_url.stop()


def test_save_and_test_at_the_root_url_passes_only_if_panels_work_there(plugin, backend):
    # A common slip: the backend's address without the /datasource suffix of README step 2.
    # Save & test must not say "working" where every panel then fails, and a panel's error
    # must say which URL to use.
    root = backend.url
    saved = plugin.run({"op": "testDatasource", "ds": ds(backend, url=root)})["result"]
    board = dashboard("anomaly-overview.json")
    (_, target), *_ = json_targets(board)
    panel = plugin.run(query_step(backend, [target], board=board, url=root))
    if saved["status"] == "success":
        assert "error" not in panel, (
            f"Save & test said {saved['message']!r} at {root}, "
            f"then the panel showed: {panel['error']['message']!r}"
        )
    else:
        assert "/datasource" in saved["message"], saved
    if "error" in panel:
        assert "/datasource" in panel["error"]["message"], panel["error"]
