"""The tier's backend (``plugin-backend serve``) and the steps for the plugin harness,
built from the project's dashboards and Grafana's habits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from plugin_backend.config import Settings
from tests.processes import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = Path(__file__).resolve().parent
PLUGIN_SRC = ROOT.parent / "shared" / "contracts" / "simpod-plugin-src"
NODE_MODULES = CLIENT_DIR / "node_modules"
LOCK_STAMP = NODE_MODULES / ".plugin-backend-lock.sha256"

API_TOKEN = "client-tier-token"
BASIC_USER, BASIC_PASSWORD = "oncall", "client-tier-password"


DASHBOARDS = ROOT / "dashboards"
JSON_DATASOURCE = "simpod-json-datasource"
_UNITS_S = {"m": 60, "h": 3600, "d": 86400}


class Backend(ServiceProcess):
    """The gunicorn backend the plugin's code talks to."""

    @property
    def datasource_url(self) -> str:
        """The URL README step 2 tells users to type: no trailing slash."""
        return self.url + "/datasource"


def backend_env(port: int, workdir: Path, **settings: str) -> dict[str, str]:
    """Our environment without any PLUGIN_BACKEND_* of the caller, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_BACKEND_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    wanted = {
        "port": str(port),
        "workers": "2",
        "log_level": "WARNING",
        "multiproc_dir": str(workdir / "metrics"),
        "store_url": f"sqlite:///{workdir / 'store.db'}",
        "api_token": API_TOKEN,
        "basic_auth_user": BASIC_USER,
        "basic_auth_password": BASIC_PASSWORD,
        "llm_provider": "none",
        **settings,
    }
    unknown = set(wanted) - set(Settings.model_fields)
    assert not unknown, f"not settings of the backend: {unknown}"
    env.update({f"PLUGIN_BACKEND_{k.upper()}": v for k, v in wanted.items()})
    return env


def start_backend(workdir: Path, env: dict[str, str], port: int) -> Backend:
    """``plugin-backend serve`` (gunicorn), waited for until /readyz answers 200."""
    log = workdir / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin_backend", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    backend = Backend(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 90
    while True:
        try:
            if backend.http.get(backend.url + "/readyz", timeout=2).status_code == 200:
                return backend
        except requests.RequestException:
            pass  # not listening yet
        if proc.poll() is not None or time.monotonic() > deadline:
            backend.stop()
            raise RuntimeError(f"plugin-backend serve did not start:\n{backend.log_tail()}")
        time.sleep(0.2)


def dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return loaded


def dashboard_names() -> list[str]:
    return sorted(p.name for p in DASHBOARDS.glob("*.json"))


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in board.get("panels", []):
        out.append(panel)
        out += panel.get("panels", [])
    return out


def _uses_json_datasource(thing: dict[str, Any]) -> bool:
    return (thing.get("datasource") or {}).get("type") == JSON_DATASOURCE


def json_targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every panel query sent to this backend."""
    return [
        (panel.get("title", ""), target)
        for panel in all_panels(board)
        for target in panel.get("targets", [])
        if _uses_json_datasource(target) or _uses_json_datasource(panel)
    ]


def json_annotations(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in board.get("annotations", {}).get("list", []) if _uses_json_datasource(a)]


def json_variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Query variables answered by this backend."""
    return [
        v
        for v in board.get("templating", {}).get("list", [])
        if v.get("type") == "query" and _uses_json_datasource(v)
    ]


def variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's variables at their saved current values, as Grafana holds them."""
    out = []
    for v in board.get("templating", {}).get("list", []):
        out.append(
            {
                "name": v["name"],
                "type": v["type"],
                "current": v.get("current", {}),
                "options": v.get("options", []),
                "multi": v.get("multi", False),
                "includeAll": v.get("includeAll", False),
                "allValue": v.get("allValue"),
            }
        )
    return out


def time_range(board: dict[str, Any] | None = None, span: str | None = None) -> dict[str, int]:
    """The dashboard's relative time range (``now-6h`` .. ``now``) in epoch ms."""
    relative = span or (board or {}).get("time", {}).get("from", "now-6h")
    amount = relative.removeprefix("now-")
    seconds = int(amount[:-1]) * _UNITS_S[amount[-1]]
    now_ms = int(time.time() * 1000)
    return {"from_ms": now_ms - seconds * 1000, "to_ms": now_ms}


def ds(
    backend: Backend, *, url: str | None = None, token: str | None = API_TOKEN
) -> dict[str, Any]:
    """The datasource as a user configures it in Grafana: URL and the Authorization header."""
    config: dict[str, Any] = {"url": url if url is not None else backend.datasource_url}
    if token is not None:
        config["token"] = token
    return config


def query_step(
    backend: Backend,
    targets: list[dict[str, Any]],
    *,
    board: dict[str, Any] | None = None,
    filters: list[dict[str, Any]] | None = None,
    span: str | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    return {
        "op": "query",
        "ds": ds(backend, url=url),
        "variables": variables(board) if board else [],
        "range": time_range(board, span),
        "intervalMs": 60_000,
        "maxDataPoints": 500,
        "targets": targets,
        "filters": filters,
    }


def field_names(frame: dict[str, Any]) -> list[str]:
    return [f["name"] for f in frame["fields"]]


def column(frame: dict[str, Any], name: str) -> list[Any]:
    for f in frame["fields"]:
        if f["name"] == name:
            values: list[Any] = f["values"]
            return values
    raise AssertionError(f"no column {name!r} in {field_names(frame)}")


def redirects(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Exchanges answered with a redirect, and any call the browser made by itself."""
    return [
        e
        for e in answer["exchanges"]
        if e["via"] == "browser" or 300 <= e.get("status", 0) < 400 or "location" in e
    ]
