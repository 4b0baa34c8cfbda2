"""Shared pytest fixtures. What a test needs from outside the repository (binaries,
../shared) and when its absence skips or fails: tests/needs.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from plugin_backend.devtools.promserver import PrometheusServer, start_backfilled
from plugin_backend.devtools.testdata import build_test_series
from tests.needs import require_binary

# --- isolation ------------------------------------------------------------------
# The default store lives under $XDG_STATE_HOME: point it at a temp dir so no test
# (nor a gunicorn it starts) writes into the user's home.


@pytest.fixture(scope="session", autouse=True)
def _isolated_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    state = tmp_path_factory.mktemp("state-home")
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    os.environ.pop("PLUGIN_BACKEND_STORE_URL", None)
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


# --- real Prometheus ---------------------------------------------------------
# One Prometheus per test session, over the deterministic dataset of
# plugin_backend.devtools.testdata (backfilled with promtool into a temp dir).


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A started Prometheus over the test dataset (backfill + start once per session)."""
    for binary in ("prometheus", "promtool"):
        require_binary(binary, "Debian package prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    server = start_backfilled(build_test_series(), workdir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus_url(prometheus: PrometheusServer) -> str:
    """Base URL of the session Prometheus, e.g. ``http://127.0.0.1:41234``."""
    return prometheus.url
