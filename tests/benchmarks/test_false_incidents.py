"""The worker benchmark's tally of true and false incidents."""

from __future__ import annotations

import math

from benchmarks.false_incidents import (
    GRACE_S,
    ONSET_TOLERANCE_S,
    FaultWindow,
    replay_incidents,
    tally,
    total,
    watch_rule,
)
from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.detection import DetectionService
from plugin_backend.incidents import Incident
from plugin_backend.watch import RuleCycle


def _incident(start_s: float, end_s: float) -> Incident:
    return Incident(
        id=f"i{start_s:.0f}",
        key="k",
        origin="rule",
        title="t",
        query="q",
        series="s",
        start_s=start_s,
        end_s=end_s,
    )


def test_an_incident_is_true_when_it_overlaps_a_faults_window_with_its_grace() -> None:
    fault = FaultWindow(10_000.0, 12_000.0)
    incidents = [
        _incident(9_000.0, 10_000.0 - ONSET_TOLERANCE_S),  # reaches the tolerance: true
        _incident(12_000.0 + GRACE_S, 13_000.0),  # opens at the grace's end: true
        _incident(12_000.0 + GRACE_S + 15.0, 13_000.0),  # after it: false
        _incident(1_000.0, 2_000.0),  # long before: false
    ]
    t = tally("r", incidents, [fault], 86_400.0 / 2)
    assert (t.true, t.false, t.found, t.faults) == (2, 2, 1, 1)
    assert t.false_per_day == 4.0
    missed = tally("r", incidents[2:], [fault, FaultWindow(50_000.0, math.inf)], 86_400.0)
    assert (missed.true, missed.false, missed.found, missed.faults) == (0, 2, 0, 2)
    both = total("all", [t, missed])
    assert (both.true, both.false, both.found, both.faults) == (2, 4, 1, 3)
    assert both.false_per_day == 4 / 1.5  # per rule and day


def test_a_replay_over_a_demo_fault_opens_its_incident() -> None:
    """One replay cycle as ``worker --since`` runs it, on the demo's checkout latency over
    the 6 h around its pool exhaustion (whose symptoms include it)."""
    source = DemoSource(seed=7)
    (fault,) = (
        f for f in incidents_between(1764000000.0, 1764030000.0) if f.fault == "pg_pool_exhaustion"
    )
    start, end = fault.start_s - 4 * 3600, fault.end_s + 1800
    rule = watch_rule(
        "r", 'http_request_duration_seconds_p99{service="checkout"}', rate_control=False
    )
    cycle = RuleCycle(DetectionService(source, max_history_points=50_000), None)
    found = replay_incidents(cycle, rule, start, end)
    assert all(start <= i.start_s <= end for i in found)
    t = tally("r", found, [FaultWindow(fault.start_s, fault.end_s)], end - start)
    assert (t.found, t.faults) == (1, 1)
    assert t.true >= 1
