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
