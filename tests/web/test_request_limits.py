"""Per-request protections: a time budget shared by every outbound call of a request,
and a cap on concurrent heavy (scoring, root-cause) requests per worker."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.config import load_settings
from plugin_backend.deadline import bounded_timeout, deadline, remaining_s
from plugin_backend.errors import DeadlineExceeded, LimitExceeded, PrometheusTimeout
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app
from plugin_backend.web.limits import HeavyRequestGate

BODY = {
    "range": {"from": "2025-11-24T20:00:00Z", "to": "2025-11-24T21:00:00Z"},
    "intervalMs": 60_000,
    "maxDataPoints": 100,
    "targets": [
        {
            "refId": "A",
            "target": "anomaly_score",
            "payload": {"expr": 'http_request_duration_seconds_p99{service="checkout"}'},
        }
    ],
}


def test_deadline_cuts_each_timeout_and_refuses_when_spent():
    assert remaining_s() is None
    assert bounded_timeout(30.0, "x") == 30.0
    with deadline(0.5):
        left = remaining_s()
        assert left is not None
        assert 0.4 < left <= 0.5
        assert bounded_timeout(30.0, "x") <= 0.5
        time.sleep(0.5)
        with pytest.raises(DeadlineExceeded) as info:
            bounded_timeout(30.0, "Prometheus at http://p")
    assert "PLUGIN_BACKEND_REQUEST_DEADLINE_S" in info.value.message
    assert "Prometheus at http://p" in info.value.message
    assert info.value.http_status == 504
    assert remaining_s() is None


def test_a_slow_prometheus_cannot_hold_a_request_past_its_budget():
    import socket

    # accepts connections, never answers: every call would wait its full 30 s timeout
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    client = PrometheusClient(
        base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
        timeout_s=30,
        retries=2,
        backoff_s=0.01,
    )
    started = time.monotonic()
    try:
        with deadline(1.0), pytest.raises(PrometheusTimeout) as info:
            client.query("up", 0.0)
    finally:
        listener.close()
    assert time.monotonic() - started < 2.5
    assert info.value.http_status == 504  # clean 504 JSON in the web layer


def test_the_gate_admits_its_capacity_then_429s_naming_the_limit():
    gate = HeavyRequestGate(2, wait_s=0.05)
    with gate.hold(), gate.hold():
        with pytest.raises(LimitExceeded) as info, gate.hold():
            pass
        assert info.value.http_status == 429
        assert "PLUGIN_BACKEND_MAX_CONCURRENT_HEAVY" in info.value.message
    with gate.hold():  # slots are released
        pass


def test_heavy_panels_beyond_the_cap_get_a_json_429_and_light_ones_still_pass():
    release = threading.Event()
    entered = threading.Event()

    class SlowDemo(DemoSource):
        def query_range(self, expr, time_range, step_s):
            if "checkout" in expr:
                entered.set()
                release.wait(10)
            return super().query_range(expr, time_range, step_s)

    settings = load_settings(
        {
            "PLUGIN_BACKEND_LLM_PROVIDER": "none",
            "PLUGIN_BACKEND_MAX_CONCURRENT_HEAVY": "1",
            "PLUGIN_BACKEND_HEAVY_WAIT_S": "0.2",
        }
    )
    app = create_app(settings, source=SlowDemo(seed=7), telemetry=Telemetry(CollectorRegistry()))
    first_status: list[int] = []
    worker = threading.Thread(
        target=lambda: first_status.append(
            app.test_client().post("/datasource/query", json=BODY).status_code
        )
    )
    worker.start()
    try:
        assert entered.wait(10)
        refused = app.test_client().post("/datasource/query", json=BODY)
        assert refused.status_code == 429
        assert refused.get_json()["error"]["code"] == "limit_exceeded"
        assert "max_concurrent_heavy".upper() in refused.get_json()["message"].upper()
        light = dict(BODY, targets=[{"refId": "B", "target": "promql", "payload": {"expr": "up"}}])
        assert app.test_client().post("/datasource/query", json=light).status_code == 200
    finally:
        release.set()
        worker.join(10)
    assert first_status == [200]
