"""Inputs that once answered 500, kept as regressions: the fuzzer found the first, the
rest are values its generators rarely or never produce (naive date-times are not
RFC 3339; extreme numbers)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from plugin_backend.errors import InvalidTimeRange
from plugin_backend.timeparse import parse_duration_s, parse_time_s
from tests.fuzz.support import AUTH

YEAR_1_TO_9999 = {"from": "0001-01-01T00:00:00", "to": "9999-12-31T23:59:59"}


@pytest.fixture
def client(fuzz_app: Flask) -> FlaskClient:
    return fuzz_app.test_client()


def post(client: FlaskClient, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(path, json=body, headers=AUTH)
    payload = response.get_json()
    assert response.status_code < 500, payload
    return response.status_code, payload


@pytest.mark.parametrize(
    ("at", "window", "named"),
    [
        (6.9e16, 1.2e301, "at"),  # found by schemathesis: OverflowError in the demo grid
        (1_767_243_600, 1e301, "window"),
        (1_767_243_600, "99999999w", "window"),
        ("nan", "30m", "at"),
        ("inf", "30m", "at"),
        (-1, "30m", "at"),
        ("10000-01-01T00:00:00Z", "30m", "at"),
    ],
)
def test_explain_refuses_times_out_of_range(
    client: FlaskClient, at: Any, window: Any, named: str
) -> None:
    status, body = post(client, "/api/v1/explain", {"query": "up", "at": at, "window": window})
    assert status == 400
    assert body["error"]["code"] == "invalid_time_range"
    assert body["message"].startswith(named)


def test_timeparse_bounds() -> None:
    assert parse_time_s("2026-01-01T00:00:00") == parse_time_s("2026-01-01T00:00:00Z")
    assert parse_time_s(0) == 0.0
    assert parse_duration_s("520w") == 520 * 604_800
    for bad in (math.nan, math.inf, -0.5, 1e300):
        with pytest.raises(InvalidTimeRange):
            parse_time_s(bad)
    with pytest.raises(InvalidTimeRange, match="at most ten years"):
        parse_duration_s("100000d")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/datasource/query",
            {"range": YEAR_1_TO_9999, "targets": [{"target": "promql", "payload": {"expr": "up"}}]},
        ),
        (
            "/datasource/query",
            {
                "range": YEAR_1_TO_9999,
                "targets": [{"target": "band", "payload": {"expr": "up", "detector": "robust_z"}}],
            },
        ),
        (
            "/datasource/variable",
            {"payload": {"target": "label_values(job)"}, "range": YEAR_1_TO_9999},
        ),
        (
            "/datasource/annotations",
            {"annotation": {"query": "app_build_info"}, "range": YEAR_1_TO_9999},
        ),
    ],
)
def test_naive_datetimes_near_year_1_are_not_a_server_error(
    client: FlaskClient, path: str, body: dict[str, Any]
) -> None:
    # datetime.timestamp() read them as server-local time: ValueError "year 0 is out of range"
    status, payload = post(client, path, body)
    assert status in (200, 422), payload


def test_naive_datetimes_are_utc(client: FlaskClient) -> None:
    def query(start: str, end: str) -> Any:
        body = {
            "range": {"from": start, "to": end},
            "intervalMs": 60_000,
            "targets": [{"target": "promql", "payload": {"expr": "pg_connections_in_use"}}],
        }
        status, payload = post(client, "/datasource/query", body)
        assert status == 200, payload
        return payload

    naive = query("2026-01-01T04:00:00", "2026-01-01T05:00:00")
    assert naive == query("2026-01-01T04:00:00Z", "2026-01-01T05:00:00Z")


def test_an_interval_beyond_ten_years_is_a_bad_request(client: FlaskClient) -> None:
    # Once an OverflowError: a step of 1e297 s in the demo source's millisecond grid.
    body = {
        "range": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z"},
        "intervalMs": 1e300,
        "targets": [{"target": "promql", "payload": {"expr": "up"}}],
    }
    status, payload = post(client, "/datasource/query", body)
    assert status == 400
    assert payload["message"].startswith("invalid request: intervalMs:")
