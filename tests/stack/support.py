"""Shared helpers of the stack tests: the stack's files and Grafana-like substitution."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROVISIONING = ROOT / "grafana" / "provisioning"
DASHBOARDS = ROOT / "dashboards"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES_FILE = ROOT / "deploy" / "rules.yaml"
DEPENDENCIES_FILE = ROOT / "deploy" / "dependencies.yaml"
API_TOKEN = "stack-test-token"
# Grafana's own annotation/dashboard datasource, which every dashboard may use.
GRAFANA_BUILTIN_UIDS = {"-- Grafana --", "grafana"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # never send 127.0.0.1 through an HTTP(S)_PROXY
    return s


# --- dashboards ------------------------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in dashboard_files()}


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out += panel.get("panels", [])
    return out


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def _name(match: re.Match[str]) -> str:
    return match.group(1) or match.group(2) or match.group(3)


def variable_names(text: str) -> set[str]:
    return {a or b or c for a, b, c in _VAR.findall(text)}


def substitute(value: Any, values: dict[str, str]) -> Any:
    """Grafana's template substitution (single values) over strings in ``value``."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: values.get(_name(m), m.group(0)), value)
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, values) for k, v in value.items()}
    return value
