"""deploy/: the Prometheus config, the watch rules and the dependency map of the stack."""

from __future__ import annotations

import subprocess

from plugin_backend import demoapp
from plugin_backend.bootstrap import build_dependencies
from plugin_backend.config import load_settings
from plugin_backend.rules import load_rules
from tests.needs import require_binary
from tests.stack.support import (
    COMPOSE_FILE,
    DEPENDENCIES_FILE,
    PROMETHEUS_CONFIG,
    RULES_FILE,
    all_panels,
    dashboards,
    load_yaml,
)


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = require_binary("promtool", "Debian package prometheus")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_each_service_on_its_port() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    api_port = services["api"]["environment"]["PLUGIN_BACKEND_PORT"]
    worker = services["worker"]["command"]
    worker_port = worker[worker.index("--metrics-port") + 1]
    demo = services["demo"]["command"]
    demo_port = demo[demo.index("--port") + 1]
    jobs = {
        job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
        for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    }
    assert jobs == {
        "plugin-backend-api": [f"api:{api_port}"],
        "plugin-backend-worker": [f"worker:{worker_port}"],
        "demo": [f"demo:{demo_port}"],
        "prometheus": ["localhost:9090"],
    }
    assert (api_port, worker_port, demo_port) == ("8080", "9466", "8000")


def test_watch_rules_load_and_annotate_existing_panels() -> None:
    rules = load_rules(RULES_FILE)  # the worker's own parser (names, durations, detectors)
    assert rules.names
    boards = {board["uid"]: board for board in dashboards().values()}
    for rule in rules.rules:
        assert rule.dashboard_uid in boards, rule.name
        assert rule.panel_id in {p["id"] for p in all_panels(boards[rule.dashboard_uid])}
        assert rule.labels.get("service") in demoapp.SERVICES, rule.name


def test_dependency_map_loads_and_names_the_demo_apps_services() -> None:
    settings = load_settings({"PLUGIN_BACKEND_DEPENDENCIES": str(DEPENDENCIES_FILE)})
    assert build_dependencies(settings) is not None
    services = load_yaml(DEPENDENCIES_FILE)["services"]
    assert set(services) == set(demoapp.SERVICES)
    for name, spec in services.items():
        assert spec["runs_on"] == [demoapp.NODES[name]], name
        assert set(spec.get("depends_on", [])) <= set(demoapp.SERVICES)
