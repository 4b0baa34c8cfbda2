"""The test suite's throw-away Redis: it answers, and a restart on the same port
comes back empty (nothing persisted), as a broker crash would leave it."""

from __future__ import annotations

from testkit.redisserver import RedisServer
from tests.needs import require_binary, require_installed


def test_a_restarted_redis_answers_on_the_same_port_and_starts_empty() -> None:
    require_binary("redis-server", "Debian package redis-server")
    try:
        import redis
    except ImportError:
        require_installed("the scale extra", "redis, the broker's client")
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url())
        client.set("k", "v")
        assert client.get("k") == b"v"
        port = server.port
        server.restart()
        assert server.port == port
        assert server.ping()
        assert client.get("k") is None  # the client reconnects; the key is gone
        client.close()
    assert not server.running
    assert not server.ping()
