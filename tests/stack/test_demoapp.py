"""The stack's demo application: its metrics, its faults and its HTTP endpoints."""

from __future__ import annotations

import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from plugin_backend.demoapp import FAULTS, RAMP_S, DemoApp, make_server

T0 = 1_767_268_800.0  # 2026-01-01 12:00 UTC


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> DemoApp:
    return DemoApp(seed=3, clock=clock)


def run(app: DemoApp, clock: FakeClock, seconds: int) -> None:
    for _ in range(seconds):
        clock.now += 1
        app.tick()


def value(app: DemoApp, name: str, **labels: str) -> float:
    found = app.registry.get_sample_value(name, labels)
    assert found is not None, f"{name}{labels} missing"
    return found


def snapshot(app: DemoApp) -> dict[str, float]:
    return {
        "checkout_cpu": value(app, "process_cpu_usage_ratio", service="checkout", node="node-a"),
        "frontend_cpu": value(app, "process_cpu_usage_ratio", service="frontend", node="node-a"),
        "checkout_p99": value(app, "http_request_duration_seconds_p99", service="checkout"),
        "frontend_p99": value(app, "http_request_duration_seconds_p99", service="frontend"),
        "checkout_errors": value(app, "http_errors_ratio", service="checkout"),
        "frontend_errors": value(app, "http_errors_ratio", service="frontend"),
        "pg_in_use": value(app, "pg_connections_in_use", service="postgres"),
        "pg_p99": value(app, "pg_query_duration_seconds_p99", service="postgres"),
        "redis_hits": value(app, "redis_hit_ratio", service="redis"),
    }


def test_every_service_exports_its_metrics(app: DemoApp, clock: FakeClock) -> None:
    run(app, clock, 30)
    families = {f.name: f for f in text_string_to_metric_families(app.exposition().decode())}
    services = {
        s.labels["service"] for f in families.values() for s in f.samples if "service" in s.labels
    }
    assert services == {"frontend", "checkout", "postgres", "redis"}
    assert families["http_request_duration_seconds"].type == "histogram"
    assert families["http_requests"].type == "counter"
    buckets = [
        s
        for s in families["http_request_duration_seconds"].samples
        if s.name == "http_request_duration_seconds_bucket" and s.labels["service"] == "checkout"
    ]
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value > 200  # ~12 requests/s for 30 s
    assert 0 < value(app, "http_errors_ratio", service="checkout") < 0.05
    assert value(app, "pg_connections_max", service="postgres") == 100
    assert 0.9 < value(app, "redis_hit_ratio", service="redis") <= 1
    assert all(value(app, "demo_fault_active", fault=name) == 0 for name in FAULTS)


def test_traffic_follows_the_daily_cycle(clock: FakeClock) -> None:
    def rps_at(hour_utc: float) -> float:
        clock.now = T0 - 12 * 3600 + hour_utc * 3600
        app = DemoApp(seed=5, clock=clock)
        run(app, clock, 60)
        return value(app, "http_requests_per_second", service="frontend")

    assert rps_at(15) > 1.8 * rps_at(3)  # peak in the afternoon, trough at night


@pytest.mark.parametrize(
    ("fault", "rises", "steady"),
    [
        ("cpu_hog", ["checkout_cpu", "checkout_p99", "frontend_p99"], ["frontend_cpu", "pg_p99"]),
        (
            "slow_dependency",
            ["pg_p99", "pg_in_use", "checkout_p99", "frontend_p99", "checkout_errors"],
            ["checkout_cpu", "redis_hits"],
        ),
        ("error_burst", ["checkout_errors", "frontend_errors"], ["checkout_p99", "pg_in_use"]),
        ("cache_failure", ["pg_in_use", "pg_p99", "checkout_p99"], ["checkout_cpu"]),
    ],
)
def test_a_fault_moves_its_own_metrics_and_clears(
    app: DemoApp, clock: FakeClock, fault: str, rises: list[str], steady: list[str]
) -> None:
    run(app, clock, 90)
    before = snapshot(app)
    app.start_fault(fault, 300)
    run(app, clock, int(RAMP_S) + 70)  # full strength, and a full rolling minute of it
    during = snapshot(app)
    assert value(app, "demo_fault_active", fault=fault) == 1
    for name in rises:
        assert during[name] > 1.5 * before[name], (name, before[name], during[name])
    for name in steady:
        assert during[name] == pytest.approx(before[name], rel=0.5), name
    if fault == "cache_failure":
        assert during["redis_hits"] < 0.3
    if fault == "slow_dependency":
        assert during["pg_in_use"] >= 90

    assert app.clear_faults() == [fault]
    run(app, clock, 90)
    after = snapshot(app)
    assert value(app, "demo_fault_active", fault=fault) == 0
    for name in rises:
        assert after[name] < 1.5 * before[name], (name, before[name], after[name])


def test_a_fault_ends_by_itself(app: DemoApp, clock: FakeClock) -> None:
    app.start_fault("error_burst", 30)
    run(app, clock, 10)
    assert [f.name for f in app.active_faults()] == ["error_burst"]
    run(app, clock, 25)
    assert app.active_faults() == []
    assert value(app, "demo_fault_active", fault="error_burst") == 0


def test_bad_fault_requests_are_refused(app: DemoApp) -> None:
    with pytest.raises(KeyError):
        app.start_fault("meteor_strike", 60)
    for duration in (0, -5, float("nan"), 10**9):
        with pytest.raises(ValueError, match="duration"):
            app.start_fault("cpu_hog", duration)


@pytest.fixture
def served(app: DemoApp, clock: FakeClock):
    run(app, clock, 5)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    session = requests.Session()
    session.trust_env = False
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}", session
    server.shutdown()
    server.server_close()


def test_http_endpoints(served) -> None:
    url, session = served
    metrics = session.get(url + "/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert 'http_request_duration_seconds_bucket{le="0.1",service="checkout"}' in metrics.text
    assert session.get(url + "/healthz", timeout=5).json() == {"status": "ok"}

    listing = session.get(url + "/faults", timeout=5).json()
    assert set(listing["available"]) == set(FAULTS)
    assert listing["active"] == []

    started = session.post(url + "/faults/slow_dependency?duration=600", timeout=5)
    assert started.status_code == 201
    assert started.json()["ends_at"] - started.json()["started_at"] == 600
    active = session.get(url + "/faults", timeout=5).json()["active"]
    assert [a["fault"] for a in active] == ["slow_dependency"]

    assert session.post(url + "/faults/nope", timeout=5).status_code == 404
    bad = session.post(url + "/faults/cpu_hog?duration=soon", timeout=5)
    assert bad.status_code == 400
    assert "duration" in bad.json()["error"]
    assert session.get(url + "/nowhere", timeout=5).status_code == 404

    cleared = session.delete(url + "/faults", timeout=5)
    assert cleared.json() == {"cleared": ["slow_dependency"]}
    assert session.get(url + "/faults", timeout=5).json()["active"] == []
