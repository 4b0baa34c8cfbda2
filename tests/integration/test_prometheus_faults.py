"""Prometheus failing under a running service, with a real Prometheus process: stopped
mid-test, answering 5xx (through a fault proxy in front of it); the service answers
clean 502 JSON, /readyz says so, and it recovers without a restart."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry

from plugin_backend.config import load_settings
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app
from testkit.promserver import SyntheticSeries, start_backfilled

pytestmark = pytest.mark.integration

END_S = 1_764_000_000.0


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@pytest.fixture(scope="module")
def own_prometheus(tmp_path_factory):
    """A Prometheus of its own: this module stops and restarts it."""
    ts = END_S - 3600 + 15.0 * np.arange(241)
    series = [
        SyntheticSeries({"__name__": "fault_gauge", "i": str(i)}, ts, 10.0 + i + 0 * ts)
        for i in range(3)
    ]
    server = start_backfilled(series, tmp_path_factory.mktemp("faults-prom"))
    yield server
    server.stop()


def _panel(client):
    body = {
        "range": {"from": _iso(END_S - 1800), "to": _iso(END_S)},
        "intervalMs": 15_000,
        "maxDataPoints": 1000,
        "targets": [{"refId": "A", "target": "promql", "payload": {"expr": "fault_gauge"}}],
    }
    return client.post("/datasource/query", json=body)


def _client(url: str, **extra: str):
    settings = load_settings(
        {
            "PLUGIN_BACKEND_PROMETHEUS_URL": url,
            "PLUGIN_BACKEND_PROMETHEUS_RETRIES": "0",
            "PLUGIN_BACKEND_PROMETHEUS_TIMEOUT_S": "2",
            "PLUGIN_BACKEND_LLM_PROVIDER": "none",
            **extra,
        }
    )
    return create_app(settings, telemetry=Telemetry(CollectorRegistry())).test_client()


def test_prometheus_stopped_mid_test_then_back_on_the_same_port(own_prometheus):
    client = _client(own_prometheus.url)
    assert _panel(client).status_code == 200
    own_prometheus.stop()
    try:
        down = _panel(client)
        assert down.status_code == 502
        assert down.get_json()["error"]["code"] == "prometheus_unavailable"
        assert own_prometheus.url.removeprefix("http://") in down.get_json()["message"]
        ready = client.get("/readyz")
        assert (ready.status_code, ready.get_json()["status"]) == (503, "unavailable")
        assert client.get("/healthz").status_code == 200
    finally:
        own_prometheus.start()
    assert client.get("/readyz").status_code == 200  # same app, no restart
    back = _panel(client)
    assert back.status_code == 200
    assert len(back.get_json()) == 3


class _FaultProxy:
    """Forwards to Prometheus, or answers 503 for the next ``fail`` requests."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.fail > 0:
                    proxy.fail -= 1
                    payload = b'{"status":"error","errorType":"unavailable","error":"overloaded"}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                answer = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    data=body,
                    timeout=10,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_prometheus_5xx_is_a_clean_502_and_retries_ride_out_a_short_burst(own_prometheus):
    proxy = _FaultProxy(own_prometheus.url)
    try:
        client = _client(proxy.url)
        proxy.fail = 1
        failed = _panel(client)
        assert failed.status_code == 502
        assert "503" in failed.get_json()["message"]
        assert _panel(client).status_code == 200  # recovered, no restart
        patient = _client(
            proxy.url,
            PLUGIN_BACKEND_PROMETHEUS_RETRIES="2",
            PLUGIN_BACKEND_PROMETHEUS_BACKOFF_S="0.05",
        )
        proxy.fail = 2
        assert _panel(patient).status_code == 200  # two 503s retried away
        assert proxy.fail == 0
    finally:
        proxy.close()
