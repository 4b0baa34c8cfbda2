"""Faults of the Celery engine, with real processes: ``plugin-backend worker --engine
celery`` workers on a real redis-server and PostgreSQL (the kill also on SQLite),
annotating a fake Grafana, over the demo estate (rules every 5 s; a 5 h replay first,
so that incidents and annotations exist: the estate has a 30 min fault every 4 h 7
min).

* ``kill -9`` of one of two workers (its Celery parent and pool) mid-task: the killed
  tick itself runs again and completes on the other worker within RERUN_S (its lease,
  ``TICK_LEASE_S``, runs out, a scheduler queues it again with the rule kept for it),
  and every rule ticks there from then on; no annotation lost or duplicated on the
  fake Grafana's record.
* Redis down for OUTAGE_S and back (empty: no persistence), then PostgreSQL restarted,
  mid-run: the workers reconnect by themselves; every tick outside the restart windows
  ran; the ticks that fell due while Redis was down were claimed and, once it was back,
  sent: each ran, or a later tick of its rule that ran covers it; none is left unsent.
  The outbox is intact (every incident annotated once).
"""

from __future__ import annotations

import math
import random
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from plugin_backend.scale.scheduler import TICK_LEASE_S
from plugin_backend.store import Store
from plugin_backend.store.schema import rule_leases
from plugin_backend.worker import RULE_LEASE_S
from testkit.fakegrafana import FakeGrafana
from testkit.pgserver import PostgresServer
from testkit.redisserver import RedisServer
from tests.scale.cluster import DEMO_RULES, Cluster, rules_yaml

pytestmark = pytest.mark.processes

EVERY_S = 5.0
# A killed worker's rules run again elsewhere within: its lease runs out, then the
# rule's next tick (every EVERY_S) is picked up (a poll, a queue hop).
RESUME_S = RULE_LEASE_S + 2 * EVERY_S + 5.0
# The killed tick is sent again within TICK_LEASE_S + one scheduler poll (1 s) of the
# kill, and completes after its wait in the queue (behind ticks already there: about
# one period's worth) and its cycle.
RERUN_S = TICK_LEASE_S + 1.0 + EVERY_S + 5.0
# After Redis or PostgreSQL is back, ticks run again within this (Celery's reconnect
# backoff; the scheduler retries every second).
RECOVERY_S = 15.0
# Redis is down this long: ticks fall due (every EVERY_S) and are refused by the broker.
OUTAGE_S = 2 * EVERY_S
TOKEN = "glsa_fault_test"


def _cluster(tmp_path: Path, store_url: str, broker_url: str, grafana: FakeGrafana) -> Cluster:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_yaml("5s", detector="robust_z"), encoding="utf-8")
    return Cluster(
        {
            "PLUGIN_BACKEND_BROKER_URL": broker_url,
            "PLUGIN_BACKEND_STORE_URL": store_url,
            "PLUGIN_BACKEND_RULES": str(rules),
            "PLUGIN_BACKEND_GRAFANA_URL": grafana.url,
            "PLUGIN_BACKEND_GRAFANA_TOKEN": TOKEN,
            "PLUGIN_BACKEND_GRAFANA_TIMEOUT_S": "2",
            "PLUGIN_BACKEND_LLM_PROVIDER": "none",
            "PLUGIN_BACKEND_WARM_DETECTORS": "none",
        },
        tmp_path,
    )


def _live_ticks_done(store: Store, after_s: float) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {name: [] for name, _ in DEMO_RULES}
    for tick in store.rule_ticks(limit=10_000):
        if tick.rule in found and tick.state == "done" and tick.updated_s > after_s:
            found[tick.rule].append(tick)
    return found


