"""The anomaly metric kinds (anomaly_score, band, anomalies) over the demo estate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from plugin_backend.adapters.demo import incidents_between

DAY_START = 1_767_225_600  # 2026-01-01T00:00:00Z
# The first pool exhaustion at night, when the pool otherwise idles (at the daily peak the
# pool is busy anyway and the exhaustion is a smaller step).
POOL_INCIDENT = next(
    i
    for i in incidents_between(DAY_START, DAY_START + 3 * 86_400, seed=7)
    if i.fault == "pg_pool_exhaustion" and (i.start_s % 86_400) < 8 * 3600
)
EXPR = 'pg_connections_in_use{service="postgres"}'


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _query(client, kind, payload, *, start=None, end=None):
    start = POOL_INCIDENT.start_s - 3 * 3600 if start is None else start
    end = POOL_INCIDENT.end_s + 1800 if end is None else end
    body = {
        "range": {"from": _iso(start), "to": _iso(end)},
        "intervalMs": 60_000,
        "maxDataPoints": 1_000,
        "targets": [{"refId": "A", "target": kind, "payload": payload}],
    }
    return client.post("/datasource/query", json=body)


def test_metric_kinds_list_the_anomaly_kinds_with_detector_options(client):
    kinds = {k["value"]: k for k in client.post("/datasource/metrics", json={}).get_json()}
    assert {"promql", "anomaly_score", "band", "anomalies"} <= set(kinds)
    fields = {p["name"]: p for p in kinds["band"]["payloads"]}
    assert {"expr", "detector", "direction", "sensitivity", "min_deviation"} <= set(fields)
    assert {"label": "robust_z", "value": "robust_z"} in fields["detector"]["options"]


def test_anomaly_score_is_above_one_during_the_incident_only(client):
    response = _query(client, "anomaly_score", {"expr": EXPR, "detector": "robust_z"})
    assert response.status_code == 200, response.get_json()
    (frame,) = response.get_json()
    assert frame["target"] == 'pg_connections_in_use{job="demo", service="postgres"}'
    points = frame["datapoints"]
    assert points[0][1] == (POOL_INCIDENT.start_s - 3 * 3600) * 1000  # history fetched before
    inside = [
        v for v, t in points if POOL_INCIDENT.start_s * 1000 <= t <= POOL_INCIDENT.end_s * 1000
    ]
    before = [v for v, t in points if t < (POOL_INCIDENT.start_s - 600) * 1000]
    assert max(inside) > 3
    assert sum(v > 1 for v in before) <= 0.03 * len(before)
    assert all(v is not None and v >= 0 for v in before)


def test_band_is_three_ordered_series_per_input_series(client):
    (expected, lower, upper) = _query(
        client, "band", {"expr": EXPR, "detector": "robust_z"}
    ).get_json()
    name = 'pg_connections_in_use{job="demo", service="postgres"}'
    assert [expected["target"], lower["target"], upper["target"]] == [
        f"{name}:expected",
        f"{name}:lower",
        f"{name}:upper",
    ]
    for (e, t), (lo, _), (hi, _) in zip(
        expected["datapoints"], lower["datapoints"], upper["datapoints"], strict=True
    ):
        assert lo <= e <= hi, t


def test_anomalies_are_an_annotation_table_covering_the_incident(client):
    # Band-edge alarms: the demo estate has a fault every 4 h, which the rate-controlled
    # threshold learns as normal at the scrape step (its 2,000 scores span 8 h).
    payload = {"expr": EXPR, "detector": "robust_z", "direction": "up", "rate_control": False}
    (table,) = _query(client, "anomalies", payload).get_json()
    assert table["type"] == "table"
    assert [c["text"] for c in table["columns"]][:5] == ["time", "timeEnd", "title", "text", "tags"]
    rows = table["rows"]
    hits = [
        r
        for r in rows
        if r[0] <= POOL_INCIDENT.end_s * 1000 and r[1] >= POOL_INCIDENT.start_s * 1000
    ]
    assert hits, rows
    assert "above its expected band" in hits[0][3]
    assert hits[0][4] == "anomaly,up"


def test_direction_down_ignores_an_upward_incident(client):
    (table,) = _query(
        client, "anomalies", {"expr": EXPR, "detector": "robust_z", "direction": "down"}
    ).get_json()
    overlapping = [
        r
        for r in table["rows"]
        if r[0] <= POOL_INCIDENT.end_s * 1000 and r[1] >= POOL_INCIDENT.start_s * 1000
    ]
    assert all(r[6] == "down" for r in overlapping)
    assert not any(r[7] > 3 for r in overlapping)


def test_lower_sensitivity_widens_the_band(client):
    def width(sensitivity):
        # the upper half: the lower edge of a never-negative series is floored at zero
        expected, _, upper = _query(
            client, "band", {"expr": EXPR, "detector": "robust_z", "sensitivity": sensitivity}
        ).get_json()
        pairs = zip(upper["datapoints"], expected["datapoints"], strict=True)
        return sum(u - e for (u, _), (e, _) in pairs)

    assert width(0.5) == pytest.approx(2 * width(1.0), rel=1e-6)


def test_refreshing_a_panel_reuses_cached_scores(demo_app, client):
    cache = demo_app.extensions["plugin_backend.datasource"].detection.cache
    first = _query(client, "anomaly_score", {"expr": EXPR, "detector": "robust_z"}).get_json()
    hits = cache.hits
    # The panel moves forward by ten minutes: only the new points need scoring.
    later = _query(
        client,
        "anomaly_score",
        {"expr": EXPR, "detector": "robust_z"},
        start=POOL_INCIDENT.start_s - 3 * 3600 + 600,
        end=POOL_INCIDENT.end_s + 2400,
    ).get_json()
    assert cache.hits == hits + 1
    overlap = {t: v for v, t in first[0]["datapoints"]}
    shared = [(v, overlap[t]) for v, t in later[0]["datapoints"] if t in overlap]
    assert len(shared) > 100
    assert all(a == pytest.approx(b) for a, b in shared)


def test_unknown_detector_lists_the_available_ones(client):
    response = _query(client, "anomaly_score", {"expr": EXPR, "detector": "magic"})
    assert response.status_code == 400
    message = response.get_json()["message"]
    assert "payload.detector" in message
    assert "robust_z" in message


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"sensitivity": 0}, "sensitivity"),
        ({"min_deviation": -1}, "min_deviation"),
        ({"direction": "sideways"}, "direction"),
    ],
)
def test_bad_detector_options_are_named(client, payload, field):
    response = _query(client, "band", {"expr": EXPR, **payload})
    assert response.status_code == 400
    assert f"payload.{field}" in response.get_json()["message"]


@pytest.mark.parametrize("detector", ["robust_z", "stl", "holt_winters", "transformer", "ensemble"])
def test_every_detector_serves_a_band_and_flags_the_incident(client, detector):
    response = _query(client, "anomaly_score", {"expr": EXPR, "detector": detector})
    assert response.status_code == 200, response.get_json()
    (frame,) = response.get_json()
    inside = [
        v
        for v, t in frame["datapoints"]
        if v is not None and POOL_INCIDENT.start_s * 1000 <= t <= POOL_INCIDENT.end_s * 1000
    ]
    assert max(inside) > 1, detector


def test_the_default_detector_is_used_without_a_detector_option(client):
    response = _query(client, "band", {"expr": EXPR})
    assert response.status_code == 200
    assert len(response.get_json()) == 3


def _rows(client, rate_control):
    payload = {"expr": EXPR, "detector": "robust_z", "direction": "up"}
    if rate_control is not None:
        payload["rate_control"] = rate_control
    start = POOL_INCIDENT.start_s - 12 * 3600
    (table,) = _query(client, "anomalies", payload, start=start).get_json()
    return table["rows"]


@pytest.mark.parametrize("left_to_server", [None, "", "default"])
def test_the_demo_estate_pages_at_the_band_edge_when_the_panel_leaves_it_to_the_server(
    client, left_to_server
):
    # A fault every 4 h is the demo's normal for a rate-controlled pager: a first look at
    # the demo would show no windows. Unset, the server's default is the band's edge there.
    at_edge = _rows(client, False)
    assert any(r[1] >= POOL_INCIDENT.start_s * 1000 >= r[0] - 600_000 for r in at_edge)
    assert _rows(client, left_to_server) == at_edge


def test_the_alarm_default_is_a_setting(telemetry):
    from plugin_backend.adapters.demo import DemoSource
    from plugin_backend.config import load_settings
    from plugin_backend.web.app import create_app

    def client_with(value):
        env = {"PLUGIN_BACKEND_LLM_PROVIDER": "none", "PLUGIN_BACKEND_ALARM_RATE_CONTROL": value}
        app = create_app(load_settings(env), source=DemoSource(seed=7), telemetry=telemetry)
        return app.test_client()

    rate_controlled = client_with("true")
    assert _rows(rate_controlled, "default") == _rows(rate_controlled, True)
    assert _rows(rate_controlled, None) != _rows(rate_controlled, False)
    assert _rows(client_with("false"), None) == _rows(client_with("false"), False)


def test_settings_default_to_rate_control_on_a_real_prometheus_only():
    from plugin_backend.config import load_settings

    assert load_settings({}).default_rate_control is False  # the built-in demo estate
    real = {"PLUGIN_BACKEND_PROMETHEUS_URL": "http://prometheus:9090"}
    assert load_settings(real).default_rate_control is True
    real["PLUGIN_BACKEND_ALARM_RATE_CONTROL"] = "false"
    assert load_settings(real).default_rate_control is False
