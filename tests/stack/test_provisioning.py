"""Grafana provisioning files: the keys Grafana reads, and every reference resolves."""

from __future__ import annotations

import re
from typing import Any

from plugin_backend.web import create_app
from tests.stack.support import (
    COMPOSE_FILE,
    PROVISIONING,
    all_panels,
    dashboards,
    load_yaml,
)

ALERT_ROUTE = "/api/v1/alerts/grafana"
ENV_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
DURATION = re.compile(r"^\d+(ms|s|m|h|d)$")


def _files(kind: str) -> list[dict[str, Any]]:
    found = [load_yaml(p) for p in sorted((PROVISIONING / kind).glob("*.y*ml"))]
    assert found, f"no {kind} provisioning files"
    for data in found:
        assert data["apiVersion"] == 1
    return found


def _datasources() -> list[dict[str, Any]]:
    return [ds for f in _files("datasources") for ds in f.get("datasources", [])]


def _compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = load_yaml(COMPOSE_FILE)["services"][name]
    return service


def test_datasources() -> None:
    sources = _datasources()
    for ds in sources:
        assert {"name", "type", "uid", "url", "access"} <= ds.keys(), ds
        assert ds["access"] == "proxy"
    uids = [ds["uid"] for ds in sources]
    assert len(uids) == len(set(uids))
    by_uid = {ds["uid"]: ds for ds in sources}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    backend = by_uid["plugin-backend"]
    assert backend["type"] == "simpod-json-datasource"
    assert backend["url"] == "http://api:8080/datasource"  # not the root: /metrics is ours
    assert backend["jsonData"]["httpHeaderName1"] == "Authorization"
    assert backend["secureJsonData"]["httpHeaderValue1"] == "Bearer $PLUGIN_BACKEND_API_TOKEN"


def _interpolated_strings(value: Any) -> list[str]:
    """Strings Grafana expands $VARIABLES in (alert annotations are Go templates instead)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _interpolated_strings(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k != "annotations" for s in _interpolated_strings(v)]
    return []


def test_every_environment_reference_is_set_for_grafana() -> None:
    env = _compose_service("grafana")["environment"]
    referenced = set()
    for path in PROVISIONING.rglob("*.y*ml"):
        for text in _interpolated_strings(load_yaml(path)):
            for name in ENV_REF.findall(text.replace("$$", "")):
                assert name in env, f"{path.name} reads ${name}, which grafana's env lacks"
                referenced.add(name)
    assert referenced == {"PLUGIN_BACKEND_API_TOKEN"}


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    providers = [p for f in _files("dashboards") for p in f["providers"]]
    assert len(providers) == 1
    provider = providers[0]
    assert {"name", "type", "options"} <= provider.keys()
    assert provider["type"] == "file"
    mounts = dict(v.split(":")[:2] for v in _compose_service("grafana")["volumes"])
    assert mounts["./dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def _alerting() -> dict[str, list[dict[str, Any]]]:
    merged: dict[str, list[dict[str, Any]]] = {"contactPoints": [], "policies": [], "groups": []}
    for data in _files("alerting"):
        for key in merged:
            merged[key] += data.get(key, [])
    return merged


def test_contact_point_is_the_backend_alert_webhook() -> None:
    (point,) = _alerting()["contactPoints"]
    assert point["orgId"] == 1
    (receiver,) = point["receivers"]
    assert receiver["uid"]
    assert receiver["type"] == "webhook"
    settings = receiver["settings"]
    assert settings["url"] == f"http://api:8080{ALERT_ROUTE}"
    assert settings["httpMethod"] == "POST"
    assert settings["authorization_scheme"] == "Bearer"
    assert settings["authorization_credentials"] == "$PLUGIN_BACKEND_API_TOKEN"


def test_the_backend_serves_the_alert_route() -> None:
    from plugin_backend.config import load_settings

    app = create_app(load_settings({"PLUGIN_BACKEND_LLM_PROVIDER": "none"}))
    rules = [r for r in app.url_map.iter_rules() if r.rule == ALERT_ROUTE]
    assert rules, f"the backend serves no {ALERT_ROUTE}"
    assert any("POST" in (r.methods or ()) for r in rules)


def test_notification_policy_routes_to_the_contact_point() -> None:
    alerting = _alerting()
    names = {p["name"] for p in alerting["contactPoints"]}
    (policy,) = alerting["policies"]
    assert policy["receiver"] in names
    assert "rule" in policy["group_by"]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        assert DURATION.match(policy[key]), key


def test_alert_rules() -> None:
    groups = _alerting()["groups"]
    datasource_uids = {ds["uid"] for ds in _datasources()}
    boards = {d["uid"]: d for d in dashboards().values()}
    rule_uids = []
    for group in groups:
        assert {"name", "folder", "interval", "rules"} <= group.keys()
        assert DURATION.match(group["interval"])
        for rule in group["rules"]:
            rule_uids.append(rule["uid"])
            assert rule["title"]
            assert DURATION.match(rule["for"])
            assert rule["noDataState"] in {"OK", "NoData", "Alerting", "KeepLast"}
            assert rule["execErrState"] in {"OK", "Error", "Alerting", "KeepLast"}
            refs = {q["refId"]: q for q in rule["data"]}
            assert rule["condition"] in refs
            for query in rule["data"]:
                uid = query["datasourceUid"]
                assert uid in datasource_uids | {"__expr__"}, uid
                assert query["model"]["refId"] == query["refId"]
                assert {"from", "to"} <= query["relativeTimeRange"].keys()
                if uid == "__expr__":
                    assert query["model"]["expression"] in refs
            condition = refs[rule["condition"]]["model"]
            assert condition["type"] == "threshold"
            assert condition["conditions"][0]["evaluator"] == {"type": "gt", "params": [1]}
            source = refs[condition["expression"]]["model"]
            assert "plugin_backend_anomaly_score" in source["expr"]
            assert re.search(r"by \(rule\)", source["expr"]), "alerts must carry the rule label"
            board = boards[rule["dashboardUid"]]
            assert rule["panelId"] in {p["id"] for p in all_panels(board)}
    assert len(rule_uids) == len(set(rule_uids))
