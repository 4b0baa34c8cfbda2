"""The Celery engine's schedule in the store, on SQLite and a real PostgreSQL server:
a (rule, tick) pair is queued once however many schedulers claim it, a tick
delivered twice runs once, and a tick whose worker died is queued again once, with
the rule kept for it."""

from __future__ import annotations

import threading

from plugin_backend.store import RuleTick, Store

T = 1_780_000_020.0
LEASE = 12.0
HOLD = 20.0


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
    assert store.start_tick("r", T, "w1", now_s=T + 1, lease_s=LEASE) == "started"
    assert store.start_tick("r", T, "w2", now_s=T + 2, lease_s=LEASE) == "duplicate"
    store.finish_tick("r", T, "done", now_s=T + 3)
    assert store.start_tick("r", T, "w2", now_s=T + 4, lease_s=LEASE) == "duplicate"
    (tick,) = store.rule_ticks("r")
    assert (tick.state, tick.holder, tick.error) == ("done", "w1", None)


def test_a_tick_enqueued_without_a_scheduler_starts_once(store: Store) -> None:
    assert store.start_tick("r", T, "w1", now_s=T, lease_s=LEASE) == "started"
    assert store.start_tick("r", T, "w2", now_s=T, lease_s=LEASE) == "duplicate"


def test_a_late_tick_after_a_later_one_ran_is_skipped(store: Store) -> None:
    for tick in (T, T + 30):
        store.claim_tick("r", tick, now_s=T)
    assert store.start_tick("r", T + 30, "w1", now_s=T + 31, lease_s=LEASE) == "started"
    store.finish_tick("r", T + 30, "done", now_s=T + 32)
    assert store.start_tick("r", T, "w2", now_s=T + 33, lease_s=LEASE) == "superseded"
    states = {t.tick_s: (t.state, t.error) for t in store.rule_ticks("r")}
    assert states == {T + 30: ("done", None), T: ("skipped", "superseded")}


def test_a_replay_tick_still_runs_after_a_later_live_tick_ran(store: Store) -> None:
    """``--since``: the replay of a rule's history waits in the queue while the rule's
    next live tick runs; that tick's cycle does not cover the replayed history."""
    store.claim_tick("r", T, now_s=T, lookback_s=12 * 3600.0)
    store.claim_tick("r", T + 30, now_s=T + 30)
    assert store.start_tick("r", T + 30, "w1", now_s=T + 31, lease_s=LEASE) == "started"
    store.finish_tick("r", T + 30, "done", now_s=T + 32)
    assert store.start_tick("r", T, "w2", now_s=T + 33, lease_s=LEASE) == "started"
    store.finish_tick("r", T, "done", now_s=T + 34)
    states = {t.tick_s: (t.state, t.lookback_s) for t in store.rule_ticks("r")}
    assert states == {T + 30: ("done", None), T: ("done", 12 * 3600.0)}


def test_a_replay_tick_put_back_in_the_queue_is_sent_again_and_starts(store: Store) -> None:
    """A replay tick that found its rule held by a live tick goes back to the queue,
    unsent, so that a scheduler sends it again at once."""
    store.claim_tick("r", T, now_s=T, lookback_s=3600.0, send_lease_s=5.0)
    store.mark_tick_sent("r", T)
    assert store.start_tick("r", T, "w1", now_s=T + 1, lease_s=LEASE) == "started"
    assert not store.requeue_tick("r", T, "w2", now_s=T + 2)  # not its holder
    assert store.requeue_tick("r", T, "w1", now_s=T + 2)
    (again,) = store.unsent_ticks(T + 3, lease_s=5.0)
    assert (again.tick_s, again.lookback_s) == (T, 3600.0)
    assert store.start_tick("r", T, "w2", now_s=T + 4, lease_s=LEASE) == "started"


