"""The dashboards' annotation queries of this backend, run as Grafana runs them: the
plugin's query() with the annotation's target, frames mapped by Grafana's default
annotation fields (time, timeEnd, title, text, tags)."""

from __future__ import annotations

import pytest

from tests.client.support import (
    dashboard,
    dashboard_names,
    ds,
    json_annotations,
    time_range,
)
from tests.client.support import variables as dashboard_variables

pytestmark = pytest.mark.client

ANNOTATIONS = [
    pytest.param(name, annotation, id=f"{name}:{annotation['name']}")
    for name in dashboard_names()
    for annotation in json_annotations(dashboard(name))
]


def _run(plugin, backend, name, annotation, span="now-24h"):
    board = dashboard(name)  # alarms: the server default, the band's edge on the demo
    return plugin.run(
        {
            "op": "annotations",
            "ds": ds(backend),
            "variables": dashboard_variables(board),
            "range": time_range(span=span),
            "target": annotation["target"],
        }
    )


def test_the_dashboards_have_annotation_queries_of_this_backend():
    assert len(ANNOTATIONS) >= 2


@pytest.mark.parametrize(("name", "annotation"), ANNOTATIONS)
def test_each_annotation_query_yields_annotations(plugin, backend, name, annotation):
    answer = _run(plugin, backend, name, annotation)
    assert "error" not in answer, answer
    events = answer["annotations"]
    assert events, f"{annotation['name']}: no annotation in 24 h of the demo estate"
    range_ = time_range(span="now-24h")
    for event in events:
        assert isinstance(event["time"], int | float), event
        end = event["timeEnd"] if event["timeEnd"] is not None else event["time"]
        assert end >= event["time"], event
        assert event["time"] <= range_["to_ms"], event  # overlaps the range asked for
        assert end >= range_["from_ms"], event
        assert event["title"], event
        assert event["text"], event
        assert event["tags"], event
        assert all(isinstance(t, str) and t for t in event["tags"]), event
