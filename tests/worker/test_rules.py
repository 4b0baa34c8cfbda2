"""Watch-rules files: defaults, and errors that point at the line to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plugin_backend.errors import ConfigError
from plugin_backend.rules import load_rules, parse_rules
from plugin_backend.scoring.registry import DEFAULT_DETECTOR

GOOD = """\
rules:
  - name: checkout-latency
    expr: 'histogram_quantile(0.99, sum by (le) (rate(x_bucket{service="checkout"}[5m])))'
    every: 30s
    dashboard_uid: checkout-overview
    panel_id: 2
  - name: errors
    expr: sum(rate(http_errors_total[5m]))
    every: 2m
    step: 1m
    detector: robust_z
    direction: up
    sensitivity: 2
    explain_window: 1h
    labels: {team: payments}
"""


def test_a_valid_file_with_defaults_and_durations():
    rules = parse_rules(GOOD)
    first, second = rules.rules
    assert (first.name, first.every_s, first.step_s, first.panel_id) == (
        "checkout-latency",
        30.0,
        15.0,
        2,
    )
    assert first.detector == DEFAULT_DETECTOR
    assert first.explain_window_s is None  # root cause follows the symptom's own onset
    assert (second.every_s, second.step_s, second.explain_window_s) == (120.0, 60.0, 3600.0)
    assert (second.direction, second.sensitivity, second.labels) == (
        "up",
        2.0,
        {"team": "payments"},
    )
    assert rules.get("errors") is second
    assert rules.get("nope") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - name: a\n    expr: up\n    every: soon\n", "<rules>:4:12: rule 'a': every:"),
        (
            "rules:\n  - name: a\n    expr: up\n    colour: red\n",
            "<rules>:4:5: rule 'a': unknown key 'colour'",
        ),
        ("rules:\n  - expr: up\n", "<rules>:2:5: rule: missing required key 'name'"),
        ("rules:\n  - name: A B\n    expr: up\n", "<rules>:2:11: rule 'A B': name: must be"),
        ("rules:\n  - name: a\n    expr: up\n    detector: magic\n", "unknown detector 'magic'"),
        (
            "rules:\n  - name: a\n    expr: up\n    panel_id: -1\n",
            "<rules>:4:15: rule 'a': panel_id",
        ),
        (
            "rules:\n  - name: a\n    expr: up\n  - name: a\n    expr: up\n",
            "<rules>:4:11: duplicate rule name 'a' (first at line 2)",
        ),
        ("rules: [\n", "<rules>:2:1: invalid YAML"),
        ("- name: a\n", "<rules>:1:1: the file must be a mapping with a 'rules:' list"),
        ("rules: {a: 1}\n", "<rules>:1:8: 'rules' must be a list"),
        ("rules:\n  - just text\n", "<rules>:2:5: each rule must be a mapping"),
    ],
)
def test_errors_name_the_line_and_column(text, expected):
    with pytest.raises(ConfigError) as info:
        parse_rules(text)
    assert expected in info.value.message


def test_every_problem_is_reported_at_once():
    text = "rules:\n  - name: a\n    expr: up\n    every: 1s\n  - name: b\n    expr: ''\n"
    with pytest.raises(ConfigError) as info:
        parse_rules(text)
    lines = info.value.message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("<rules>:4:12: rule 'a': every:")
    assert lines[1].startswith("<rules>:6:11: rule 'b': expr:")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the rules file"):
        load_rules(tmp_path / "absent.yaml")


def test_rules_check_command(tmp_path):
    good = tmp_path / "rules.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: a\n    expr: up\n    every: 1s\n")
    ok = subprocess.run(
        [sys.executable, "-m", "plugin_backend", "rules", "check", str(good)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0
    assert "2 rules OK: checkout-latency, errors" in ok.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "plugin_backend", "rules", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert f"{bad}:4:12: rule 'a': every:" in refused.stderr