def test_a_failed_tick_keeps_its_error_and_old_ticks_are_purged(store: Store) -> None:
    store.start_tick("r", T, "w1", now_s=T, lease_s=LEASE)
    store.finish_tick("r", T, "failed", now_s=T + 1, error="upstream: Prometheus down")
    store.start_tick("r", T + 3600, "w1", now_s=T + 3600, lease_s=LEASE)
    (_, old) = store.rule_ticks("r")
    assert (old.state, old.error) == ("failed", "upstream: Prometheus down")
    assert store.purge_ticks(T + 60) == 1
    assert [t.tick_s for t in store.rule_ticks()] == [T + 3600]


def test_a_tick_whose_worker_died_is_queued_again_once_and_keeps_the_rule(
    store_url: str,
) -> None:
    stores = [Store(store_url) for _ in range(3)]
    store = stores[0]
    store.migrate()
    store.claim_tick("r", T, now_s=T, lookback_s=7200.0)
    assert store.start_tick("r", T, "dead:1", now_s=T + 1, lease_s=LEASE) == "started"
    assert store.acquire_rule("r", "dead:1", T + 1, lease_s=HOLD)  # as run_rule does
    assert store.renew_tick("r", T, "dead:1", now_s=T + 4, lease_s=LEASE)
    # the worker dies: no more renewals; nothing is reclaimed while the lease runs
    assert store.reclaim_ticks(T + 4 + LEASE - 1, hold_s=HOLD, max_attempts=3) == []
    later = T + 4 + LEASE + 1
    won: list[list[RuleTick]] = []
    start = threading.Barrier(len(stores))

    def scheduler(s: Store) -> None:
        start.wait()
        won.append(s.reclaim_ticks(later, hold_s=HOLD, max_attempts=3))

    threads = [threading.Thread(target=scheduler, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    reclaimed = [tick for found in won for tick in found]
    assert [(t.rule, t.tick_s, t.state, t.lookback_s) for t in reclaimed] == [
        ("r", T, "queued", 7200.0)
    ]
    # the rule stays kept for that tick: the rule's next tick cannot take it ...
    assert not store.acquire_rule("r", "next-tick", later + 1, lease_s=HOLD)
    # ... the resent tick starts, takes the rule over, and finishes once
    assert store.start_tick("r", T, "alive:2", now_s=later + 2, lease_s=LEASE) == "started"
    assert store.acquire_rule("r", "alive:2", later + 2, lease_s=HOLD)
    assert not store.renew_tick("r", T, "dead:1", now_s=later + 3, lease_s=LEASE)
    assert not store.finish_tick("r", T, "done", now_s=later + 3, holder="dead:1")
    assert store.finish_tick("r", T, "done", now_s=later + 4, holder="alive:2")
    (tick,) = store.rule_ticks("r")
    assert (tick.state, tick.holder, tick.attempts) == ("done", "alive:2", 2)
    assert store.reclaim_ticks(later + 100, hold_s=HOLD, max_attempts=3) == []
    for s in stores:
        s.close()


def test_a_tick_that_kills_every_worker_is_given_up_after_its_attempts(store: Store) -> None:
    now = T
    for n in range(3):
        assert store.start_tick("r", T, f"w{n}", now_s=now, lease_s=LEASE) == "started"
        now += LEASE + 1
        reclaimed = store.reclaim_ticks(now, hold_s=HOLD, max_attempts=3)
        assert len(reclaimed) == (1 if n < 2 else 0)
    (tick,) = store.rule_ticks("r")
    assert tick.state == "failed"
    assert tick.error == "worker lost: w2 (3 attempts)"


def test_a_later_tick_that_ran_supersedes_a_reclaimed_one(store: Store) -> None:
    store.start_tick("r", T, "dead", now_s=T, lease_s=LEASE)
    store.acquire_rule("r", "dead", T, lease_s=HOLD)
    # the dead worker's lease of the rule ran out first, and the next tick ran
    store.start_tick("r", T + 30, "w2", now_s=T + 31, lease_s=LEASE)
    assert store.acquire_rule("r", "w2", T + 31, lease_s=HOLD)
    store.release_rule("r", "w2")
    store.finish_tick("r", T + 30, "done", now_s=T + 32, holder="w2")
    assert len(store.reclaim_ticks(T + 40, hold_s=HOLD, max_attempts=3)) == 1
    assert store.start_tick("r", T, "w3", now_s=T + 41, lease_s=LEASE) == "superseded"
    assert store.acquire_rule("r", "w4", T + 42, lease_s=HOLD)


SEND = 5.0  # the scheduler's SEND_LEASE_S


def test_a_claim_never_reported_sent_is_handed_out_again_once(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(3)]
    store = stores[0]
    store.migrate()
    assert store.claim_tick("r", T, now_s=T, send_lease_s=SEND)  # the broker refused it
    assert store.unsent_ticks(T + SEND - 1, lease_s=SEND) == []  # its sender may still send
    won: list[list[RuleTick]] = []
    start = threading.Barrier(len(stores))

    def scheduler(s: Store) -> None:
        start.wait()
        won.append(s.unsent_ticks(T + SEND + 1, lease_s=SEND))

    threads = [threading.Thread(target=scheduler, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [(t.rule, t.tick_s, t.state) for found in won for t in found] == [("r", T, "queued")]
    # still unreported: handed out again after its new lease, until reported sent
    assert store.unsent_ticks(T + SEND + 2, lease_s=SEND) == []
    assert len(store.unsent_ticks(T + 2 * SEND + 2, lease_s=SEND)) == 1
    store.mark_tick_sent("r", T)
    assert store.unsent_ticks(T + 100, lease_s=SEND) == []
    assert store.start_tick("r", T, "w1", now_s=T + 101, lease_s=LEASE) == "started"
    for s in stores:
        s.close()


def test_a_tick_sent_at_once_is_never_handed_out_again(store: Store) -> None:
    assert store.claim_tick("r", T, now_s=T, send_lease_s=SEND)
    store.mark_tick_sent("r", T)
    assert store.unsent_ticks(T + 100, lease_s=SEND) == []
    # nor is a running tick, or one claimed without a send lease (the note sweep's)
    assert store.claim_tick("r", T + 30, now_s=T + 30, send_lease_s=SEND)
    assert store.start_tick("r", T + 30, "w1", now_s=T + 31, lease_s=LEASE) == "started"
    assert store.claim_tick(":note:x", T, now_s=T)
    assert store.unsent_ticks(T + 37, lease_s=SEND) == []


def test_an_unsent_tick_overtaken_by_a_later_one_is_skipped_an_unsent_replay_is_not(
    store: Store,
) -> None:
    store.claim_tick("r", T, now_s=T, send_lease_s=SEND)
    store.claim_tick("r", T + 30, now_s=T + 30, send_lease_s=SEND)
    store.claim_tick("replay", T, now_s=T, lookback_s=7200.0, send_lease_s=SEND)
    store.claim_tick("replay", T + 30, now_s=T + 30, send_lease_s=SEND)
    found = store.unsent_ticks(T + 40, lease_s=SEND)
    assert sorted((t.tick_s, t.rule, t.lookback_s) for t in found) == [
        (T, "replay", 7200.0),
        (T + 30, "r", None),
        (T + 30, "replay", None),
    ]
    states = {t.tick_s: (t.state, t.error) for t in store.rule_ticks("r")}
    assert states == {
        T + 30: ("queued", None),
        T: ("skipped", "superseded (never sent: broker unreachable)"),
    }


def test_a_reclaimed_tick_never_sent_is_handed_out_again(store: Store) -> None:
    store.start_tick("r", T, "dead", now_s=T, lease_s=LEASE)
    store.acquire_rule("r", "dead", T, lease_s=HOLD)
    (tick,) = store.reclaim_ticks(T + LEASE + 1, hold_s=HOLD, max_attempts=3, send_lease_s=SEND)
    assert tick.lease_until_s == T + LEASE + 1 + SEND  # the broker refused it
    (again,) = store.unsent_ticks(T + LEASE + 2 + SEND, lease_s=SEND)
    assert (again.rule, again.tick_s) == ("r", T)
    store.mark_tick_sent("r", T)
    assert store.start_tick("r", T, "w2", now_s=T + 40, lease_s=LEASE) == "started"
    assert store.acquire_rule("r", "w2", T + 40, lease_s=HOLD)  # the rule kept for it
