"""Correctness of scale-out: the same 12 h replay (``worker --engine celery --since 12h``)
gives the same incidents, with the same ids, ends and notes, with one worker process
and with four (two commands of two processes, as on two machines); each incident is
annotated exactly once on the (fake) Grafana. Real redis-server and PostgreSQL, the
demo estate's rules (its faults come every 4 h: a 12 h replay meets about three)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from plugin_backend.store import Store
from testkit.fakegrafana import FakeGrafana
from testkit.pgserver import PostgresServer
from tests.needs import require_installed
from tests.scale.cluster import DEMO_RULES, Cluster, rules_yaml

pytestmark = [pytest.mark.processes, pytest.mark.slow]

EVERY_S = 86_400.0  # one tick a day: the replay is each rule's only tick in the test
TOKEN = "glsa_scale_test"


def _replay(
    workdir: Path, store_url: str, redis_url: str, *, commands: int, concurrency: int
) -> tuple[float, dict[str, tuple[Any, ...]], list[dict[str, Any]]]:
    workdir.mkdir()
    rules = workdir / "rules.yaml"
    rules.write_text(rules_yaml("24h"), encoding="utf-8")
    store = Store(store_url)
    store.migrate()
    with FakeGrafana(token=TOKEN) as grafana:
        cluster = Cluster(
            {
                "PLUGIN_BACKEND_BROKER_URL": redis_url,
                "PLUGIN_BACKEND_STORE_URL": store_url,
                "PLUGIN_BACKEND_RULES": str(rules),
                "PLUGIN_BACKEND_GRAFANA_URL": grafana.url,
                "PLUGIN_BACKEND_GRAFANA_TOKEN": TOKEN,
                "PLUGIN_BACKEND_LLM_PROVIDER": "none",
                "PLUGIN_BACKEND_WARM_DETECTORS": "none",
            },
            workdir,
        )
        try:
            for _ in range(commands):
                cluster.start("--since", "12h", concurrency=concurrency)

            def replayed() -> bool:
                ticks = store.rule_ticks()
                done = [t for t in ticks if t.state == "done" and not t.rule.startswith(":")]
                return len(done) == len(DEMO_RULES)

            cluster.wait("every rule's replay", replayed)
            cluster.wait(
                "every annotation delivered",
                lambda: (
                    store.outbox_counts()["pending"] == 0 and store.outbox_counts()["delivered"]
                ),
            )
        finally:
            codes = cluster.stop()
        assert codes == [0] * commands, cluster.log_tails()
        (tick,) = {t.tick_s for t in store.rule_ticks() if not t.rule.startswith(":")}
        incidents = {
            i.id: (i.rule, i.series, i.start_s, i.end_s, i.status, i.note, i.cause)
            for i in store.list_incidents(limit=1000)
        }
        annotations = grafana.annotations()
    store.close()
    return tick, incidents, annotations


def test_a_replay_finds_the_same_incidents_with_one_worker_and_with_four(
    postgres: PostgresServer, redis_url: str, tmp_path: Path
) -> None:
    try:
        import celery  # noqa: F401
    except ImportError:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    runs = {}
    for attempt in range(2):  # the day's tick may turn between the two runs: once more
        for workers, (commands, concurrency) in {1: (1, 1), 4: (2, 2)}.items():
            name = f"replay{attempt}w{workers}"
            url = postgres.create_database(name)
            runs[workers] = _replay(
                tmp_path / name, url, redis_url, commands=commands, concurrency=concurrency
            )
            postgres.drop_database(name)
            _flush(redis_url)
        if runs[1][0] == runs[4][0] == math.floor(time.time() / EVERY_S) * EVERY_S:
            break
    (tick1, one, annotated1), (tick4, four, annotated4) = runs[1], runs[4]
    assert tick1 == tick4
    assert len(one) >= 2, "a 12 h replay of the demo estate meets its faults"
    assert four == one
    # each incident with a panel was annotated once, on both
    for annotated, incidents in ((annotated1, one), (annotated4, four)):
        tags = sorted(t for a in annotated for t in a["tags"] if t.startswith("incident:"))
        assert len(tags) == len(set(tags)) == len(incidents)


def _flush(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
