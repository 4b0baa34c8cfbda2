"""Per-request protections: a time budget shared by every outbound call of a request,
and a cap on concurrent heavy (scoring, root-cause) requests per worker."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.config import load_settings
from plugin_backend.deadline import MIN_USEFUL_S, bounded_timeout, deadline, remaining_s
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


class FakeClock:
    """A monotonic clock the test moves by hand (times exact in binary)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_deadline_cuts_each_timeout_and_refuses_when_spent():
    clock = FakeClock()
    assert remaining_s() is None
    assert bounded_timeout(30.0, "x") == 30.0
    with deadline(1.0, clock=clock):
        assert remaining_s() == 1.0
        assert bounded_timeout(30.0, "x") == 1.0
        assert bounded_timeout(0.5, "x") == 0.5  # a shorter timeout is kept
        clock.now += 0.75
        assert remaining_s() == 0.25
        assert bounded_timeout(30.0, "x") == 0.25
        clock.now += 0.1875  # 0.0625 left: still worth a call
        assert bounded_timeout(30.0, "x") == 0.0625
        clock.now += 0.015625  # 0.046875 left: under MIN_USEFUL_S
        assert remaining_s() == 0.046875 < MIN_USEFUL_S
        with pytest.raises(DeadlineExceeded) as info:
            bounded_timeout(30.0, "Prometheus at http://p")
        clock.now += 5.0
        assert remaining_s() == -4.953125  # overdrawn, not clamped
    assert "1 s budget" in info.value.message
    assert "PLUGIN_BACKEND_REQUEST_DEADLINE_S" in info.value.message
    assert "Prometheus at http://p" in info.value.message
    assert info.value.http_status == 504
    assert remaining_s() is None
    assert bounded_timeout(30.0, "x") == 30.0


def test_deadlines_nest_and_no_budget_means_no_limit():
    clock = FakeClock()
    with deadline(None):
        assert remaining_s() is None
    with deadline(2.0, clock=clock):
        with deadline(0.5, clock=clock):
            assert remaining_s() == 0.5
        assert remaining_s() == 2.0
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
    try:
        # a clock that stands still: the budget left when the call starts is exactly 0.25 s
        with deadline(0.25, clock=FakeClock()), pytest.raises(PrometheusTimeout) as info:
            client.query("up", 0.0)
    finally:
        listener.close()
    # the socket waited the budget, not the client's 30 s, and the read timeout was final
    assert info.value.message.endswith("did not answer within 0.25s")
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
        worker.join(60)  # scoring on a busy machine can take a while
    assert first_status == [200]
