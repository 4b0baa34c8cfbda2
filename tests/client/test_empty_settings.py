"""A setting set to an empty string counts as unset (issue 17, finding 5): shells, compose
files and Helm values write ``PLUGIN_BACKEND_PROMETHEUS_URL=`` for "not set", and the
Makefile already reads it so. ``plugin-backend config`` validates and prints the settings
the service would start with. (test_save_and_test.py starts ``serve`` with the empty
Prometheus URL and runs the plugin's Save & test against it.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from plugin_backend.config import Settings
from tests.client.support import ROOT

pytestmark = pytest.mark.client


def _config(tmp_path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_BACKEND_")}
    env["XDG_STATE_HOME"] = str(tmp_path)  # the default store path derives from it
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, "-m", "plugin_backend", "config"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_empty_prometheus_url_means_the_demo_source(tmp_path):
    done = _config(tmp_path, PLUGIN_BACKEND_PROMETHEUS_URL="")
    assert done.returncode == 0, done.stderr
    assert "prometheus_url = None" in done.stdout.splitlines()


def test_every_setting_set_empty_reads_as_its_default(tmp_path):
    defaults = _config(tmp_path)
    assert defaults.returncode == 0, defaults.stderr
    empty = {f"PLUGIN_BACKEND_{name.upper()}": "" for name in Settings.model_fields}
    empty["PLUGIN_BACKEND_CONFIG"] = ""
    done = _config(tmp_path, **empty)
    assert done.returncode == 0, done.stderr
    assert done.stdout == defaults.stdout
