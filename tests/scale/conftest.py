"""Fixtures of the scale tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.redisserver import RedisServer
from tests.needs import require_binary, require_installed


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: it is stopped or restarted."""
    require_binary("redis-server", "Debian package redis-server")
    try:
        import celery  # noqa: F401
    except ImportError:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
