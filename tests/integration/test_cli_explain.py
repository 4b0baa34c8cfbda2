"""`plugin-backend explain` against a real Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testkit.testdata import DATA_END_S, DEPLOY_S

pytestmark = pytest.mark.integration


def _run(*args):
    env = {**os.environ, "PLUGIN_BACKEND_LLM_PROVIDER": "none"}
    return subprocess.run(
        [sys.executable, "-m", "plugin_backend", "explain", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_json_report_from_a_real_prometheus(prometheus_url):
    result = _run(
        "--prometheus-url", prometheus_url,
        "--query", 'sum(rate(http_requests_total{service="checkout"}[5m]))',
        "--at", str(DEPLOY_S + 600),
        "--window", "30m",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"symptom", "causes", "summary", "llm"}
    assert report["candidates"] > 10
    assert report["llm"]["provider"] == "none"
    assert report["llm"]["fallback"] is True


def test_readable_report_and_errors(prometheus_url):
    ok = _run("--prometheus-url", prometheus_url, "--query", "bench_gauge", "--at", str(DATA_END_S))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("Symptom: bench_gauge")
    bad = _run("--prometheus-url", prometheus_url, "--query", "rate(", "--at", str(DATA_END_S))
    assert bad.returncode == 2
    assert "Prometheus rejected the query" in bad.stderr
