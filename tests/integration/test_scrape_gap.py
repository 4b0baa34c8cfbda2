"""A scrape gap in a served series, through a real Prometheus: a spike right before
the target stopped being scraped for 3 h ends where the data ends. The normal
samples after the gap are no part of it, in the panel's windows table and in the
worker's incident, as in `plugin-backend score` on an export with the same gap
(tests/test_cli_score.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.bootstrap import build_source
from plugin_backend.config import load_settings
from plugin_backend.detection import DetectionService
from plugin_backend.rules import parse_rules
from plugin_backend.scoring.registry import get_detector
from plugin_backend.scoring.windows import find_windows
from plugin_backend.telemetry import Telemetry
from plugin_backend.watch import RuleCycle
from plugin_backend.web import create_app
from testkit.promserver import SyntheticSeries, start_backfilled
from tests.needs import require_binary

pytestmark = pytest.mark.integration

STEP = 15.0
END_S = 1_764_000_000.0
SPIKE_S = END_S - 5 * 3600  # 10 min far out, then no scrapes for 3 h
GAP_FROM_S = SPIKE_S + 600
GAP_TO_S = GAP_FROM_S + 3 * 3600
#: Prometheus repeats the last sample for 5 min (its lookback) before a series goes stale.
LOOKBACK_S = 300.0
# The robust z-score: its band does not take the spike's level in (the model-based
# detectors' bands do, and then call the return to normal after the gap a dip).
PAYLOAD = {"expr": "gap_gauge", "detector": "robust_z"}
RULE = parse_rules(
    """
rules:
  - name: gap-gauge
    expr: gap_gauge
    step: 15s
    detector: robust_z
"""
).rules[0]


def _samples() -> tuple[np.ndarray, np.ndarray]:
    """The scraped samples: what Prometheus stores, and what an export of it holds."""
    ts = np.arange(END_S - 30 * 3600, END_S + STEP, STEP)
    values = 50.0 + np.random.default_rng(5).normal(0.0, 1.0, ts.size)
    values[(ts >= SPIKE_S) & (ts < GAP_FROM_S)] += 40.0
    scraped = (ts < GAP_FROM_S) | (ts >= GAP_TO_S)
    return ts[scraped], values[scraped]


@pytest.fixture(scope="module")
def gap_prometheus(tmp_path_factory):
    for binary in ("prometheus", "promtool"):
        require_binary(binary, "Debian package prometheus")
    series = [SyntheticSeries({"__name__": "gap_gauge"}, *_samples())]
    server = start_backfilled(series, tmp_path_factory.mktemp("gap-prom"))
    yield server
    server.stop()


def _settings(url: str):
    return load_settings(
        {"PLUGIN_BACKEND_PROMETHEUS_URL": url, "PLUGIN_BACKEND_LLM_PROVIDER": "none"}
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def test_the_panel_window_of_a_spike_before_a_scrape_gap_ends_before_the_gap(gap_prometheus):
    app = create_app(_settings(gap_prometheus.url), telemetry=Telemetry(CollectorRegistry()))
    body = {
        "range": {"from": _iso(END_S - 6 * 3600), "to": _iso(END_S)},
        "intervalMs": 15_000,
        "maxDataPoints": 1_441,
        "targets": [{"refId": "A", "target": "anomalies", "payload": PAYLOAD}],
    }
    response = app.test_client().post("/datasource/query", json=body)
    assert response.status_code == 200, response.get_json()
    rows = response.get_json()[0]["rows"]
    spike = [r for r in rows if SPIKE_S * 1000 <= r[0] < GAP_FROM_S * 1000]
    assert len(spike) == 1, rows
    assert spike[0][1] <= (GAP_FROM_S + LOOKBACK_S) * 1000  # not onto the samples after it
    assert not [r for r in rows if GAP_TO_S * 1000 <= r[1] < (GAP_TO_S + 3600) * 1000], rows
    # The CLI's path on the same samples (an export): the same window, but for the
    # samples Prometheus repeats for its lookback after the last scrape.
    exported = find_windows(get_detector("robust_z").score(*_samples()))
    (cli,) = [w for w in exported if SPIKE_S <= w.start_s < GAP_FROM_S]
    assert cli.start_s * 1000 == spike[0][0]
    assert cli.end_s <= spike[0][1] / 1000 <= cli.end_s + LOOKBACK_S


def test_the_worker_incident_of_that_spike_ends_before_the_gap(gap_prometheus):
    source = build_source(_settings(gap_prometheus.url))
    result = RuleCycle(DetectionService(source), None).run(RULE, END_S, [], lookback_s=6 * 3600)
    opened = [i for i, _ in result.changed if i.id in result.opened]
    assert [(i.start_s >= SPIKE_S, i.end_s <= GAP_FROM_S + LOOKBACK_S) for i in opened] == [
        (True, True)
    ]
