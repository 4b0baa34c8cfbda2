"""The scheduler sends again a tick whose worker died (its lease ran out), once however
many schedulers poll, a replay tick as a replay; and a tick it claimed while the broker
(a real redis-server, stopped) refused it, once the broker is back; on SQLite and a real
PostgreSQL store. (With real Celery workers and ``kill -9``: ``test_faults.py``.)"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from plugin_backend.config import Settings
from plugin_backend.rules import parse_rules
from plugin_backend.scale.scheduler import SEND_LEASE_S, TICK_LEASE_S, TickScheduler
from plugin_backend.store import Store
from testkit.redisserver import RedisServer

RULES = parse_rules("rules:\n  - name: r\n    expr: up\n    every: 60s\n")
T = 1_780_000_020.0  # on the rule's 60 s grid


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[tuple[str, float, float | None]] = []

    def rule_tick(
        self, rule: str, tick_s: float, *, expires_s: float, lookback_s: float | None = None
    ) -> None:
        self.ticks.append((rule, tick_s, lookback_s))

    def housekeeping(self, name: str, *, expires_s: float) -> None:
        return


def test_a_dead_workers_replay_tick_is_sent_again_once_as_a_replay(store: Store) -> None:
    clock = [T + 1.0]
    sent = [Recorder(), Recorder()]
    schedulers = [
        TickScheduler(store, lambda: RULES, s, clock=lambda: clock[0], since_s=43_200.0)
        for s in sent
    ]
    for scheduler in schedulers:
        scheduler.run_once()
    assert [r.ticks for r in sent] == [[("r", T, 43_200.0)], []]  # once, as a replay
    assert store.start_tick("r", T, "w1", now_s=T + 2, lease_s=TICK_LEASE_S) == "started"
    clock[0] = T + 2 + TICK_LEASE_S - 1  # alive (its lease runs): nothing is sent
    for scheduler in schedulers:
        scheduler.run_once()
    assert [len(r.ticks) for r in sent] == [1, 0]
    clock[0] = T + 2 + TICK_LEASE_S + 1  # w1 died: one scheduler sends it again
    for scheduler in schedulers:
        scheduler.run_once()
    again = [t for r in sent for t in r.ticks[1:] if t[0] == "r"]
    assert again == [("r", T, 43_200.0)]
    (tick,) = store.rule_ticks("r")
    assert (tick.state, tick.attempts, tick.error) == ("queued", 1, "worker lost: w1")


def _rule_ticks_on_broker(server: RedisServer) -> list[list[Any]]:
    """The ``rule_tick`` tasks waiting in the broker's ``rules`` queue: their args."""
    import redis

    client = redis.Redis.from_url(server.url(0))
    found = []
    for raw in client.lrange("rules", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "plugin_backend.rule_tick":
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            found.append(args)
    client.close()
    return sorted(found)


@pytest.mark.processes
def test_a_tick_claimed_while_redis_is_down_is_sent_once_when_it_is_back(
    store: Store, own_redis: RedisServer
) -> None:
    from plugin_backend.scale.tasks import CelerySender, create_celery

    settings = Settings(broker_url=own_redis.url(0), store_url=store.url)
    clock = [T + 1.0]
    schedulers = [
        TickScheduler(store, lambda: RULES, CelerySender(create_celery(settings, schedule=False)))
        for _ in range(2)
    ]
    for scheduler in schedulers:
        scheduler.clock = lambda: clock[0]

    def poll(at_s: float) -> None:
        clock[0] = at_s
        for scheduler in schedulers:
            scheduler.run_once()

    own_redis.stop(remove=False)
    poll(T + 1.0)  # claimed, refused by the broker
    (tick,) = store.rule_ticks("r")
    assert (tick.tick_s, tick.state, tick.lease_until_s) == (T, "queued", T + 1 + SEND_LEASE_S)
    own_redis.start()
    poll(T + SEND_LEASE_S)  # back, but the claim may still be being sent: wait for it
    assert _rule_ticks_on_broker(own_redis) == []
    for k in range(3):  # then sent by one scheduler, once, however often they poll
        poll(T + 2.0 + SEND_LEASE_S + k)
    assert _rule_ticks_on_broker(own_redis) == [["r", T]]
    (tick,) = store.rule_ticks("r")
    assert (tick.state, tick.lease_until_s) == ("queued", None)  # recorded sent

    # down across two ticks: the later one is sent, the earlier is covered by it (the
    # server restarts empty: tick T, still queued, is gone with it)
    own_redis.stop(remove=False)
    poll(T + 61.0)
    poll(T + 121.0)
    own_redis.start()
    for k in range(3):
        poll(T + 122.0 + SEND_LEASE_S + k)
    assert _rule_ticks_on_broker(own_redis) == [["r", T + 120]]
    states = {t.tick_s: (t.state, t.error) for t in store.rule_ticks("r")}
    assert states == {
        T: ("queued", None),
        T + 60: ("skipped", "superseded (never sent: broker unreachable)"),
        T + 120: ("queued", None),
    }
