"""Shared pytest fixtures. What a test needs from outside the repository (binaries,
../shared) and when its absence skips or fails: tests/needs.py."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin_backend.store import Store
from testkit.pgserver import PostgresServer, find_postgres_bin
from testkit.promserver import PrometheusServer, start_backfilled
from testkit.redisserver import RedisServer
from testkit.testdata import build_test_series
from tests.needs import require_binary, require_installed

# --- tiers (tests/README.md) -----------------------------------------------------
# Marked here by directory and by the fixtures a test uses, so a new test lands in its
# tier without a decorator. A module that starts processes by itself says so with
# `pytestmark = pytest.mark.processes`; `integration` (a real Prometheus) implies it.

TESTS = Path(__file__).resolve().parent
DIRECTORY_TIERS = {
    "integration": ("processes",),
    "browser": ("browser", "processes"),
    "stack": ("stack", "processes"),
    "client": ("client", "processes"),
}
PROCESS_FIXTURES = {"prometheus", "prometheus_url", "postgres", "postgres_url"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tiers: set[str] = set()
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(TESTS):
            top = path.relative_to(TESTS).parts[0]
            tiers.update(DIRECTORY_TIERS.get(top, ()))
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        uses_postgres = callspec is not None and callspec.params.get("store_url") == "postgresql"
        if fixtures & PROCESS_FIXTURES or uses_postgres or item.get_closest_marker("integration"):
            tiers.add("processes")
        for tier in sorted(tiers):
            if item.get_closest_marker(tier) is None:
                item.add_marker(getattr(pytest.mark, tier))


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
# testkit.testdata (backfilled with promtool into a temp dir).


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


# --- real PostgreSQL ---------------------------------------------------------
# One throw-away cluster per test session (initdb in a temp dir, a free port on
# 127.0.0.1); every test that asks for ``postgres_url`` gets a fresh empty database.


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if find_postgres_bin() is None:
        message = (
            "PostgreSQL's initdb not found: install the Debian package 'postgresql' "
            "(`make system-deps`)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide a real PostgreSQL: {message}", pytrace=False)
        pytest.skip(f"no real PostgreSQL: {message}")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database on the session's PostgreSQL."""
    name = f"test_{next(_database_numbers)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty store database: an SQLite file, then a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on ``store_url`` (SQLite, then PostgreSQL), closed after."""
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


# --- real Redis (the Celery broker) ------------------------------------------
# One redis-server per test session on a free port, its files in a temp dir; every
# test that asks for ``redis_url`` gets its own logical database, flushed empty.


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    require_binary("redis-server", "Debian package redis-server")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


_redis_dbs = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of an empty Redis database (1..15, reused round-robin) on the session's server."""
    try:
        import redis
    except ImportError:
        require_installed("the scale extra", "celery and redis, the scale-out engine")

    url = redis_server.url(1 + next(_redis_dbs) % 15)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url
