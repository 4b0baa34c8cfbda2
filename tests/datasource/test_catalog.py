"""The table of metric kinds: one entry per kind drives validation, the heavy-request
gate, rendering and the OpenAPI document."""

from __future__ import annotations

import pytest

from plugin_backend.datasource.catalog import KINDS, kind_named, validate_payload
from plugin_backend.errors import InvalidTarget
from plugin_backend.queries import TargetQuery
from plugin_backend.service import TargetResult


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_each_kind_validates_its_examples_and_renders_an_empty_result(kind):
    for payload in kind.examples.values() or [{"expr": "up"}]:
        options = validate_payload(kind.value, "A", payload)
        assert isinstance(options, kind.payload)
        frames = kind.render(TargetResult(TargetQuery("A", kind.value, options)), "http://pb")
        # a table kind answers one empty table; a series kind no series at all
        assert all(f["type"] == "table" and f["rows"] == [] for f in frames)
        assert len(frames) <= 1


def test_only_the_kinds_that_score_on_request_are_heavy():
    assert {k.value for k in KINDS if k.heavy} == {"anomaly_score", "band", "anomalies"}


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(InvalidTarget, match="unknown metric kind 'nope'; available: promql, "):
        kind_named("nope")


def test_a_bad_option_names_the_target_and_field():
    with pytest.raises(InvalidTarget, match=r"target B: payload\.sensitivity: "):
        validate_payload("band", "B", {"expr": "up", "sensitivity": -1})


def test_the_openapi_document_lists_every_kind_and_its_examples():
    from plugin_backend.config import load_settings
    from plugin_backend.web import create_app
    from plugin_backend.web.openapi import build_document

    app = create_app(load_settings({"PLUGIN_BACKEND_STORE_URL": "sqlite://"}))
    body = build_document(app)["paths"]["/datasource/query"]["post"]["requestBody"]
    target = build_document(app)["components"]["schemas"]["TargetBody"]["properties"]
    assert target["target"]["anyOf"][0]["enum"] == [k.value for k in KINDS]
    examples = body["content"]["application/json"]["examples"]
    expected = {name for k in KINDS for name in k.examples}
    assert set(examples) == expected
