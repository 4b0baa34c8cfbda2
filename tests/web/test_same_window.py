"""One anomaly, one window: whatever step a panel asks for (``intervalMs``,
``maxDataPoints``: the browser's width), the windows table, the annotation query and
the worker's incident give the same window, scored on the series' own grid."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.config import load_settings
from plugin_backend.detection import DetectionService, DetectOptions
from plugin_backend.rules import parse_rules
from plugin_backend.scoring.registry import get_detector
from plugin_backend.telemetry import Telemetry
from plugin_backend.types import TimeRange
from plugin_backend.watch import RuleCycle
from plugin_backend.web import create_app
from tests.demo_faults import demo_fault_start

FAULT_START_S = demo_fault_start("pg_pool_exhaustion")
EXPR = 'http_request_duration_seconds_p99{service="checkout"}'
# Band-edge alarms: the demo estate has a fault every 4 h (deploy/demo-rules.yaml).
PAYLOAD = {"expr": EXPR, "rate_control": False}  # the default detector
END_S = FAULT_START_S + 3600
START_S = END_S - 6 * 3600
HISTORY_POINTS = 12_000  # a shorter budget than the default 50,000 keeps the test quick
RULE = parse_rules(
    f"""
rules:
  - name: checkout-latency
    expr: '{EXPR}'
    step: 15s
    dashboard_uid: anomaly-overview
    rate_control: false
"""
).rules[0]
# (intervalMs, maxDataPoints): a full-width panel at the scrape step, a narrower one
# (22 s), and what an annotation query might send (72 s).
WIDTHS = {"wide": (15_000, 1_441), "narrow": (20_000, 1_000), "annotation": (60_000, 300)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def client():
    settings = load_settings(
        {
            "PLUGIN_BACKEND_LLM_PROVIDER": "none",
            "PLUGIN_BACKEND_MAX_POINTS_PER_SERIES": str(HISTORY_POINTS),
        }
    )
    app = create_app(settings, source=DemoSource(seed=7), telemetry=Telemetry(CollectorRegistry()))
    return app.test_client()


def _query(client, kind: str, width: str):
    interval_ms, max_points = WIDTHS[width]
    body = {
        "range": {"from": _iso(START_S), "to": _iso(END_S)},
        "intervalMs": interval_ms,
        "maxDataPoints": max_points,
        "targets": [{"refId": "A", "target": kind, "payload": PAYLOAD}],
    }
    response = client.post("/datasource/query", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_table_and_annotation_give_the_same_windows_at_every_width(client):
    tables = {width: _query(client, "anomalies", width)[0]["rows"] for width in WIDTHS}
    assert tables["wide"] == tables["narrow"] == tables["annotation"]
    fault_end_ms = (FAULT_START_S + 1800) * 1000  # the pool stays exhausted for 30 min
    at_fault = [r for r in tables["wide"] if FAULT_START_S * 1000 <= r[0] <= fault_end_ms]
    assert at_fault, tables["wide"]
    # On the 15 s grid, whatever the panel's step.
    assert all(r[0] % 15_000 == 0 and r[1] % 15_000 == 0 for r in tables["wide"])


def test_the_worker_opens_its_incident_at_the_same_window(client):
    (table,) = _query(client, "anomalies", "narrow")
    detection = DetectionService(DemoSource(seed=7), max_history_points=HISTORY_POINTS)
    result = RuleCycle(detection, None).run(RULE, END_S, [], lookback_s=3 * 3600)
    opened = [i for i, _ in result.changed if i.id in result.opened]
    assert opened
    rows = {(r[0], r[7]) for r in table["rows"]}
    for incident in opened:  # its start and peak are those of a window in the table
        assert (round(incident.start_s * 1000), round(incident.peak_score or 0.0, 2)) in rows
    # The worker's windows themselves, on its own cache: those the panel shows.
    options = DetectOptions("ensemble", rate_control=False)
    span = TimeRange(END_S - 3 * 3600, END_S)
    (found,) = detection.detect(EXPR, span, options, floor_s=RULE.step_s)
    worker = [(round(w.start_s * 1000), round(w.end_s * 1000)) for w in found.windows]
    panel = [(r[0], r[1]) for r in table["rows"] if r[1] >= span.start_s * 1000]
    assert worker == panel


def test_scores_at_the_scrape_step_are_the_detectors_own(client):
    (frame,) = _query(client, "anomaly_score", "wide")
    service = client.application.extensions["plugin_backend.datasource"]
    options = DetectOptions("ensemble", rate_control=False)
    grid = service.detection.grid(TimeRange(START_S, END_S), options)
    assert grid.step_s == 15.0
    (series,) = DemoSource(seed=7).query_range(EXPR, grid.fetch, grid.step_s)
    direct = get_detector("ensemble").score(series.timestamps_s, series.values)
    at = {round(t * 1000): s for t, s in zip(direct.timestamps_s, direct.score, strict=True)}
    shown = [(t, v) for v, t in frame["datapoints"]]
    assert shown[0][0] == START_S * 1000
    assert len(shown) == 6 * 240 + 1
    assert [v for _, v in shown] == pytest.approx([at[t] for t, _ in shown], rel=1e-12)


def test_a_narrower_panel_keeps_every_peak(client):
    (wide,) = _query(client, "anomaly_score", "wide")
    (narrow,) = _query(client, "anomaly_score", "narrow")
    assert len(narrow["datapoints"]) < len(wide["datapoints"])
    scores = {t: v for v, t in wide["datapoints"]}
    # Each 22 s point shows the highest 15 s score since the previous one.
    times = [t for _, t in narrow["datapoints"]]
    for (value, t), before in zip(narrow["datapoints"][1:], times, strict=False):
        bucket = [v for u, v in scores.items() if before < u <= t and v is not None]
        if before >= START_S * 1000 and bucket:  # the wide panel holds the whole bucket
            assert value == pytest.approx(max(bucket))
    assert np.nanmax([v for v, _ in narrow["datapoints"] if v is not None]) == pytest.approx(
        np.nanmax([v for v, _ in wide["datapoints"] if v is not None])
    )