def _annotated_once(store: Store, grafana: FakeGrafana) -> int:
    """Every incident with a panel is on Grafana exactly once, as its outbox row says."""
    rows = {row.incident_id: row for row in store.outbox_rows(limit=10_000)}
    assert all(row.state == "delivered" for row in rows.values()), rows
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for annotation in grafana.annotations():
        for tag in annotation["tags"]:
            if tag.startswith("incident:"):
                by_tag.setdefault(tag.removeprefix("incident:"), []).append(annotation)
    incidents = [i for i in store.list_incidents(limit=10_000) if i.dashboard_uid]
    assert sorted(by_tag) == sorted(i.id for i in incidents)
    for incident in incidents:
        (annotation,) = by_tag[incident.id]  # not lost, not duplicated
        assert annotation["text"] == rows[incident.id].text
        assert annotation["time"] == rows[incident.id].time_ms
    return len(incidents)


def _delivered(store: Store) -> bool:
    counts = store.outbox_counts()
    return counts["pending"] == 0 and counts["delivered"] > 0


def test_kill_9_of_one_of_two_workers_mid_task(
    store_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    store = Store(store_url)
    store.migrate()
    with FakeGrafana(token=TOKEN) as grafana:
        cluster = _cluster(tmp_path, store_url, own_redis.url(0), grafana)
        try:
            for _ in range(2):
                cluster.start("--since", "5h")
            cluster.wait("the replay's annotations", lambda: _delivered(store))
            grafana.delay(1.0)  # deliveries in flight when the worker dies
            started = time.time()
            cluster.wait(
                "ticks running", lambda: _live_ticks_done(store, started)[DEMO_RULES[0][0]]
            )
            victim_holder = _holder_of(cluster, 0)

            def running_on_victim() -> list[Any]:
                return [
                    t
                    for t in store.rule_ticks(limit=50)
                    if t.state == "running" and (t.holder or "").startswith(victim_holder)
                ]

            # caught mid-cycle: frozen at random moments until one finds its tick running
            # and holding the rule, then killed (a robust_z tick takes tens of ms, so
            # polling for a running tick first would rarely see one on a quiet machine)
            deadline = time.monotonic() + 180
            while True:
                cluster.freeze(0)
                frozen = [t for t in running_on_victim() if _holds_rule(store, t)]
                if frozen:
                    running = frozen[0]
                    break
                cluster.freeze(0, False)  # between ticks: let it run a little and retry
                if time.monotonic() > deadline:
                    tails = cluster.log_tails()
                    raise AssertionError(f"no tick of worker 0 caught running\n{tails}")
                time.sleep(random.uniform(0.0, 0.05))
            cluster.kill(0)
            killed_at = time.time()
            grafana.delay(0.0)

            # the tick worker 0 was running runs again, and completes, on worker 1
            def rerun() -> Any:
                found = store.rule_ticks(running.rule, limit=100)
                tick = next(t for t in found if t.tick_s == running.tick_s)
                return tick if tick.state not in ("queued", "running") else None

            again = cluster.wait(f"tick {running} again", rerun, RERUN_S + 30)
            assert (again.state, again.attempts) == ("done", 2), again
            assert not (again.holder or "").startswith(victim_holder), again
            assert again.updated_s - killed_at <= RERUN_S, (again, killed_at)
            # and before any later tick of the rule (they waited for it)
            later = [
                t
                for t in store.rule_ticks(running.rule, limit=100)
                if t.tick_s > running.tick_s and t.state == "done"
            ]
            assert all(t.updated_s >= again.updated_s for t in later), (again, later)
            # the rule goes on ticking on worker 1
            resumed = cluster.wait(
                f"rule {running.rule} on the other worker",
                lambda: [
                    t
                    for t in _live_ticks_done(store, killed_at)[running.rule]
                    if not (t.holder or "").startswith(victim_holder)
                ],
                RESUME_S + 30,
            )
            assert min(t.updated_s for t in resumed) - killed_at <= RESUME_S
            # and so do all the rules, from then on
            cluster.wait(
                "every rule ticking on worker 1",
                lambda: all(_live_ticks_done(store, killed_at + RESUME_S).values()),
                RESUME_S + 30,
            )
            cluster.wait("every annotation delivered", lambda: _delivered(store), 60)
            assert _annotated_once(store, grafana) >= 1
            # no tick of the dead worker is left running
            stuck = [
                t
                for t in store.rule_ticks(limit=10_000)
                if t.state == "running" and (t.holder or "").startswith(victim_holder)
            ]
            assert not stuck, stuck
        finally:
            codes = cluster.stop()
        assert codes[1] == 0, cluster.log_tails()
    store.close()


def test_redis_then_postgresql_restarted_mid_run(
    postgres: PostgresServer, postgres_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    store = Store(postgres_url)
    store.migrate()
    windows: list[tuple[float, float]] = []
    with FakeGrafana(token=TOKEN) as grafana:
        cluster = _cluster(tmp_path, postgres_url, own_redis.url(0), grafana)
        try:
            for _ in range(2):
                cluster.start("--since", "5h")
            cluster.wait("the replay's annotations", lambda: _delivered(store))
            begin = time.time()
            cluster.wait("live ticks", lambda: all(_live_ticks_done(store, begin).values()), 60)
            for restart in (lambda: _outage(own_redis), postgres.restart):
                down = time.time()
                restart()
                up = time.time()
                windows.append((down, up))
                cluster.wait(
                    "ticks after the restart",
                    lambda up=up: all(_live_ticks_done(store, up).values()),
                    RECOVERY_S + 30,
                )
            time.sleep(RECOVERY_S)
            end = time.time()
            cluster.wait("every annotation delivered", lambda: _delivered(store), 60)
            assert _annotated_once(store, grafana) >= 1
        finally:
            codes = cluster.stop()
        assert codes == [0, 0], cluster.log_tails()
    # every tick of every rule between the live start and the end ran, but for those
    # due while Redis or PostgreSQL was down (or in the RECOVERY_S after)
    ticks = store.rule_ticks(limit=10_000)
    states = {(t.rule, t.tick_s): t.state for t in ticks}
    store.close()
    # ... and those due while Redis was down (after the messages already on it were
    # lost with it) were sent once it was back: each ran, or was skipped for a later
    # tick that ran (never sent: overtaken; or both ran at once); none is left queued
    redis_down, redis_up = windows[0]
    for name, _ in DEMO_RULES:
        due = [t for t in ticks if t.rule == name and redis_down + 2.0 <= t.tick_s <= redis_up]
        assert len(due) >= OUTAGE_S // EVERY_S - 1, (name, due)
        assert all(t.state in ("done", "skipped") for t in due), due
    first = math.ceil(begin / EVERY_S) * EVERY_S
    lost = []
    for name, _ in DEMO_RULES:
        tick = first
        while tick < end - EVERY_S - 5.0:
            in_window = any(down - EVERY_S <= tick <= up + RECOVERY_S for down, up in windows)
            if not in_window and states.get((name, tick)) != "done":
                lost.append((name, tick, states.get((name, tick))))
            tick += EVERY_S
    assert not lost, (lost, windows, cluster.log_tails())


def _outage(server: RedisServer) -> None:
    server.stop(remove=False)
    time.sleep(OUTAGE_S)
    server.start()


def _holds_rule(store: Store, tick: Any) -> bool:
    """Whether the task running ``tick`` holds its rule's lease (is inside its cycle)."""
    with store.engine.connect() as conn:
        holder = conn.execute(
            sa.select(rule_leases.c.holder).where(rule_leases.c.rule == tick.rule)
        ).scalar()
    return bool(holder == tick.holder)


def _holder_of(cluster: Cluster, n: int) -> str:
    """The rule-lease holder prefix of worker ``n``'s pool process (host:pid:)."""
    parent = cluster.procs[n].pid
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:  # the field after the state: the parent's pid
            children.append(int(stat.parent.name))
    assert len(children) == 1, f"one prefork pool process under {parent}: {children}"
    return f"{socket.gethostname()}:{children[0]}:"
