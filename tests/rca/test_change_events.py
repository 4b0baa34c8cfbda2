"""Deploy annotations in Grafana count as change events for root cause."""

from __future__ import annotations

import pytest

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.adapters.grafana import GrafanaClient
from plugin_backend.explain import ExplainService
from plugin_backend.types import TimeRange
from testkit.fakegrafana import FakeGrafana
from tests.demo_faults import demo_fault_start

TOKEN = "glsa_events"
DEPLOY_S = demo_fault_start("bad_deploy")  # the demo estate's bad deploy of checkout
SYMPTOM = 'http_errors_ratio{service="checkout"}'


@pytest.fixture
def grafana():
    with FakeGrafana(token=TOKEN) as fake:
        fake.seed(
            {
                "time": int(DEPLOY_S * 1000),
                "tags": ["deploy", "service:checkout"],
                "text": "Deploy <b>checkout</b> 2025.11.25-0100",
            }
        )
        fake.seed({"time": int(DEPLOY_S * 1000), "tags": ["maintenance"], "text": "unrelated"})
        fake.seed({"time": int((DEPLOY_S - 86_400) * 1000), "tags": ["deploy"], "text": "old"})
        yield fake


def test_the_client_asks_for_change_tags_in_the_range(grafana):
    client = GrafanaClient(grafana.url, TOKEN, change_tags=["deploy", "release"])
    (event,) = client.change_events(TimeRange(DEPLOY_S - 3600, DEPLOY_S + 600))
    assert (event.time_s, event.kind) == (DEPLOY_S, "deploy")
    assert event.labels == {"service": "checkout"}
    request = grafana.requests[-1]
    assert request.query["tags"] == ["deploy", "release"]
    assert request.query["matchAny"] == ["true"]
    assert request.query["from"] == [str(int((DEPLOY_S - 3600) * 1000))]


def test_a_deploy_annotation_is_ranked_as_a_cause_with_its_evidence(grafana):
    events = GrafanaClient(grafana.url, TOKEN)
    report = ExplainService(DemoSource(seed=7), events=events).explain(
        SYMPTOM, DEPLOY_S + 600, 1800
    )
    deploy = [c for c in report.causes if c.metric == "deploy_event"]
    assert len(deploy) == 1
    cause = deploy[0]
    assert report.causes.index(cause) < 3
    assert cause.labels["service"] == "checkout"
    assert cause.labels["text"] == "Deploy checkout 2025.11.25-0100"  # markup stripped
    assert cause.evidence.kind == "change_event"
    assert cause.onset_s == pytest.approx(DEPLOY_S, abs=60)


def test_grafana_down_leaves_root_cause_working(grafana):
    events = GrafanaClient(grafana.url, TOKEN, timeout_s=0.5)
    grafana.down()
    report = ExplainService(DemoSource(seed=7), events=events).explain(
        SYMPTOM, DEPLOY_S + 600, 1800
    )
    assert report.causes
    assert all(c.metric != "deploy_event" for c in report.causes)
