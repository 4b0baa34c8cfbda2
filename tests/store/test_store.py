"""The store on a real SQLite file and on a real PostgreSQL server: incidents, outbox,
alert queue, retention. Migrations: test_migrations.py."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import sqlalchemy as sa

from plugin_backend.incidents import Incident, annotation_for, incident_id
from plugin_backend.store import Store

NOW_S = 1_780_000_000.0  # a real epoch time: its milliseconds need 41 bits


def _incident(key: str = "rule:r:up:100", **changes: object) -> Incident:
    base = Incident(
        id=incident_id(key),
        key=key,
        origin="rule",
        title="r: up outside its expected band",
        query="up",
        series='up{job="x"}',
        start_s=100.0,
        end_s=160.0,
        rule="r",
        labels={"job": "x", "service": "checkout"},
        dashboard_uid="dash",
        panel_id=2,
        note="Most likely cause: db.",
        report={"causes": []},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_incident_round_trip_and_filters(store: Store) -> None:
    first = _incident()
    second = _incident(
        "rule:other:up:500",
        rule="other",
        start_s=500.0,
        end_s=600.0,
        status="closed",
        labels={"service": "frontend"},
    )
    store.save_incident(first, None, now_s=1000.0)
    store.save_incident(second, None, now_s=1001.0)
    got = store.get_incident(first.id)
    assert got is not None
    assert got.labels == {"job": "x", "service": "checkout"}
    assert got.report == {"causes": []}
    assert got.created_s == 1000.0
    assert [i.id for i in store.list_incidents()] == [second.id, first.id]  # newest first
    assert [i.id for i in store.list_incidents(rule="r")] == [first.id]
    assert [i.id for i in store.list_incidents(status="closed")] == [second.id]
    assert [i.id for i in store.list_incidents(service="checkout")] == [first.id]
    assert [i.id for i in store.list_incidents(since_s=300.0)] == [second.id]
    assert [i.id for i in store.list_incidents(until_s=200.0)] == [first.id]
    assert store.get_incident("nope") is None
    # an update keeps the creation time
    store.save_incident(dataclasses.replace(first, end_s=900.0), None, now_s=2000.0)
    again = store.get_incident(first.id)
    assert again is not None
    assert (again.end_s, again.created_s, again.updated_s) == (900.0, 1000.0, 2000.0)


def test_annotation_is_queued_with_the_incident_and_versioned_on_change(store: Store) -> None:
    incident = _incident()
    store.save_incident(incident, annotation_for(incident, link_base=None), now_s=10.0)
    (row,) = store.outbox_rows()
    assert (row.state, row.version, row.delivered_version, row.grafana_id) == (
        "pending",
        1,
        0,
        None,
    )
    assert row.tag == f"incident:{incident.id}"
    # same content again: nothing to deliver
    store.save_incident(incident, annotation_for(incident, link_base=None), now_s=11.0)
    assert store.outbox_rows()[0].version == 1
    closed = dataclasses.replace(incident, status="closed", end_s=400.0)
    store.save_incident(closed, annotation_for(closed, link_base=None), now_s=12.0)
    (row,) = store.outbox_rows()
    assert row.version == 2
    assert row.time_end_ms == 400_000


def test_annotations_at_real_timestamps_are_kept_to_the_millisecond(store: Store) -> None:
    incident = _incident(start_s=NOW_S, end_s=NOW_S + 90.5)
    store.save_incident(incident, annotation_for(incident, link_base=None), now_s=NOW_S)
    (row,) = store.outbox_rows()
    assert (row.time_ms, row.time_end_ms) == (1_780_000_000_000, 1_780_000_090_500)
    (claimed,) = store.claim_due(NOW_S, lease_s=30.0)
    store.mark_delivered(claimed, 2**40, now_s=NOW_S)  # Grafana's annotation ids are 64-bit
    assert store.outbox_rows()[0].grafana_id == 2**40


def test_an_incident_on_a_series_with_many_labels_is_kept(store: Store) -> None:
    labels = {f"label_{n}": "v" * 40 for n in range(20)}
    series = "up{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    key = f"rule:r:{series}:{NOW_S:.0f}"
    assert len(key) > 1000
    incident = _incident(key, series=series, labels=labels, start_s=NOW_S, end_s=NOW_S)
    store.save_incident(incident, annotation_for(incident, link_base=None), now_s=NOW_S)
    got = store.get_incident(incident.id)
    assert got is not None
    assert (got.key, got.series) == (key, series)


def test_claim_leases_rows_so_two_deliverers_never_share_one(store: Store) -> None:
    for n in range(5):
        inc = _incident(f"k{n}")
        store.save_incident(inc, annotation_for(inc, link_base=None), now_s=0.0)
    claims: list[list[int]] = []

    def claim() -> None:
        claims.append([r.id for r in store.claim_due(1.0, lease_s=60.0)])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for c in claims for i in c]
    assert sorted(every) == sorted(set(every))
    assert len(every) == 5
    assert store.claim_due(2.0, lease_s=60.0) == []
    assert len(store.claim_due(100.0, lease_s=60.0)) == 5  # leases expire


def test_delivery_bookkeeping(store: Store) -> None:
    inc = _incident()
    store.save_incident(inc, annotation_for(inc, link_base=None), now_s=0.0)
    (row,) = store.claim_due(0.0, lease_s=30.0)
    store.mark_in_doubt(row.id, 0.5)
    store.mark_retry(row, "timeout", next_attempt_s=10.0, now_s=1.0, in_doubt=True)
    assert store.claim_due(5.0, lease_s=30.0) == []
    (row,) = store.claim_due(10.0, lease_s=30.0)
    assert (row.attempts, row.in_doubt, row.last_error) == (1, True, "timeout")
    store.mark_delivered(row, 42, now_s=11.0)
    (row,) = store.outbox_rows()
    assert (row.state, row.grafana_id, row.delivered_version, row.in_doubt) == (
        "delivered",
        42,
        1,
        False,
    )
    assert store.outbox_counts() == {"pending": 0, "delivered": 1, "failed": 0}


def test_a_change_during_delivery_keeps_the_row_pending(store: Store) -> None:
    inc = _incident()
    store.save_incident(inc, annotation_for(inc, link_base=None), now_s=0.0)
    (claimed,) = store.claim_due(0.0, lease_s=30.0)
    closed = dataclasses.replace(inc, status="closed")
    store.save_incident(closed, annotation_for(closed, link_base=None), now_s=1.0)
    store.mark_delivered(claimed, 7, now_s=2.0)
    (row,) = store.outbox_rows()
    assert (row.state, row.version, row.delivered_version) == ("pending", 2, 1)


def test_failed_rows_are_kept_and_can_be_retried(store: Store) -> None:
    inc = _incident()
    store.save_incident(inc, annotation_for(inc, link_base=None), now_s=0.0)
    (row,) = store.claim_due(0.0, lease_s=30.0)
    store.mark_failed(row, "HTTP 400 bad dashboard", now_s=1.0)
    assert store.outbox_counts()["failed"] == 1
    assert store.claim_due(100.0, lease_s=30.0) == []
    assert store.retry_failed(now_s=101.0) == 1
    assert len(store.claim_due(101.0, lease_s=30.0)) == 1


def test_alert_queue_is_idempotent_per_key(store: Store) -> None:
    assert store.enqueue_alert("grafana:fp:t:firing", "grafana", {"a": 1}, now_s=1.0)
    assert not store.enqueue_alert("grafana:fp:t:firing", "grafana", {"a": 2}, now_s=2.0)
    (job,) = store.pending_alerts()
    assert job.payload == {"a": 1}
    store.finish_alert(job, now_s=3.0, error="prometheus down")
    (job,) = store.pending_alerts()
    assert job.attempts == 1
    store.finish_alert(job, now_s=4.0)
    assert store.pending_alerts() == []
    assert store.alert_counts() == {"pending": 0, "done": 1, "failed": 0}


def test_retention_never_drops_an_undelivered_annotation(store: Store) -> None:
    delivered = _incident("a", status="closed", end_s=100.0)
    pending = _incident("b", status="closed", end_s=100.0)
    open_one = _incident("c", end_s=100.0)
    for inc in (delivered, pending, open_one):
        store.save_incident(inc, annotation_for(inc, link_base=None), now_s=0.0)
    for row in store.claim_due(0.0, lease_s=30.0):
        if row.incident_id == delivered.id:
            store.mark_delivered(row, 1, now_s=0.0)
    assert store.purge(older_than_s=1000.0)["incidents"] == 1
    assert {i.id for i in store.list_incidents()} == {pending.id, open_one.id}
    assert {r.incident_id for r in store.outbox_rows()} == {pending.id, open_one.id}
    # With no Grafana configured the pending one can never be delivered: retention
    # drops it with its incident; the open one stays.
    assert store.purge(older_than_s=1000.0, undeliverable=True)["incidents"] == 1
    assert {i.id for i in store.list_incidents()} == {open_one.id}
    assert {r.incident_id for r in store.outbox_rows()} == {open_one.id}


def test_sqlite_runs_in_wal_mode_in_a_folder_it_creates(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'sub' / 'store.db'}")
    store.migrate()
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
