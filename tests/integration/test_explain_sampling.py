"""`explain` on an estate sampled coarser than its query step (5 min CloudWatch
exports), through a real Prometheus: a finer step only repeats each sample (Prometheus
fills a step with the last sample), which moved onsets and cut PetShop's top-1 from
12/20 to 7/20. The service reads such an estate at its own sampling interval, once a
sample, and a finely sampled one at the span's step as before. A symptom given as an
expression (``rate(...)``, ``sum by (...) (...)``) has a new timestamp every step, so
the interval is probed on the raw series its selectors read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.explain import ExplainService, _step_for
from plugin_backend.rca.dependencies import load_dependency_map
from plugin_backend.types import Series, TimeRange
from testkit.promserver import SyntheticSeries, start_backfilled
from tests.needs import require_binary

pytestmark = pytest.mark.integration

AT_S = 1_764_000_000.0
FAULT_S = AT_S - 1800  # the database slows down; the frontend follows 10 min later
DEPS = load_dependency_map(
    {"services": {"frontend": {"depends_on": ["db"]}, "db": {}, "cache": {}}}
)


def _estate(sample_s: float) -> list[SyntheticSeries]:
    t = np.arange(AT_S - 10 * 3600, AT_S + 1, sample_s)
    rng = np.random.default_rng(4)

    def latency(service: str, base: float, from_s: float) -> SyntheticSeries:
        values = base * (1 + 0.03 * rng.standard_normal(t.size)) + base * 4 * (t >= from_s)
        return SyntheticSeries({"__name__": "latency_seconds", "service": service}, t, values)

    flat = 0.02 * (1 + 0.03 * rng.standard_normal(t.size))
    # the frontend's errors: 10/s, 50/s once it slows down (a counter, read by rate())
    per_s = 10 * (1 + 0.05 * rng.standard_normal(t.size)) + 40 * (t >= FAULT_S + 600)
    return [
        latency("frontend", 0.1, FAULT_S + 600),
        latency("db", 0.01, FAULT_S),
        SyntheticSeries({"__name__": "latency_seconds", "service": "cache"}, t, flat),
        SyntheticSeries(
            {"__name__": "errors_total", "service": "frontend"}, t, np.cumsum(per_s * sample_s)
        ),
    ]


class RecordingSource:
    """The Prometheus client, keeping the step of every range query."""

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client
        self.steps: list[tuple[str, float]] = []

    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        self.steps.append((expr, step_s))
        return self.client.query_range(expr, time_range, step_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


SYMPTOMS = {
    "selector": 'latency_seconds{service="frontend"}',
    "rate": 'rate(errors_total{service="frontend"}[15m])',
    "sum by": 'sum by (service) (latency_seconds{service="frontend"})',
}


@pytest.fixture(scope="module", params=[300.0, 15.0], ids=["5 min samples", "15 s samples"])
def estate(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[float, PrometheusClient]]:
    for binary in ("prometheus", "promtool"):
        require_binary(binary, "Debian package prometheus")
    server = start_backfilled(_estate(request.param), tmp_path_factory.mktemp("estate"))
    client = PrometheusClient(base_url=server.url)
    try:
        yield request.param, client
    finally:
        client.close()
        server.stop()


@pytest.fixture(params=list(SYMPTOMS))
def explained(
    request: pytest.FixtureRequest, estate: tuple[float, PrometheusClient]
) -> tuple[float, Any]:
    sample_s, client = estate
    source = RecordingSource(client)
    report = ExplainService(source, dependencies=DEPS).explain(SYMPTOMS[request.param], AT_S)
    return sample_s, (report, source.steps)


def test_each_sample_is_read_once_and_the_cause_found(explained: tuple[float, Any]) -> None:
    sample_s, (report, steps) = explained
    window = report.symptom["window_s"]
    span_step = _step_for(TimeRange(AT_S - window - 6 * 3600, AT_S))
    assert span_step < 300.0  # the span alone would read 5 min samples several times
    # the candidates are read by family ({__name__="..."}), at the symptom's last step
    ranking_steps = {step for expr, step in steps if expr.startswith("{")}
    if sample_s == 300.0:
        assert ranking_steps == {300.0}
    else:
        assert max(ranking_steps) < 300.0
    # the first cause outside the symptom's own service (whose errors rise with it)
    first_elsewhere = next(cause for cause in report.causes if cause.entity != "frontend")
    assert first_elsewhere.entity == "db"
    assert first_elsewhere.to_dict()["onset"] == pytest.approx(FAULT_S, abs=max(ranking_steps))
