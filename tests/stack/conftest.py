"""Fixtures of the stack tests: the repository's stack files, and real processes.

* ``demo_backend``: ``plugin-backend serve`` under gunicorn over the built-in demo
  estate (the JSON-datasource panels run against it), notes from a stub
  OpenAI-compatible LLM (so the LLM self-metrics exist);
* ``source_backend``: the same over ``stack_prometheus`` (Prometheus-source metrics);
* ``demoapp``: ``python -m plugin_backend.demoapp`` (the stack's demo app);
* ``stack_prometheus``: a real Prometheus run with ``deploy/prometheus/prometheus.yml``,
  its targets pointed at the processes above and a 1 s scrape interval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from plugin_backend.config import Settings
from testkit.fakegrafana import FakeGrafana
from testkit.promserver import find_free_port
from tests.needs import require_binary
from tests.processes import ServiceProcess
from tests.stack.support import (
    API_TOKEN,
    DEPENDENCIES_FILE,
    PROMETHEUS_CONFIG,
    ROOT,
    RULES_FILE,
    load_yaml,
    session,
)

# --- processes ---------------------------------------------------------------------------


# A started service of the stack (the backend, the worker, the demo application).
Process = ServiceProcess


def _start(cmd: list[str], env: dict[str, str], log: Path, url: str, probe: str) -> Process:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    started = Process(url, proc, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if started.http.get(url + probe, timeout=2).status_code == 200:
                return started
        except requests.RequestException:
            pass  # not listening yet
        if proc.poll() is not None or time.monotonic() > deadline:
            started.stop()
            raise RuntimeError(f"{' '.join(cmd)} did not start:\n{started.log_tail()}")
        time.sleep(0.1)


def backend_env(port: int, workdir: Path, **settings: str) -> dict[str, str]:
    """Environment of a test backend: ours only, plus the settings the backend knows.

    Settings that land later (the API token, the store) are passed once ``Settings``
    has them, so the same tests cover them then.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_BACKEND_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    wanted = {
        "port": str(port),
        "workers": "1",
        "warm_detectors": "",
        "log_level": "WARNING",
        "multiproc_dir": str(workdir / "metrics"),
        "api_token": API_TOKEN,
        "store_url": f"sqlite:///{workdir / 'store.db'}",
        "dependencies": str(DEPENDENCIES_FILE),
        **settings,
    }
    known = Settings.model_fields
    env.update({f"PLUGIN_BACKEND_{k.upper()}": v for k, v in wanted.items() if k in known})
    return env


