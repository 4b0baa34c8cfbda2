"""Every endpoint's real response matches what the plugin accepts (our own contract)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.contracts.endpoint_calls import REQUESTS

SCHEMA = json.loads((Path(__file__).parent / "plugin_responses.schema.json").read_text())


def _validator(path: str) -> jsonschema.Draft202012Validator:
    schema = {"$defs": SCHEMA["$defs"], **SCHEMA["endpoints"][path]}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_response_matches_what_the_plugin_accepts(responses, name):
    path, body = responses[name]
    assert body, f"{name}: the demo estate must give a non-empty answer"
    errors = sorted(_validator(path).iter_errors(body), key=str)
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_the_golden_contract_rejects_wrong_shapes():
    # Guards the contract itself: a [timestamp, value] pair order mistake must not pass.
    wrong = [{"target": "x", "datapoints": [[1, "1.0"]]}]
    assert list(_validator("/query").iter_errors(wrong))
    assert list(_validator("/variable").iter_errors([{"text": "a", "value": "a"}]))
