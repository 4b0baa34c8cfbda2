"""The store through a PostgreSQL restart: the rows are all there afterwards, and the
same Store (its pooled connections died with the server) carries on without a restart
of its own."""

from __future__ import annotations

from plugin_backend.incidents import Incident, annotation_for, incident_id
from plugin_backend.store import Store
from testkit.pgserver import PostgresServer

T = 1_780_000_000.0


def _incident(n: int) -> Incident:
    key = f"rule:r:up:{n}"
    return Incident(
        id=incident_id(key),
        key=key,
        origin="rule",
        title="r",
        query="up",
        series="up",
        start_s=T + n,
        end_s=T + n,
        rule="r",
        dashboard_uid="d",
        panel_id=1,
    )


def test_the_outbox_survives_a_restart_and_the_store_reconnects(
    postgres: PostgresServer, postgres_url: str
) -> None:
    store = Store(postgres_url)
    store.migrate()
    for n in range(3):
        incident = _incident(n)
        store.save_incident(incident, annotation_for(incident, link_base=None), now_s=T)
    (claimed, *_) = store.claim_due(T, lease_s=60.0)
    store.mark_delivered(claimed, 41, now_s=T)
    postgres.restart()
    assert store.outbox_counts() == {"pending": 2, "delivered": 1, "failed": 0}
    incident = _incident(3)
    store.save_incident(incident, annotation_for(incident, link_base=None), now_s=T + 1)
    assert len(store.list_incidents()) == 4
    store.close()
