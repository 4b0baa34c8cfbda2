"""Alembic migrations on a real SQLite file and a real PostgreSQL server: from empty to
the declared schema, and from an older revision holding data without losing any."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from plugin_backend.errors import ConfigError
from plugin_backend.incidents import annotation_for
from plugin_backend.store import Store
from plugin_backend.store.schema import metadata
from plugin_backend.store.store import HEAD_REVISION, MIGRATIONS

REAL_NOW_S = 1_780_000_000.0


@pytest.fixture
def empty(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    yield store
    store.close()


def _alembic(store: Store, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def _schema_diff(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_migrations_from_empty_create_exactly_the_declared_schema(empty: Store) -> None:
    with pytest.raises(ConfigError, match="plugin-backend db upgrade"):
        empty.check_schema()
    assert empty.migrate() == HEAD_REVISION
    assert _schema_diff(empty) == []
    empty.check_schema()
    assert empty.migrate() == HEAD_REVISION  # idempotent


def test_downgrade_to_nothing_and_up_again(empty: Store) -> None:
    empty.migrate()
    _alembic(empty, "downgrade", "base")
    assert sa.inspect(empty.engine).get_table_names() == ["alembic_version"]
    assert empty.migrate() == HEAD_REVISION
    assert _schema_diff(empty) == []


def test_upgrading_a_0001_store_keeps_its_incidents_and_outbox(empty: Store) -> None:
    _alembic(empty, "upgrade", "0001")
    with empty.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO incidents (id, key, origin, title, query, series, labels, status,"
                " start_s, end_s, note, created_s, updated_s) VALUES ('abc', 'k', 'rule', 't',"
                " 'up', 'up', '{}', 'open', 1, 2, 'n', 0, 0)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO outbox (incident_id, time_ms, time_end_ms, text, tags, version,"
                " delivered_version, grafana_id, in_doubt, state, attempts, next_attempt_s,"
                " updated_s) VALUES ('abc', 1000, 2000, 'n', '[]', 1, 1, 77, :f, 'delivered',"
                " 0, 0, 0)"
            ),
            {"f": False},
        )
    assert empty.schema_revision() == "0001"
    assert empty.migrate() == HEAD_REVISION
    assert _schema_diff(empty) == []
    incident = empty.get_incident("abc")
    assert incident is not None
    assert (incident.note, incident.normal_low) == ("n", None)
    (row,) = empty.outbox_rows()
    assert (row.incident_id, row.time_ms, row.time_end_ms, row.grafana_id, row.state) == (
        "abc",
        1000,
        2000,
        77,
        "delivered",
    )
    # what 0001 could not hold on PostgreSQL now fits
    grown = dataclasses.replace(incident, end_s=REAL_NOW_S)
    empty.save_incident(grown, annotation_for(grown, link_base=None), now_s=REAL_NOW_S)
    (row,) = empty.outbox_rows()
    assert (row.time_end_ms, row.version, row.state) == (1_780_000_000_000, 2, "pending")


def test_an_old_store_is_refused_until_upgraded(empty: Store, tmp_path: Path) -> None:
    _alembic(empty, "upgrade", "0002")
    with pytest.raises(ConfigError, match=f"revision 0002, this version needs {HEAD_REVISION}"):
        empty.check_schema()
    empty.migrate()
    empty.check_schema()


def test_repr_hides_passwords() -> None:
    store = Store("postgresql://user:s3cret@db.example:5432/pb")
    assert "s3cret" not in repr(store)


def test_workers_starting_together_all_migrate_an_empty_store(store_url: str) -> None:
    # e.g. a Celery worker's scheduler and its first task, in two threads of one process
    stores = [Store(store_url) for _ in range(3)]
    start = threading.Barrier(len(stores))
    revisions: list[str] = []
    errors: list[Exception] = []

    def migrate(store: Store) -> None:
        start.wait()
        try:
            revisions.append(store.migrate())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert revisions == [HEAD_REVISION] * len(stores)
    assert _schema_diff(stores[0]) == []
    for store in stores:
        store.close()
