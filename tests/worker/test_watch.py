"""One rule's cycle over the demo estate: incidents open at the injected fault with
its root cause, grow, close; a replay finds what live cycles found."""

from __future__ import annotations

import dataclasses

import pytest

from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.detection import DetectionService
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Incident
from plugin_backend.rules import parse_rules
from plugin_backend.watch import RuleCycle
from tests.demo_faults import demo_fault_start

FAULT_START_S = demo_fault_start("pg_pool_exhaustion")  # 30 min, seed 7
RULES = parse_rules(
    """
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 30s
    dashboard_uid: anomaly-overview
    panel_id: 2
    labels: {team: payments}
    rate_control: false  # a fault every 4 h: deploy/demo-rules.yaml says why
  - name: unplaced
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    rate_control: false
"""
)
RULE = RULES.rules[0]


@pytest.fixture(scope="module")
def source() -> DemoSource:
    return DemoSource(seed=7)


def _cycle(source: DemoSource, *, explain: bool = True) -> RuleCycle:
    detection = DetectionService(source, max_history_points=50_000)
    return RuleCycle(
        detection, ExplainService(source) if explain else None, link_base="http://pb:8080"
    )


def _apply(known: dict[str, Incident], result_changed: list) -> None:
    for incident, _ in result_changed:
        known[incident.id] = incident


def test_the_injected_fault_becomes_one_explained_annotated_incident(source):
    (fault,) = [
        i
        for i in incidents_between(FAULT_START_S - 1, FAULT_START_S + 1)
        if i.start_s == FAULT_START_S
    ]
    result = _cycle(source).run(RULE, FAULT_START_S + 3600, [], lookback_s=3 * 3600)
    during = [
        inc
        for inc, _ in result.changed
        if fault.start_s - 300 <= inc.start_s <= fault.start_s + 900
    ]
    assert len(during) == 1, [i.title for i, _ in result.changed]
    incident, annotation = next((i, a) for i, a in result.changed if i is during[0])
    assert incident.status == "closed"  # replayed an hour later: it is over
    # it lasts as long as the symptom stays outside its normal range, not as long as the
    # detector's band takes to adapt, and the drop back after the fault is part of it
    assert incident.end_s - incident.start_s >= 0.8 * (fault.end_s - fault.start_s)
    assert incident.end_s <= fault.end_s + 900
    overlapping = [
        i for i, _ in result.changed if i.start_s <= fault.end_s + 1800 and i.end_s >= fault.start_s
    ]
    assert overlapping == [incident]
    assert incident.normal_low is not None
    assert incident.normal_high is not None
    assert incident.direction == "up"
    assert incident.cause == fault.root_cause_series
    assert fault.root_cause_series in incident.note
    assert incident.report is not None
    assert incident.report["causes"][0]["series"] == fault.root_cause_series
    assert incident.labels["team"] == "payments"
    assert annotation is not None
    assert (annotation.dashboard_uid, annotation.panel_id) == ("anomaly-overview", 2)
    assert annotation.time_ms == round(incident.start_s * 1000)
    assert f"incident:{incident.id}" in annotation.tags
    assert f'href="http://pb:8080/incidents/{incident.id}"' in annotation.text
    assert "resolved" in annotation.text
    assert result.score is not None


def test_replay_finds_exactly_what_live_cycles_found(source):
    start, end = FAULT_START_S - 1800, FAULT_START_S + 3600
    cycle = _cycle(source, explain=False)
    known: dict[str, Incident] = {}
    now = start
    while now <= end:
        result = cycle.run(RULE, now, list(known.values()))
        _apply(known, result.changed)
        now += 300
    replay = cycle.run(RULE, end, [], lookback_s=end - start + 3600)
    live_by_start = {round(i.start_s): i for i in known.values() if i.start_s >= start}
    replay_by_start = {round(i.start_s): i for i, _ in replay.changed if i.start_s >= start}
    assert live_by_start.keys() == replay_by_start.keys()
    assert live_by_start, "the fault must be found"
    for key, live in live_by_start.items():
        assert live.id == replay_by_start[key].id  # same identity: a replay never duplicates
        assert live.status == replay_by_start[key].status == "closed"
        assert live.end_s == pytest.approx(replay_by_start[key].end_s, abs=60)


def test_an_open_incident_closes_and_is_saved_only_on_change(source):
    cycle = _cycle(source, explain=False)
    first = cycle.run(RULE, FAULT_START_S + 600, [])
    (opened,) = [i for i, _ in first.changed if i.start_s >= FAULT_START_S - 300]
    assert opened.status == "open"
    assert first.opened == [opened.id]
    # 30 s later nothing worth saving changed
    again = cycle.run(RULE, FAULT_START_S + 630, [opened])
    assert [i.id for i, _ in again.changed if i.id == opened.id] == []
    later = cycle.run(RULE, FAULT_START_S + 3 * 3600, [opened])
    (closed,) = [i for i, _ in later.changed if i.id == opened.id]
    assert closed.status == "closed"
    assert closed.end_s >= opened.end_s
    assert opened.id in later.closed
    assert later.opened == [] or opened.id not in later.opened


def test_a_rule_without_a_panel_stores_incidents_without_annotations(source):
    rule = RULES.get("unplaced")
    assert rule is not None
    result = _cycle(source, explain=False).run(rule, FAULT_START_S + 3600, [], lookback_s=7200)
    assert result.changed
    assert all(annotation is None for _, annotation in result.changed)


def test_root_cause_failure_keeps_the_incident_with_a_note_saying_why(source):
    class Broken(ExplainService):
        def explain(self, query, at_s, window_s=1800.0):
            from plugin_backend.errors import PrometheusError

            raise PrometheusError("Prometheus at http://p:9090 refused the connection")

    detection = DetectionService(source, max_history_points=50_000)
    cycle = RuleCycle(detection, Broken(source))
    result = cycle.run(RULE, FAULT_START_S + 3600, [], lookback_s=7200)
    assert result.changed
    incident = result.changed[0][0]
    assert incident.note.startswith("Root cause not available: Prometheus at")
    assert incident.cause is None


def test_too_little_data_is_reported_not_raised():
    class Empty(DemoSource):
        def query_range(self, expr, time_range, step_s):
            series = super().query_range(expr, time_range, step_s)
            return [
                dataclasses.replace(s, timestamps_s=s.timestamps_s[-3:], values=s.values[-3:])
                for s in series
            ]

    source = Empty(seed=7)
    result = RuleCycle(DetectionService(source), None).run(RULE, FAULT_START_S, [])
    assert result.changed == []
    assert result.score is None
    assert result.note


def test_a_closed_incident_whose_end_moves_is_saved_but_an_open_one_waits_to_grow():
    from plugin_backend.watch import ANNOTATION_REFRESH_S, _worth_saving

    closed = Incident(
        id="i1",
        key="k",
        origin="rule",
        title="t",
        query="q",
        series="s",
        start_s=0.0,
        end_s=1000.0,
        status="closed",
    )
    # A detector window that flickers again within its gap after the recovery: the
    # record takes the end a replay of the same data would give.
    assert _worth_saving(closed, dataclasses.replace(closed, end_s=1135.0))
    assert not _worth_saving(closed, closed)
    still_open = dataclasses.replace(closed, status="open")
    assert not _worth_saving(still_open, dataclasses.replace(still_open, end_s=1135.0))
    grown = dataclasses.replace(still_open, end_s=1000.0 + ANNOTATION_REFRESH_S)
    assert _worth_saving(still_open, grown)
