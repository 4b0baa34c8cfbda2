"""The Grafana dashboards of the compose stack, generated: ``dashboards/*.json``.

``python -m testkit.dashboards`` rewrites the committed files;
``--check`` exits 1 when they differ from what this module generates (the stack
tests check the same). Three dashboards:

* ``anomaly-overview`` - one series (``$metric`` of ``$service``) with its expected
  band, its anomaly score (threshold line at 1), anomaly windows and root-cause
  notes as annotations. Panel 2 is the raw series: watch rules
  (``deploy/rules.yaml``) and the alert rule send their annotations there.
* ``incidents`` - the incident table (cause, score, status, a link to each
  incident's page) and the anomaly score of every watch rule.
* ``plugin-backend-self`` - the backend's own metrics through Prometheus.

Datasources are referenced by the uids provisioned in
``grafana/provisioning/datasources/datasources.yaml``. Tooling only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DASHBOARDS_DIR",
    "JSON_DS",
    "PROMETHEUS_DS",
    "build_dashboards",
    "main",
    "render",
]

JSON_DS = {"type": "simpod-json-datasource", "uid": "plugin-backend"}
PROMETHEUS_DS = {"type": "prometheus", "uid": "prometheus"}
GRAFANA_DS = {"type": "grafana", "uid": "-- Grafana --"}
DASHBOARDS_DIR = Path(__file__).resolve().parents[1] / "dashboards"
SCHEMA_VERSION = 39
DETECTORS = ("robust_z", "holt_winters", "stl", "transformer", "ensemble")
RATE = "$__rate_interval"

Json = dict[str, Any]


# --- building blocks -------------------------------------------------------------------


def _dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Json],
    *,
    variables: Sequence[Json] = (),
    annotations: Sequence[Json] = (),
    refresh: str = "1m",
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["plugin-backend"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [
            {
                "type": "dashboards",
                "tags": ["plugin-backend"],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "title": "plugin-backend",
            }
        ],
        "annotations": {"list": [_builtin_annotations(), *annotations]},
        "templating": {"list": list(variables)},
        "panels": panels,
    }


def _builtin_annotations() -> Json:
    """Grafana's own annotations: what the worker writes through the annotations API."""
    return {
        "builtIn": 1,
        "name": "Annotations & Alerts",
        "type": "dashboard",
        "datasource": GRAFANA_DS,
        "enable": True,
        "hide": False,
        "iconColor": "rgba(0, 211, 255, 1)",
    }


def _grid(x: int, y: int, w: int, h: int) -> Json:
    return {"x": x, "y": y, "w": w, "h": h}


def _json_target(ref: str, kind: str, **payload: str) -> Json:
    """A simpod-json-datasource target: metric kind + payload (builder mode)."""
    return {
        "refId": ref,
        "datasource": JSON_DS,
        "editorMode": "builder",
        "target": kind,
        "payload": dict(payload),
    }


def _prom_target(ref: str, expr: str, legend: str = "__auto", *, instant: bool = False) -> Json:
    return {
        "refId": ref,
        "datasource": PROMETHEUS_DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }


def _timeseries(
    pid: int,
    title: str,
    grid: Json,
    datasource: Json,
    targets: list[Json],
    *,
    description: str = "",
    unit: str = "short",
    threshold: float | None = None,
    overrides: Sequence[Json] = (),
    stacked: bool = False,
    minimum: float | None = None,
) -> Json:
    custom: Json = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10 if stacked else 0,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        "thresholdsStyle": {"mode": "off" if threshold is None else "dashed"},
    }
    steps: list[Json] = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
    defaults: Json = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "thresholds": {"mode": "absolute", "steps": steps},
    }
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "gridPos": grid,
        "datasource": datasource,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _table(
    pid: int,
    title: str,
    grid: Json,
    datasource: Json,
    targets: list[Json],
    *,
    description: str = "",
    overrides: Sequence[Json] = (),
    transformations: Sequence[Json] = (),
    sort_by: str | None = None,
) -> Json:
    options: Json = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return {
        "id": pid,
        "type": "table",
        "title": title,
        "description": description,
        "gridPos": grid,
        "datasource": datasource,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "filterable": True}},
            "overrides": list(overrides),
        },
        "options": options,
        "transformations": list(transformations),
    }