class _StubLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose notes the backend rejects (not JSON)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps(
            {
                "id": "stub",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "no JSON here"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def llm_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def demo_store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The store the demo backend and the demo worker share (as api and worker do)."""
    return f"sqlite:///{tmp_path_factory.mktemp('demo-store') / 'plugin-backend.db'}"


@pytest.fixture(scope="session")
def demo_backend(
    tmp_path_factory: pytest.TempPathFactory, llm_stub: str, demo_store_url: str
) -> Iterator[Process]:
    """The API over the built-in demo estate, under real gunicorn."""
    workdir = tmp_path_factory.mktemp("demo-backend")
    port = find_free_port()
    env = backend_env(
        port,
        workdir,
        store_url=demo_store_url,
        llm_provider="openai",
        llm_url=llm_stub,
        llm_model="stub",
        llm_timeout_s="5",
    )
    backend = _start(
        [sys.executable, "-m", "plugin_backend", "serve"],
        env,
        workdir / "gunicorn.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )
    backend.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    yield backend
    backend.stop()


# The demo estate's checkout latency: every injected incident moves it (see adapters/demo.py).
# Band-edge alarms, as the demo's rules: the faults recur more often than one alarm per
# three days, which the rate-controlled threshold learns as normal.
DEMO_RULES = """\
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 10s
    dashboard_uid: anomaly-overview
    panel_id: 2
    detector: robust_z
    direction: up
    labels: {service: checkout}
    rate_control: false
"""


@pytest.fixture(scope="session")
def fake_grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana(token="glsa_stack_test") as grafana:
        yield grafana


@pytest.fixture(scope="session")
def demo_worker(
    tmp_path_factory: pytest.TempPathFactory,
    demo_backend: Process,
    demo_store_url: str,
    fake_grafana: FakeGrafana,
) -> Iterator[Process]:
    """`plugin-backend worker` as compose runs it, over the demo estate, after replaying
    18 h: incidents in the demo backend's store, annotations in a fake Grafana.

    18 h, not less: the demo's four faults take turns every 4 h, and only some of them
    move checkout p99 up; a full 16 h turn always holds a pg-pool exhaustion, so the
    tests do not depend on the time of day they run at."""
    workdir = tmp_path_factory.mktemp("demo-worker")
    rules = workdir / "rules.yaml"
    rules.write_text(DEMO_RULES, encoding="utf-8")
    port = find_free_port()
    env = backend_env(
        find_free_port(),
        workdir,
        store_url=demo_store_url,
        llm_provider="none",
        grafana_url=fake_grafana.url,
        grafana_token=fake_grafana.token,
        grafana_org_id="1",
        public_url=demo_backend.url,
    )
    cmd = [sys.executable, "-m", "plugin_backend", "worker", "--rules", str(rules), "--since",
           "18h", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]  # fmt: skip
    worker = _start(cmd, env, workdir / "worker.log", f"http://127.0.0.1:{port}", "/metrics")
    deadline = time.monotonic() + 60
    while (
        "plugin_backend_worker_cycles_total{" not in worker.http.get(worker.url + "/metrics").text
    ):
        assert worker.proc.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, f"no worker cycle after 60 s:\n{worker.log_tail()}"
        time.sleep(0.2)
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def demoapp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    workdir = tmp_path_factory.mktemp("demoapp")
    port = find_free_port()
    app = _start(
        [sys.executable, "-m", "plugin_backend.demoapp", "--port", str(port)],
        dict(os.environ),
        workdir / "demoapp.log",
        f"http://127.0.0.1:{port}",
        "/healthz",
    )
    yield app
    app.stop()


def _rewrite_targets(config: dict[str, Any], targets: dict[str, list[str]]) -> dict[str, Any]:
    """The deploy config with compose host names mapped to local processes, scraped every 1 s."""
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s", "scrape_timeout": "1s"}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            mapped = []
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host in targets, f"job {job['job_name']}: unknown host {host!r}"
                mapped += targets[host]
            static["targets"] = mapped
    return config


@dataclass
class StackPrometheus:
    url: str
    http: requests.Session
    config_path: Path
    targets: dict[str, list[str]]

    def write_config(self) -> None:
        config = _rewrite_targets(load_yaml(PROMETHEUS_CONFIG), self.targets)
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def reload(self) -> None:
        self.write_config()
        assert self.http.post(self.url + "/-/reload", timeout=10).ok

    def query_range(self, expr: str, seconds: float = 60.0) -> dict[str, Any]:
        now = time.time()
        response = self.http.get(
            f"{self.url}/api/v1/query_range",
            params={"query": expr, "start": now - seconds, "end": now, "step": "1s"},
            timeout=10,
        )
        body: dict[str, Any] = response.json()
        return body

    def wait_for(self, expr: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = self.http.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
            if body.json()["data"]["result"]:
                return
            time.sleep(0.25)
        raise AssertionError(f"Prometheus never had {expr}")


@pytest.fixture(scope="session")
def stack_prometheus(
    tmp_path_factory: pytest.TempPathFactory,
    demo_backend: Process,
    demo_worker: Process,
    demoapp: Process,
) -> Iterator[StackPrometheus]:
    """Prometheus with the stack's config, scraping the test processes every second.

    ``source_backend`` (below) is started after it and added through a reload.
    """
    binary = require_binary("prometheus", "Debian package prometheus")
    workdir = tmp_path_factory.mktemp("stack-prometheus")
    port = find_free_port()
    targets = {
        "api": [demo_backend.url.removeprefix("http://")],
        "worker": [demo_worker.url.removeprefix("http://")],
        "demo": [demoapp.url.removeprefix("http://")],
        "localhost": [f"127.0.0.1:{port}"],
    }
    config_path = workdir / "prometheus.yml"
    StackPrometheus("", session(), config_path, targets).write_config()
    cmd = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    log = workdir / "prometheus.log"
    prom = _start(cmd, dict(os.environ), log, f"http://127.0.0.1:{port}", "/-/ready")
    yield StackPrometheus(prom.url, prom.http, config_path, targets)
    prom.stop()


@pytest.fixture(scope="session")
def source_backend(
    tmp_path_factory: pytest.TempPathFactory, stack_prometheus: StackPrometheus
) -> Iterator[Process]:
    """The API over the stack Prometheus (as in docker compose), scraped by it too."""
    workdir = tmp_path_factory.mktemp("source-backend")
    port = find_free_port()
    env = backend_env(
        port,
        workdir,
        prometheus_url=stack_prometheus.url,
        llm_provider="none",
        rules=str(RULES_FILE),
    )
    backend = _start(
        [sys.executable, "-m", "plugin_backend", "serve"],
        env,
        workdir / "gunicorn.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )
    backend.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    stack_prometheus.targets["api"].append(backend.url.removeprefix("http://"))
    stack_prometheus.reload()
    yield backend
    backend.stop()
