"""The Celery engine's schedule in the store, on SQLite and a real PostgreSQL server:
a (rule, tick) pair is queued once however many schedulers claim it, and a tick
delivered twice runs once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from plugin_backend.store import Store

T = 1_780_000_020.0


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


def test_a_tick_is_claimed_once(store: Store) -> None:
    assert store.claim_tick("r", T, now_s=T)
    assert not store.claim_tick("r", T, now_s=T + 1)
    assert store.claim_tick("r", T + 30, now_s=T + 30)  # the next tick is another pair
    assert store.claim_tick("other", T, now_s=T)  # so is another rule's
    assert [(t.rule, t.tick_s, t.state) for t in store.rule_ticks("r")] == [
        ("r", T + 30, "queued"),
        ("r", T, "queued"),
    ]


def test_many_schedulers_claiming_at_once_queue_each_tick_once(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(4)]
    for s in stores[:1]:
        s.migrate()
    won: list[tuple[int, float]] = []
    start = threading.Barrier(len(stores))

    def scheduler(n: int) -> None:
        start.wait()
        for k in range(10):
            if stores[n].claim_tick("r", T + 30 * k, now_s=T):
                won.append((n, T + 30 * k))

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(t for _, t in won) == [T + 30 * k for k in range(10)]
    for s in stores:
        s.close()


def test_a_tick_delivered_twice_starts_once(store: Store) -> None:
    store.claim_tick("r", T, now_s=T)
    assert store.start_tick("r", T, "w1", now_s=T + 1) == "started"
    assert store.start_tick("r", T, "w2", now_s=T + 2) == "duplicate"
    store.finish_tick("r", T, "done", now_s=T + 3)
    assert store.start_tick("r", T, "w2", now_s=T + 4) == "duplicate"
    (tick,) = store.rule_ticks("r")
    assert (tick.state, tick.holder, tick.error) == ("done", "w1", None)


def test_a_tick_enqueued_without_a_scheduler_starts_once(store: Store) -> None:
    assert store.start_tick("r", T, "w1", now_s=T) == "started"
    assert store.start_tick("r", T, "w2", now_s=T) == "duplicate"


def test_a_late_tick_after_a_later_one_ran_is_skipped(store: Store) -> None:
    for tick in (T, T + 30):
        store.claim_tick("r", tick, now_s=T)
    assert store.start_tick("r", T + 30, "w1", now_s=T + 31) == "started"
    store.finish_tick("r", T + 30, "done", now_s=T + 32)
    assert store.start_tick("r", T, "w2", now_s=T + 33) == "superseded"
    states = {t.tick_s: (t.state, t.error) for t in store.rule_ticks("r")}
    assert states == {T + 30: ("done", None), T: ("skipped", "superseded")}


def test_a_failed_tick_keeps_its_error_and_old_ticks_are_purged(store: Store) -> None:
    store.start_tick("r", T, "w1", now_s=T)
    store.finish_tick("r", T, "failed", now_s=T + 1, error="upstream: Prometheus down")
    store.start_tick("r", T + 3600, "w1", now_s=T + 3600)
    (_, old) = store.rule_ticks("r")
    assert (old.state, old.error) == ("failed", "upstream: Prometheus down")
    assert store.purge_ticks(T + 60) == 1
    assert [t.tick_s for t in store.rule_ticks()] == [T + 3600]
