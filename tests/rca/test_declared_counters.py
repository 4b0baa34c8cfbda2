"""Counters are turned into rates by name (``_total``) and, where the source has
metric metadata, by the type their targets declare."""

from __future__ import annotations

import numpy as np

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.errors import PrometheusError
from plugin_backend.explain import ExplainService
from plugin_backend.types import TimeRange

AT_S = 1764018000.0 + 600


class DeclaringSource(DemoSource):
    """The demo estate, claiming that ``up`` is a counter (as scraped metadata would)."""

    def __init__(self, types: dict[str, str] | Exception) -> None:
        super().__init__(seed=7)
        self.types = types

    def metric_types(self) -> dict[str, str]:
        if isinstance(self.types, Exception):
            raise self.types
        return self.types


def _up_values(source: DemoSource) -> np.ndarray:
    service = ExplainService(source)
    span = TimeRange(AT_S - 5400, AT_S)
    (symptom,) = source.query_range(
        'http_request_duration_seconds_p99{service="checkout"}', span, 15.0
    )
    candidates = service._candidates(symptom, span, 15.0)
    ups = [s for s in candidates if s.metric == "up"]
    assert ups
    return np.concatenate([s.values for s in ups])


def test_a_declared_counter_becomes_a_rate():
    plain = _up_values(DemoSource(seed=7))
    assert np.nanmax(plain) == 1.0  # a gauge stays as it is
    rated = _up_values(DeclaringSource({"up": "counter"}))
    finite = rated[np.isfinite(rated)]
    assert finite.size
    assert np.all(finite == 0.0)  # a constant "counter" has no increase


def test_metadata_failing_falls_back_to_names():
    values = _up_values(DeclaringSource(PrometheusError("metadata endpoint down")))
    assert np.nanmax(values) == 1.0
