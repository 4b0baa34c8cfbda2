"""The store on a real SQLite file: migrations, incidents, outbox, alert queue, retention."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from plugin_backend.errors import ConfigError
from plugin_backend.incidents import Incident, annotation_for, incident_id
from plugin_backend.store import Store
from plugin_backend.store.schema import metadata


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


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'sub' / 'store.db'}")
    s.migrate()
    return s


def test_migrations_create_exactly_the_declared_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    store.check_schema()


def test_an_unmigrated_store_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plugin-backend db upgrade"):
        Store(f"sqlite:///{tmp_path / 'new.db'}").check_schema()


def test_migrate_is_idempotent(store: Store) -> None:
    assert store.migrate() == store.migrate() == "0002"


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


def test_sqlite_runs_in_wal_mode(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"


def test_repr_hides_passwords() -> None:
    store = Store("postgresql://user:s3cret@db.example:5432/pb")
    assert "s3cret" not in repr(store)


def test_upgrading_a_0001_store_keeps_its_incidents(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from plugin_backend.store.store import MIGRATIONS

    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            sa.text(
                "INSERT INTO incidents (id, key, origin, title, query, series, labels, status,"
                " start_s, end_s, note, created_s, updated_s) VALUES ('abc', 'k', 'rule', 't',"
                " 'up', 'up', '{}', 'open', 1, 2, 'n', 0, 0)"
            )
        )
    assert store.schema_revision() == "0001"
    assert store.migrate() == "0002"
    incident = store.get_incident("abc")
    assert incident is not None
    assert (incident.note, incident.normal_low) == ("n", None)
