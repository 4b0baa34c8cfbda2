"""Rule leases on SQLite and a real PostgreSQL server: one worker at a time runs a
rule, a crashed worker's lease expires, and a worker whose lease was taken over
writes nothing."""

from __future__ import annotations

import dataclasses

import pytest

from plugin_backend.incidents import Incident, annotation_for, incident_id
from plugin_backend.store import LeaseLost, Store, incident_lease

T = 1_780_000_000.0


def _incident() -> Incident:
    key = f"rule:r:up:{T:.0f}"
    return Incident(
        id=incident_id(key),
        key=key,
        origin="rule",
        title="r",
        query="up",
        series="up",
        start_s=T,
        end_s=T + 60,
        rule="r",
        dashboard_uid="d",
        panel_id=1,
    )


def test_one_holder_at_a_time_until_release_or_expiry(store: Store) -> None:
    assert store.acquire_rule("r", "a", T, lease_s=60)
    assert not store.acquire_rule("r", "b", T + 1, lease_s=60)
    assert store.acquire_rule("other", "b", T + 1, lease_s=60)  # per rule
    assert store.acquire_rule("r", "a", T + 2, lease_s=60)  # the holder renews
    store.release_rule("r", "a")
    assert store.acquire_rule("r", "b", T + 3, lease_s=60)
    # b crashes without releasing: a gets the rule once b's lease ran out
    assert not store.acquire_rule("r", "a", T + 62, lease_s=60)
    assert store.acquire_rule("r", "a", T + 64, lease_s=60)
    store.release_rule("r", "b")  # b's late release does not end a's lease
    assert not store.acquire_rule("r", "b", T + 65, lease_s=60)


def test_a_worker_whose_lease_was_taken_over_writes_nothing(store: Store) -> None:
    incident = _incident()
    assert store.acquire_rule("r", "slow", T, lease_s=60)
    assert store.acquire_rule("r", "fast", T + 61, lease_s=60)  # slow overran its lease
    store.save_incident(incident, annotation_for(incident, link_base=None), T + 62, holder="fast")
    late = dataclasses.replace(incident, end_s=T + 120, status="closed")
    with pytest.raises(LeaseLost, match="another worker took its lease over"):
        store.save_incident(late, annotation_for(late, link_base=None), T + 63, holder="slow")
    (kept,) = store.list_incidents()
    assert (kept.status, kept.end_s, kept.updated_s) == ("open", T + 60, T + 62)
    assert store.outbox_rows()[0].version == 1


def test_an_alerts_incident_is_written_under_its_alerts_lease(store: Store) -> None:
    alert = dataclasses.replace(_incident(), origin="grafana", rule="r", key="grafana:fp:1")
    lease = incident_lease(alert)
    assert lease == f"alert:{alert.id}"  # not its rule's, even with a rule label
    assert store.acquire_rule("r", "rule-worker", T, lease_s=60)
    with pytest.raises(LeaseLost):
        store.save_incident(alert, None, T, holder="rule-worker")
    assert store.acquire_rule(lease, "alert-worker", T, lease_s=60)
    store.save_incident(alert, None, T, holder="alert-worker")
    store.release_rule(lease, "alert-worker")
    # a released alert lease is purged with the rest; a rule's lease is kept
    assert store.purge(older_than_s=T)["alert_leases"] == 1
    assert not store.acquire_rule("r", "other", T + 1, lease_s=60)