def _stat(pid: int, title: str, grid: Json, target: Json, *, description: str = "") -> Json:
    return {
        "id": pid,
        "type": "stat",
        "title": title,
        "description": description,
        "gridPos": grid,
        "datasource": PROMETHEUS_DS,
        "targets": [target],
        "fieldConfig": {
            "defaults": {
                "unit": "short",
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
        },
    }


def _row(pid: int, title: str, y: int) -> Json:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": _grid(0, y, 24, 1),
        "panels": [],
    }


def _override(matcher: str, name: str, **properties: Any) -> Json:
    return {
        "matcher": {"id": matcher, "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties.items()],
    }


def _query_variable(name: str, label: str, query: str, current: str, regex: str = "") -> Json:
    """A Query variable on the JSON datasource (``POST /datasource/variable``)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": JSON_DS,
        "query": {"query": query, "format": "string"},
        "definition": query,
        "regex": regex,
        "refresh": 2,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "current": {"selected": True, "text": current, "value": current},
        "options": [],
        "hide": 0,
    }


def _custom_variable(name: str, label: str, values: Sequence[str], current: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "multi": False,
        "includeAll": False,
        "current": {"selected": True, "text": current, "value": current},
        "options": [
            {"selected": value == current, "text": value, "value": value} for value in values
        ],
        "hide": 0,
    }


# --- the dashboards ------------------------------------------------------------------------

SERIES = '$metric{service="$service"}'
_SCORE_OPTIONS = {
    "detector": "$detector",
    "direction": "$direction",
    "rate_control": "$rate_control",
}


def anomaly_overview() -> Json:
    band = [
        _override("byRegexp", "/:expected$/", **{
            "custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
            "color": {"mode": "fixed", "fixedColor": "green"},
        }),
        _override("byRegexp", "/:(lower|upper)$/", **{
            "custom.lineStyle": {"fill": "dash", "dash": [2, 6]},
            "custom.lineWidth": 1,
            "color": {"mode": "fixed", "fixedColor": "semi-dark-blue"},
        }),
    ]  # fmt: skip
    panels = [
        _timeseries(
            2,
            "$metric of $service: observed and expected band",
            _grid(0, 0, 24, 10),
            JSON_DS,
            [
                _json_target("A", "promql", expr=SERIES),
                _json_target("B", "band", expr=SERIES, **_SCORE_OPTIONS),
            ],
            description="The observed series (kind promql) and the band the detector expects "
            "(kind band: expected, lower, upper). Watch-rule annotations land on this panel.",
            overrides=band,
        ),
        _timeseries(
            3,
            "Anomaly score",
            _grid(0, 10, 24, 7),
            JSON_DS,
            [_json_target("A", "anomaly_score", expr=SERIES, **_SCORE_OPTIONS)],
            description="0 on the expected value, 1 on the band edge, above 1 outside it.",
            threshold=1.0,
            minimum=0,
        ),
        _table(
            4,
            "Anomaly windows",
            _grid(0, 17, 12, 9),
            JSON_DS,
            [_json_target("A", "anomalies", expr=SERIES, **_SCORE_OPTIONS)],
            description="Windows of consecutive anomalous points (also drawn as annotations).",
            overrides=[_override("byName", "text", **{"custom.width": 420})],
            sort_by="time",
        ),
        _table(
            5,
            "Root-cause notes",
            _grid(12, 17, 12, 9),
            JSON_DS,
            [_json_target("A", "incidents", service="$service", status="all")],
            description="Incidents of this service with their likely cause; the link opens "
            "the incident page.",
            overrides=[_incident_link_override()],
            transformations=[_organize(_INCIDENT_HIDDEN | {"rule", "series"})],
            sort_by="started",
        ),
    ]
    annotations = [
        {
            "name": "Anomaly windows",
            "datasource": JSON_DS,
            "enable": True,
            "hide": False,
            "iconColor": "red",
            "filter": {"exclude": False, "ids": [2, 3]},
            "target": _json_target("Anno", "anomalies", expr=SERIES, **_SCORE_OPTIONS),
        },
        {
            "name": "Root-cause notes",
            "datasource": JSON_DS,
            "enable": True,
            "hide": False,
            "iconColor": "orange",
            "filter": {"exclude": False, "ids": [2, 3]},
            "target": _json_target("Anno", "incidents", service="$service", status="all"),
        },
        {
            "name": "Injected faults (demo app)",
            "datasource": PROMETHEUS_DS,
            "enable": True,
            "hide": False,
            "iconColor": "purple",
            "expr": "max by (fault) (demo_fault_active) > 0",
            "step": "15s",
            "titleFormat": "fault {{fault}}",
            "tagKeys": "fault",
            "useValueForTime": False,
        },
    ]
    variables = [
        _query_variable("service", "Service", "label_values(service)", "checkout"),
        _query_variable(
            "metric",
            "Metric",
            'label_values({service="$service"}, __name__)',
            "http_request_duration_seconds_p99",
            regex="/_(p99|ratio|per_second|in_use)$/",
        ),
        # robust_z: what deploy/rules.yaml scores with, and needs no seasonal history (a
        # fresh stack); the ensemble (the default) follows daily cycles once days exist.
        _custom_variable("detector", "Detector", DETECTORS, "robust_z"),
        _custom_variable("direction", "Direction", ("both", "up", "down"), "both"),
        # true: windows at the rate-controlled alarm threshold (about one per three days on
        # a healthy series, as the worker pages); false: at the band's edge
        # default: the server's PLUGIN_BACKEND_ALARM_RATE_CONTROL (the band's edge on the demo)
        _custom_variable(
            "rate_control", "Rate-controlled alarms", ("default", "true", "false"), "default"
        ),
    ]
    return _dashboard(
        "anomaly-overview",
        "Anomaly overview",
        "One series with its expected band, anomaly score, anomaly windows and root-cause "
        "notes, from the plugin-backend JSON datasource.",
        panels,
        variables=variables,
        annotations=annotations,
    )


# Incident table columns (the `incidents` kind): time, timeEnd, title, text, tags, id, rule,
# series, status, score, cause, link.
_INCIDENT_HIDDEN = {"title", "tags", "timeEnd"}
_INCIDENT_ORDER = ("time", "id", "rule", "series", "status", "score", "cause", "text", "link")


def _organize(hidden: set[str]) -> Json:
    return {
        "id": "organize",
        "options": {
            "excludeByName": dict.fromkeys(sorted(hidden), True),
            "indexByName": {name: i for i, name in enumerate(_INCIDENT_ORDER)},
            "renameByName": {"time": "started", "text": "note"},
        },
    }


def _incident_link_override() -> Json:
    return _override(
        "byName",
        "link",
        links=[{"title": "Open the incident page", "url": "${__value.raw}", "targetBlank": True}],
        **{"custom.width": 90},
    )


def incidents() -> Json:
    status_colours = {
        "type": "value",
        "options": {
            "open": {"color": "red", "index": 0, "text": "open"},
            "closed": {"color": "green", "index": 1, "text": "closed"},
        },
    }
    panels = [
        _table(
            1,
            "Incidents",
            _grid(0, 0, 24, 14),
            JSON_DS,
            [_json_target("A", "incidents", status="$status")],
            description="Incidents found by the watch rules and alert webhooks, with their "
            "likely cause. Click a link to open the incident page.",
            overrides=[
                _incident_link_override(),
                _override(
                    "byName",
                    "status",
                    mappings=[status_colours],
                    **{"custom.cellOptions": {"type": "color-text"}},
                ),
                _override("byName", "score", decimals=2),
                _override("byName", "cause", **{"custom.width": 360}),
            ],
            transformations=[_organize(_INCIDENT_HIDDEN)],
            sort_by="started",
        ),
        _timeseries(
            2,
            "Anomaly score per watch rule",
            _grid(0, 14, 24, 8),
            PROMETHEUS_DS,
            [_prom_target("A", "max by (rule) (plugin_backend_anomaly_score)", "{{rule}}")],
            description="What Grafana alerting watches (alert above 1 for 2 minutes).",
            threshold=1.0,
            minimum=0,
        ),
    ]
    return _dashboard(
        "incidents",
        "Incidents",
        "Incidents and their root causes, as the plugin-backend worker found them.",
        panels,
        variables=[_custom_variable("status", "Status", ("all", "open", "closed"), "all")],
    )


def self_monitoring() -> Json:
    def quantile(metric: str, by: str) -> str:
        return f"histogram_quantile(0.95, sum by (le, {by}) (rate({metric}_bucket[{RATE}])))"

    def rate(metric: str, by: str, selector: str = "") -> str:
        return f"sum by ({by}) (rate({metric}{selector}[{RATE}]))"

    def ts(pid: int, title: str, grid: Json, expr: str, legend: str, **kw: Any) -> Json:
        targets = [_prom_target("A", expr, legend)]
        return _timeseries(pid, title, grid, PROMETHEUS_DS, targets, **kw)

    p = "plugin_backend_"
    panels = [
        _row(1, "HTTP API", 0),
        ts(2, "Requests per second by endpoint", _grid(0, 1, 8, 8),
           rate(p + "http_requests_total", "endpoint"), "{{endpoint}}", unit="reqps"),
        ts(3, "p95 latency by endpoint", _grid(8, 1, 8, 8),
           quantile(p + "http_request_duration_seconds", "endpoint"), "{{endpoint}}", unit="s"),
        ts(4, "Error answers by endpoint", _grid(16, 1, 8, 8),
           rate(p + "http_requests_total", "endpoint, status_class",
                '{status_class=~"4xx|5xx"}'),
           "{{endpoint}} {{status_class}}", unit="reqps"),
        _row(5, "Series source (Prometheus)", 9),
        ts(6, "Source call p95 by operation", _grid(0, 10, 12, 8),
           quantile(p + "source_request_duration_seconds", "operation"), "{{operation}}", unit="s"),
        ts(7, "Prometheus query errors", _grid(12, 10, 12, 8),
           rate(p + "source_request_failures_total", "operation, code"),
           "{{operation}} {{code}}", unit="reqps"),
        _row(8, "Models and notes", 18),
        ts(9, "Model scoring time p95 by detector", _grid(0, 19, 8, 8),
           quantile(p + "scoring_duration_seconds", "detector"), "{{detector}}", unit="s"),
        ts(10, "LLM latency p95", _grid(8, 19, 8, 8),
           quantile(p + "llm_latency_seconds", "provider"), "{{provider}}", unit="s"),
        ts(11, "LLM calls and failures", _grid(16, 19, 8, 8),
           rate(p + "llm_calls_total", "provider, outcome"), "{{provider}} {{outcome}}",
           unit="reqps", stacked=True),
        ts(12, "Note fallbacks (template instead of LLM)", _grid(0, 27, 8, 8),
           rate(p + "note_fallbacks_total", "reason"), "{{reason}}", unit="reqps", stacked=True),
        _row(13, "Worker and annotation outbox", 35),
        ts(14, "Outbox depth by state", _grid(0, 36, 8, 8),
           f"sum by (state) ({p}outbox_rows)", "{{state}}", unit="short"),
        ts(15, "Annotation deliveries by outcome", _grid(8, 36, 8, 8),
           rate(p + "outbox_deliveries_total", "outcome"), "{{outcome}}", unit="reqps",
           stacked=True),
        ts(16, "Delivery failures", _grid(16, 36, 8, 8),
           f'sum(rate({p}outbox_deliveries_total{{outcome="failed"}}[{RATE}])) or vector(0)',
           "failed", unit="reqps", threshold=0.0),
        ts(17, "Worker cycles by rule and outcome", _grid(0, 44, 8, 8),
           rate(p + "worker_cycles_total", "rule, outcome"), "{{rule}} {{outcome}}", unit="reqps"),
        ts(18, "Worker cycle p95 by rule", _grid(8, 44, 8, 8),
           quantile(p + "worker_cycle_duration_seconds", "rule"), "{{rule}}", unit="s"),
        ts(19, "Anomaly score per watch rule", _grid(16, 44, 8, 8),
           f"max by (rule) ({p}anomaly_score)", "{{rule}}", unit="short", threshold=1.0,
           minimum=0),
        _row(20, "Build and scrape", 52),
        _stat(21, "Build", _grid(0, 53, 8, 4),
              _prom_target("A", f"max by (version) ({p}build_info)", "{{version}}",
                           instant=True)),
        _stat(22, "API auth enabled (1 = bearer token required)", _grid(8, 53, 8, 4),
              _prom_target("A", f"max({p}auth_enabled)", "auth", instant=True)),
        _stat(23, "Scrape targets up", _grid(16, 53, 8, 4),
              _prom_target("A", "sum by (job) (up)", "{{job}}", instant=True)),
    ]  # fmt: skip
    return _dashboard(
        "plugin-backend-self",
        "plugin-backend self-monitoring",
        "The backend's own metrics (API, series source, models, LLM notes, worker, outbox) "
        "as Prometheus scrapes them.",
        panels,
        refresh="30s",
    )


def build_dashboards() -> dict[str, Json]:
    """File name -> dashboard JSON."""
    return {
        "anomaly-overview.json": anomaly_overview(),
        "incidents.json": incidents(),
        "plugin-backend-self.json": self_monitoring(),
    }


def render(dashboard: Json) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.dashboards")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, help="(dashboards/)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the files differ from the generator"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, dashboard in build_dashboards().items():
        path = args.out / name
        text = render(dashboard)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"stale dashboards (regenerate them): {', '.join(stale)}", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
