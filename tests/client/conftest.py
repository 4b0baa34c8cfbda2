"""The real-client tier: the simpod-json-datasource plugin's own frontend sources, run in
Node (harness/), against ``plugin-backend serve`` under gunicorn on the demo estate.

* ``backend``: the API as users run it, bearer token for Grafana and basic auth for
  browsers (the incident pages), store in a temp dir, no LLM;
* ``plugin``: one Node process for the session that loads the plugin's sources
  (``../shared/contracts/simpod-plugin-src``, bundled with esbuild at start) with a model
  of Grafana around them (harness/grafana.js); each ``plugin.run(step)`` answers what
  the plugin returned, or what Grafana shows for its error, and every HTTP exchange.

Needs ``node`` and ``npm`` (``make system-deps``) and the npm packages pinned in
package-lock.json (``npm ci``, run once and cached in tests/client/node_modules). Tests
that need the plugin's sources skip when ``../shared`` is absent, except in CI with
``TESTS_EXPECT_SHARED=1`` (.ci/run), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.promserver import find_free_port
from tests.client.support import (
    CLIENT_DIR,
    LOCK_STAMP,
    NODE_MODULES,
    PLUGIN_SRC,
    ROOT,
    Backend,
    backend_env,
    start_backend,
)

# Whichever plugin test runs first pays for `npm ci` (1-3 min from an empty cache) in its
# setup, which pytest-timeout counts: give those tests room beyond the suite's 300 s.
NPM_CI_TIMEOUT_S = 600


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_plugin_src() -> Path:
    """The plugin's sources; skip without ../shared, fail in CI when .ci/run expects it."""
    if (PLUGIN_SRC / "src" / "DataSource.ts").is_file():
        return PLUGIN_SRC
    message = f"the plugin's sources are not at {PLUGIN_SRC} (../shared is absent)"
    if _in_ci() and os.environ.get("TESTS_EXPECT_SHARED") == "1":
        pytest.fail(f"CI expects ../shared (TESTS_EXPECT_SHARED=1): {message}")
    pytest.skip(message)


def _require_node_and_npm() -> None:
    missing = [name for name in ("node", "npm") if shutil.which(name) is None]
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not found on PATH; the real-client tier runs the plugin "
        "in Node: install the Debian packages nodejs and npm (`make system-deps`)"
    )
    if _in_ci():
        pytest.fail(f"CI must provide Node and npm: {message}", pytrace=False)
    pytest.skip(message)


def _lock_digest() -> str:
    return hashlib.sha256((CLIENT_DIR / "package-lock.json").read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``npm ci`` from package-lock.json, once per lockfile (the stamp remembers which)."""
    _require_node_and_npm()
    digest = _lock_digest()
    if LOCK_STAMP.is_file() and LOCK_STAMP.read_text().strip() == digest:
        return NODE_MODULES
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"`npm ci` in {CLIENT_DIR} failed (rc {done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-4000:]}",
            pytrace=False,
        )
    LOCK_STAMP.write_text(digest + "\n")
    return NODE_MODULES


# --- the backend ---------------------------------------------------------------------------


# One watch rule over the demo estate's checkout latency, which every injected fault moves;
# 18 h replayed, as tests/stack do: a full turn of the demo's faults always moves it.
# Band-edge alarms, as the demo's rules: the faults recur more often than one alarm per
# three days, which the rate-controlled threshold learns as normal.
WORKER_RULES = """\
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 30s
    dashboard_uid: anomaly-overview
    panel_id: 2
    detector: robust_z
    direction: up
    labels: {service: checkout}
    rate_control: false
"""


def replay_worker(workdir: Path, env: dict[str, str], since: str = "18h") -> None:
    """``plugin-backend worker --once --since``: incidents in the store the API reads."""
    rules = workdir / "rules.yaml"
    rules.write_text(WORKER_RULES, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "plugin_backend", "worker", "--rules", str(rules), "--once",
         "--since", since],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The API over the demo estate, its store holding what the worker found in 18 h."""
    workdir = tmp_path_factory.mktemp("client-backend")
    port = find_free_port()
    env = backend_env(port, workdir)
    replay_worker(workdir, env)
    started = start_backend(workdir, env, port)
    yield started
    started.stop()


# --- the plugin in Node --------------------------------------------------------------------


class PluginHarness:
    """harness/run.js: one JSON step in, one JSON answer out, per line."""

    def __init__(self, plugin_src: Path, log: Path) -> None:
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            ["node", str(CLIENT_DIR / "harness" / "run.js"), str(plugin_src)],
            cwd=CLIENT_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log = log
        first = self._read()
        assert first == {"ready": True}, first

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self._log.flush()
            raise RuntimeError(
                f"the plugin harness exited (rc {self.proc.poll()}):\n"
                f"{self.log.read_text(errors='replace')[-4000:]}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, step: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(step) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        assert "harnessError" not in answer, answer["harnessError"]
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def plugin(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginHarness]:
    src = require_plugin_src()
    harness = PluginHarness(src, tmp_path_factory.mktemp("plugin-harness") / "node.log")
    yield harness
    harness.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(CLIENT_DIR) and "plugin" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(NPM_CI_TIMEOUT_S + 300))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or fail) on missing ../shared before any fixture pays for npm ci or gunicorn."""
    if "plugin" in getattr(item, "fixturenames", ()):
        require_plugin_src()
