"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from plugin_backend.devtools.promserver import PrometheusServer, start_backfilled
from plugin_backend.devtools.testdata import build_test_series

# --- real Prometheus ---------------------------------------------------------
# One Prometheus per test session, over the deterministic dataset of
# plugin_backend.devtools.testdata (backfilled with promtool into a temp dir).


def _require_prometheus_binaries() -> None:
    missing = [name for name in ("prometheus", "promtool") if shutil.which(name) is None]
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not found on PATH; install the Debian package "
        "'prometheus': run `make system-deps`"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide a real Prometheus: {message}", pytrace=False)
    pytest.skip(f"no real Prometheus: {message}")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A started Prometheus over the test dataset (backfill + start once per session)."""
    _require_prometheus_binaries()
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
