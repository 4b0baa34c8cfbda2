"""deploy/grafana-init/grafana_token.py against a stub of Grafana's service-account API."""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import stat
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from plugin_backend.config import load_settings
from tests.stack.support import ROOT

SCRIPT = ROOT / "deploy" / "grafana-init" / "grafana_token.py"
ADMIN = base64.b64encode(b"admin:s3cret").decode()


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_token", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


grafana_token = _load_script()


class StubGrafana(ThreadingHTTPServer):
    """Service accounts, tokens and one bearer-authenticated API route."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.accounts: dict[int, dict[str, Any]] = {}
        self.tokens: dict[str, int] = {}  # key -> account id
        self.ids = itertools.count(2)
        self.calls: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    server: StubGrafana

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _admin(self) -> bool:
        if self.headers.get("Authorization") == f"Basic {ADMIN}":
            return True
        self._answer(401, {"message": "invalid username or password"})
        return False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.calls.append(f"GET {url.path}")
        if url.path == "/api/health":
            self._answer(200, {"database": "ok"})
        elif url.path == "/api/search":
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token in self.server.tokens:
                self._answer(200, [])
            else:
                self._answer(401, {"message": "invalid API key"})
        elif url.path == "/api/serviceaccounts/search" and self._admin():
            query = parse_qs(url.query).get("query", [""])[0]
            found = [a for a in self.server.accounts.values() if query in a["name"]]
            self._answer(200, {"totalCount": len(found), "serviceAccounts": found})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.server.calls.append(f"POST {url.path}")
        if not self._admin():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        parts = url.path.strip("/").split("/")
        if parts == ["api", "serviceaccounts"]:
            account = {"id": next(self.server.ids), "name": body["name"], "role": body["role"]}
            self.server.accounts[account["id"]] = account
            self._answer(201, account)
        elif parts[:2] == ["api", "serviceaccounts"] and parts[3:] == ["tokens"]:
            account_id = int(parts[2])
            key = f"glsa_{len(self.server.tokens) + 1}"
            self.server.tokens[key] = account_id
            self._answer(200, {"id": len(self.server.tokens), "name": body["name"], "key": key})
        else:
            self._answer(404, {"message": "not found"})


@pytest.fixture
def grafana() -> Iterator[StubGrafana]:
    server = StubGrafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(grafana: StubGrafana, tmp_path: Path) -> dict[str, str]:
    return {
        "GRAFANA_URL": f"http://127.0.0.1:{grafana.server_address[1]}",
        "GRAFANA_ADMIN_USER": "admin",
        "GRAFANA_ADMIN_PASSWORD": "s3cret",
        "TOKEN_FILE": str(tmp_path / "data" / "grafana-token.yaml"),
        "WAIT_S": "5",
    }


def test_creates_the_service_account_and_a_settings_file(grafana, env, capsys) -> None:
    assert grafana_token.main(env) == 0
    (account,) = grafana.accounts.values()
    assert account == {"id": 2, "name": "plugin-backend", "role": "Editor"}
    assert grafana.tokens == {"glsa_1": 2}
    path = Path(env["TOKEN_FILE"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = load_settings({}, config_path=path)  # what api and worker load
    assert settings.grafana_token is not None
    assert settings.grafana_token.get_secret_value() == "glsa_1"
    assert "wrote token" in capsys.readouterr().out


def test_a_valid_token_is_kept(grafana, env) -> None:
    assert grafana_token.main(env) == 0
    assert grafana_token.main(env) == 0
    assert list(grafana.tokens) == ["glsa_1"]


def test_a_refused_token_is_replaced_on_the_same_account(grafana, env) -> None:
    assert grafana_token.main(env) == 0
    grafana.tokens.clear()  # revoked in Grafana
    assert grafana_token.main(env) == 0
    assert len(grafana.accounts) == 1
    assert grafana_token.read_token(Path(env["TOKEN_FILE"])) == "glsa_1"  # new, same name
    assert grafana.calls.count("POST /api/serviceaccounts") == 1


def test_wrong_admin_password_fails_with_grafanas_message(grafana, env, capsys) -> None:
    assert grafana_token.main({**env, "GRAFANA_ADMIN_PASSWORD": "nope"}) == 1
    assert "401" in capsys.readouterr().err
    assert not Path(env["TOKEN_FILE"]).exists()


def test_gives_up_when_grafana_never_answers(env, capsys) -> None:
    from testkit.promserver import find_free_port

    closed = f"http://127.0.0.1:{find_free_port()}"
    assert grafana_token.main({**env, "GRAFANA_URL": closed, "WAIT_S": "1"}) == 1
    assert "not healthy" in capsys.readouterr().err
