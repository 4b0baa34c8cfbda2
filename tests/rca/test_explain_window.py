"""`explain` without a window: it follows the symptom back from its own onset."""

from __future__ import annotations

import pytest

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.explain import ExplainService
from plugin_backend.rca.window import LEAD_S
from tests.demo_faults import demo_fault_start

DEPLOY_S = demo_fault_start("bad_deploy")  # the demo estate's bad deploy of checkout
SYMPTOM = 'http_errors_ratio{service="checkout"}'


@pytest.mark.parametrize("late_s", [300.0, 1500.0])
def test_without_a_window_it_reaches_back_past_the_symptoms_onset(late_s: float) -> None:
    # The deploy's errors last 30 min; asked 5 or 25 min into them, the window
    # starts at least LEAD_S before the symptom's onset and the deploy's service
    # is among the first causes.
    report = ExplainService(DemoSource(seed=7)).explain(SYMPTOM, DEPLOY_S + late_s)
    window = report.symptom["window_s"]
    assert window >= LEAD_S
    assert report.symptom["at"] - window <= DEPLOY_S - LEAD_S + 300
    top_entities = [c.entity for c in report.causes[:3]]
    assert "checkout" in top_entities


def test_an_explicit_window_is_an_override() -> None:
    report = ExplainService(DemoSource(seed=7)).explain(SYMPTOM, DEPLOY_S + 600, 900.0)
    assert report.symptom["window_s"] == 900.0


def test_a_daily_cycle_drifting_from_the_first_regime_is_not_followed_back_for_hours() -> None:
    """Eight hours of a symptom that only follows its daily cycle: change points mark the
    drift, but no onset with a normal period before it exists, so the window stays
    ``LEAD_S`` (it reached back 15 hours on the demo estate)."""
    import numpy as np

    from plugin_backend.rca.window import symptom_window
    from plugin_backend.types import Series

    step = 60.0
    t = 1_700_000_000.0 + step * np.arange(int(8 * 3600 / step))
    rng = np.random.default_rng(3)
    x = 0.2 + 0.08 * np.sin(2 * np.pi * (t % 86_400) / 86_400) + rng.normal(0, 0.002, t.size)
    at = float(t[-1])
    window, _ = symptom_window(Series({"__name__": "p99"}, t, x), at_s=at, step_s=step)
    assert window == LEAD_S
