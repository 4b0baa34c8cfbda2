"""Outbox and alert-queue claims with several workers at once: on a real PostgreSQL server (and on
SQLite) no row is ever claimed by two of them, and on PostgreSQL a claimer takes the
rows nobody else is claiming instead of waiting for them (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from plugin_backend.errors import StoreError
from plugin_backend.incidents import Incident, annotation_for, incident_id
from plugin_backend.store import Store

NOW_S = 1_780_000_000.0


def _queue(store: Store, n: int) -> None:
    for i in range(n):
        key = f"rule:r:up:{i}"
        incident = Incident(
            id=incident_id(key),
            key=key,
            origin="rule",
            title="r",
            query="up",
            series="up",
            start_s=NOW_S + i,
            end_s=NOW_S + i,
            rule="r",
            dashboard_uid="dash",
            panel_id=1,
        )
        store.save_incident(incident, annotation_for(incident, link_base=None), now_s=NOW_S)


@pytest.fixture
def workers(store_url: str) -> Iterator[list[Store]]:
    """Two workers' stores: separate engines (connection pools) on one database."""
    stores = [Store(store_url), Store(store_url)]
    stores[0].migrate()
    yield stores
    for store in stores:
        store.close()


def test_concurrent_claimers_never_claim_a_row_twice(workers: list[Store]) -> None:
    _queue(workers[0], 120)
    claimed: Counter[int] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer(store: Store) -> None:
        start.wait()
        idle = 0
        while idle < 3:
            try:
                rows = store.claim_due(NOW_S + 1, lease_s=3600.0, limit=4)
            except StoreError as exc:  # SQLite: a writer that lost the race; try again
                with lock:
                    errors.append(exc.message)
                continue
            idle = 0 if rows else idle + 1
            with lock:
                claimed.update(r.id for r in rows)

    threads = [threading.Thread(target=claimer, args=(workers[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert len(claimed) == 120
    assert set(claimed.values()) == {1}, "a row was claimed twice"
    if workers[0].backend == "postgresql":
        assert errors == []  # SKIP LOCKED: no claimer ever fails or waits on another


def test_a_claimer_skips_rows_another_is_claiming_instead_of_waiting(
    postgres_url: str,
) -> None:
    store = Store(postgres_url)
    store.migrate()
    _queue(store, 6)
    ids = [r.id for r in sorted(store.outbox_rows(), key=lambda r: r.id)]
    other = sa.create_engine(postgres_url)
    got: list[list[int]] = []
    try:
        with other.connect() as conn:  # another worker, in the middle of its claim
            conn.execute(
                sa.text("SELECT id FROM outbox WHERE id = ANY(:ids) FOR UPDATE"),
                {"ids": ids[:3]},
            )
            claimer = threading.Thread(
                target=lambda: got.append(
                    [r.id for r in store.claim_due(NOW_S + 1, lease_s=60.0, limit=10)]
                )
            )
            claimer.start()
            claimer.join(timeout=10)
            waited = claimer.is_alive()
            conn.rollback()  # releases the rows (and a waiting claimer)
            claimer.join(timeout=10)
        assert not waited, "the claimer waited for rows another worker had locked"
        assert got == [ids[3:]]
        # once released, they are claimable again
        assert [r.id for r in store.claim_due(NOW_S + 1, lease_s=60.0)] == ids[:3]
    finally:
        other.dispose()
        store.close()


def test_queued_alerts_are_claimed_by_one_worker_until_finished_or_expired(
    workers: list[Store],
) -> None:
    a, b = workers
    for n in range(30):
        a.enqueue_alert(f"alertmanager:fp{n}:1:firing", "alertmanager", {"n": n}, now_s=NOW_S)
    claimed: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(6)

    def claimer(store: Store) -> None:
        start.wait()
        while True:
            try:
                jobs = store.claim_alerts(NOW_S, lease_s=300.0, limit=3)
            except StoreError:  # SQLite: a writer that lost the race; try again
                continue
            if not jobs:
                return
            with lock:
                claimed.update(j.id for j in jobs)

    threads = [threading.Thread(target=claimer, args=(workers[n % 2],)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(claimed) == 30
    assert set(claimed.values()) == {1}, "an alert was claimed twice"
    # oldest first; a failed one is claimable again at once, a crashed worker's after its lease
    jobs = sorted(a.claim_alerts(NOW_S + 301, lease_s=300.0, limit=2), key=lambda j: j.id)
    assert [j.payload["n"] for j in jobs] == [0, 1]
    a.finish_alert(jobs[0], NOW_S + 302, error="prometheus down")
    a.finish_alert(jobs[1], NOW_S + 302)
    (again,) = b.claim_alerts(NOW_S + 303, lease_s=300.0, limit=1)
    assert (again.id, again.attempts) == (jobs[0].id, 1)
    (following,) = b.claim_alerts(NOW_S + 303, lease_s=300.0, limit=1, skip=[again.id])
    assert following.payload == {"n": 2}  # the done one is never claimed again
