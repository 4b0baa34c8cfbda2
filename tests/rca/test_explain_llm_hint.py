"""`plugin-backend explain` with no LLM server reachable: the template note, and one
line on stderr saying how to get the model's note."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from plugin_backend.explain import llm_hint
from testkit.testdata import DEPLOY_S

QUERY = 'sum(rate(http_requests_total{service="checkout"}[5m]))'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _explain(prometheus_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    args = ["--prometheus-url", prometheus_url, "--query", QUERY, "--at", str(DEPLOY_S + 600)]
    return subprocess.run(
        [sys.executable, "-m", "plugin_backend", "explain", *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PLUGIN_BACKEND_LLM_TIMEOUT_S": "2", **env},
    )


@pytest.mark.integration
def test_unreachable_local_llm_gives_the_template_and_says_once_how_to_get_the_model(
    prometheus_url: str,
) -> None:
    result = _explain(
        prometheus_url,
        PLUGIN_BACKEND_LLM_PROVIDER="local",
        PLUGIN_BACKEND_LLM_URL=f"http://127.0.0.1:{_closed_port()}/v1",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["llm"]["fallback"] is True
    assert report["summary"].startswith("Likely mechanism")
    assert result.stderr.count("plugin-backend llm-serve") == 1, result.stderr


@pytest.mark.integration
def test_no_hint_when_the_user_chose_template_notes(prometheus_url: str) -> None:
    result = _explain(prometheus_url, PLUGIN_BACKEND_LLM_PROVIDER="none")
    assert result.returncode == 0, result.stderr
    assert "llm-serve" not in result.stderr


def test_hint_only_for_an_llm_that_did_not_answer() -> None:
    unreachable = {
        "provider": "local",
        "fallback": True,
        "reason": "LLM failed: cannot reach LLM at 127.0.0.1:8091: connection failed",
    }
    hint = llm_hint(unreachable)
    assert hint is not None
    assert "plugin-backend llm-serve" in hint
    assert llm_hint({**unreachable, "fallback": False, "reason": None}) is None
    assert llm_hint({"provider": "none", "fallback": True, "reason": "no LLM configured"}) is None
    rejected = {**unreachable, "reason": "note rejected: names an unknown series"}
    assert llm_hint(rejected) is None
