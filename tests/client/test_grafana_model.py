"""The model of Grafana around the plugin (harness/grafana.js) reproduces what users saw
before issue 17's fixes, against a stub datasource answering as the old backend did:

* a 308 to the trailing-slash URL goes to the browser, which calls the backend itself
  without the token, and Save & test reads "Data source is not working";
* a 401 becomes a bare 400 whose body Grafana replaced, so the user reads "Bad Request";
* a 403 passes through with its body, so the plugin shows the backend's reason.

Without these the tier could pass against a model that hides the very failures it is for.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytestmark = pytest.mark.client

TOKEN = "stub-token-0123456789"
REFUSAL = {
    "message": "token refused",
    "error": {"code": "unauthorized", "message": "token refused"},
}


class _OldBackend(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any], **headers: str) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        host = f"http://{self.headers['Host']}"
        if self.path == "/redirecting":
            self._answer(308, {}, Location=f"{host}/redirecting/")
        elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, REFUSAL, WWW_Authenticate='Bearer realm="stub"')
        elif self.path == "/forbidding":
            self._answer(403, REFUSAL)
        else:
            self._answer(200, {"status": "ok"})


@pytest.fixture(scope="module")
def old_backend() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (_OldBackend,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _save_and_test(plugin, url, token=TOKEN):
    return plugin.run({"op": "testDatasource", "ds": {"url": url, "token": token}})


def test_a_redirect_goes_to_the_browser_which_calls_without_the_token(plugin, old_backend):
    url, seen = old_backend
    seen.clear()
    answer = _save_and_test(plugin, url + "/redirecting")
    assert answer["result"]["message"] == "Data source is not working"
    assert seen == [("/redirecting", f"Bearer {TOKEN}"), ("/redirecting/", None)]
    assert [e["via"] for e in answer["exchanges"]] == ["proxy", "browser"]


def test_a_401_reads_bad_request(plugin, old_backend):
    url, _ = old_backend
    answer = _save_and_test(plugin, url + "/anything", token="wrong-token")
    assert answer["result"]["message"] == "Bad Request"
    assert answer["exchanges"][0]["rewritten_to"] == 400


def test_a_403_shows_the_backends_reason(plugin, old_backend):
    url, _ = old_backend
    answer = _save_and_test(plugin, url + "/forbidding")
    assert answer["result"]["message"] == "Forbidden: unauthorized. token refused"


def test_a_200_is_working(plugin, old_backend):
    url, _ = old_backend
    assert _save_and_test(plugin, url + "/fine")["result"]["status"] == "success"
