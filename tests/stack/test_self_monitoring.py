"""Every Prometheus query of the stack, run against a real Prometheus with the stack's config.

That Prometheus (``deploy/prometheus/prometheus.yml``, targets pointed at test
processes, 1 s scrapes) scrapes two backends (the demo estate; a Prometheus
source), the worker and the demo app. After some traffic, each dashboard panel and
annotation on the Prometheus datasource, the alert rule's query and each watch
rule's expression must run and return data; only queries on metrics that no
process exports yet (``LANDS_LATER``) are checked for validity alone.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plugin_backend.adapters.demo import incidents_between
from plugin_backend.rules import load_rules
from tests.stack.support import (
    PROVISIONING,
    RULES_FILE,
    all_panels,
    dashboards,
    iso,
    load_yaml,
    substitute,
)

pytestmark = pytest.mark.integration

PROMETHEUS_UID = "prometheus"
# Grafana's built-ins as Grafana would set them for a 1 s scrape interval.
BUILTINS = {"__rate_interval": "5s", "__interval": "1s", "__range": "60s"}
METRIC = re.compile(r"\bplugin_backend_[a-z_]+\b")
# Metrics the dashboards use before any process exports them: their queries are only
# checked to be valid until they land (then they must return data, automatically).
LANDS_LATER: dict[str, str] = {}  # every dashboard metric is exported now
# The API process exports these once it has served the traffic below.
API_METRICS = {
    "plugin_backend_http_requests_total",
    "plugin_backend_http_request_duration_seconds",
    "plugin_backend_source_request_duration_seconds",
    "plugin_backend_source_request_failures_total",
    "plugin_backend_llm_calls_total",
    "plugin_backend_llm_latency_seconds",
    "plugin_backend_note_fallbacks_total",
    "plugin_backend_scoring_duration_seconds",
    "plugin_backend_build_info",
}


def _prometheus_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every Prometheus-datasource query of the stack."""
    found = []
    for board in dashboards().values():
        for panel in all_panels(board):
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel["datasource"]
                if ds["uid"] == PROMETHEUS_UID:
                    found.append((f"{board['uid']} panel {panel['id']} {panel['title']}",
                                  target["expr"]))  # fmt: skip
        for annotation in board["annotations"]["list"]:
            if annotation["datasource"]["uid"] == PROMETHEUS_UID:
                found.append((f"{board['uid']} annotation {annotation['name']}",
                              annotation["expr"]))  # fmt: skip
    for path in (PROVISIONING / "alerting").glob("*.y*ml"):
        for group in load_yaml(path).get("groups", []):
            for rule in group["rules"]:
                for query in rule["data"]:
                    if query["datasourceUid"] == PROMETHEUS_UID:
                        found.append((f"alert rule {rule['uid']}", query["model"]["expr"]))
    return found


QUERIES = _prometheus_queries()


def _families(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        if family.samples:
            names.add(family.name)
            names.update(s.name for s in family.samples)
    return names


@pytest.fixture(scope="module")
def exported(demo_backend, source_backend, demo_worker, demoapp, stack_prometheus) -> set[str]:
    """Send each process some traffic; return the metric names they export then."""
    now = time.time()
    window = {"from": iso(now - 3600), "to": iso(now)}

    def panel(target: str, payload: dict[str, Any]) -> dict[str, Any]:
        targets = [{"refId": "A", "target": target, "payload": payload}]
        return {"range": window, "intervalMs": 15_000, "maxDataPoints": 500, "targets": targets}

    demo, source = demo_backend, source_backend
    p99 = 'http_request_duration_seconds_p99{service="checkout"}'
    for kind in ("promql", "anomaly_score"):
        answer = demo.http.post(demo.url + "/datasource/query", json=panel(kind, {"expr": p99}))
        assert answer.status_code == 200, answer.text
    assert demo.http.post(demo.url + "/datasource/query", json={"range": 1}).status_code == 400
    incident = incidents_between(now - 4 * 3600, now)[-1]
    explained = demo.http.post(
        demo.url + "/api/v1/explain",
        json={"query": p99, "at": incident.start_s + 600, "window": "30m"},
        timeout=60,
    )
    assert explained.status_code == 200, explained.text
    assert explained.json()["llm"]["fallback"]  # the stub's note is not JSON: template

    answer = source.http.post(
        source.url + "/datasource/query", json=panel("promql", {"expr": "up"})
    )
    assert answer.status_code == 200, answer.text
    broken = source.http.post(
        source.url + "/datasource/query", json=panel("promql", {"expr": "up{"})
    )
    assert broken.status_code == 400  # Prometheus' bad_data: a source failure
    assert demoapp.http.post(demoapp.url + "/faults/error_burst?duration=300").status_code == 201

    names: set[str] = set()
    for process in (demo, source, demo_worker, demoapp):
        names |= _families(process.http.get(process.url + "/metrics", timeout=10).text)
    stack_prometheus.wait_for("plugin_backend_llm_calls_total")
    stack_prometheus.wait_for("plugin_backend_source_request_failures_total")
    stack_prometheus.wait_for('demo_fault_active{fault="error_burst"} == 1')
    time.sleep(3)  # a few more scrapes: rate() needs two samples in its window
    return names


def test_the_api_exports_its_metrics(exported) -> None:
    assert {n.removesuffix("_bucket") for n in exported} >= API_METRICS


def test_every_scrape_target_is_up(stack_prometheus, exported) -> None:
    body = stack_prometheus.query_range("up", seconds=5)
    up = {}
    for series in body["data"]["result"]:
        up.setdefault(series["metric"]["job"], []).append(series["values"][-1][1])
    assert set(up) == {"plugin-backend-api", "plugin-backend-worker", "demo", "prometheus"}
    assert up["plugin-backend-api"] == ["1", "1"]  # both backends
    assert up["demo"] == ["1"]
    assert up["plugin-backend-worker"] == ["1"]
    assert up["prometheus"] == ["1"]


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[q[0] for q in QUERIES])
def test_prometheus_query_runs(stack_prometheus, exported, where: str, expr: str) -> None:
    query = substitute(expr, BUILTINS)
    assert "$" not in query, query
    body = stack_prometheus.query_range(query)
    assert body["status"] == "success", f"{where}: {body}"
    metrics = set(METRIC.findall(query))
    missing = {m for m in metrics if not ({m, m + "_bucket"} & exported)}
    assert missing <= LANDS_LATER.keys(), f"{where}: nothing exports {sorted(missing)}"
    if not missing:  # else: a valid query is all that can be checked yet
        assert body["data"]["result"], f"{where}: no data for {query}"


@pytest.mark.parametrize("rule", load_rules(RULES_FILE).rules, ids=lambda r: r.name)
def test_watch_rule_expressions_select_demo_app_data(stack_prometheus, exported, rule) -> None:
    body = stack_prometheus.query_range(rule.expr)
    assert body["status"] == "success", body
    assert body["data"]["result"], f"rule {rule.name}: no data for {rule.expr}"
