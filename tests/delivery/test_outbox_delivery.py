"""Outbox -> fake Grafana (written to the annotations contract): delivered once,
updated in place, retried through failures, never duplicated; on an SQLite file and
on a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from plugin_backend.adapters.grafana import GrafanaClient
from plugin_backend.delivery import DeliveryPolicy, OutboxDeliverer
from plugin_backend.incidents import Incident, annotation_for, incident_id
from plugin_backend.store import Store
from testkit.fakegrafana import FakeGrafana

TOKEN = "glsa_test_token"


T0 = 1_780_000_000.0  # a real epoch time: its milliseconds need 41 bits


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def grafana():
    with FakeGrafana(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


def _incident(n: int = 0, **changes) -> Incident:
    key = f"rule:r:s:{n}"
    base = Incident(
        id=incident_id(key),
        key=key,
        origin="rule",
        title=f"r: incident {n}",
        query="up",
        series="up",
        start_s=T0 + n,
        end_s=T0 + 60.0 + n,
        rule="r",
        labels={"service": "checkout"},
        dashboard_uid="dash",
        panel_id=2,
        note="cause: db",
    )
    return dataclasses.replace(base, **changes)


def _queue(store: Store, incident: Incident, now: float = 0.0) -> None:
    store.save_incident(incident, annotation_for(incident, link_base="http://pb"), now_s=now)


def _deliverer(store, grafana, clock, *, timeout_s: float = 2.0, **policy) -> OutboxDeliverer:
    client = GrafanaClient(grafana.url, TOKEN, org_id=1, timeout_s=timeout_s)
    return OutboxDeliverer(
        store,
        client,
        clock=clock,
        policy=DeliveryPolicy(**{"backoff_s": 1.0, "backoff_max_s": 8.0, "lease_s": 5.0, **policy}),
    )


def _drain(
    deliverer: OutboxDeliverer, clock: Clock, store: Store, *, max_passes: int = 50
) -> Counter:
    outcomes: Counter = Counter()
    for _ in range(max_passes):
        outcomes.update(deliverer.deliver_due().outcomes)
        if store.outbox_counts()["pending"] == 0:
            break
        clock.now += 10.0
    return outcomes


def _tags_per_incident(grafana: FakeGrafana) -> Counter:
    return Counter(t for a in grafana.annotations() for t in a["tags"] if t.startswith("incident:"))


def test_created_once_on_the_right_panel_with_auth_and_org(store, grafana):
    clock = Clock()
    incident = _incident()
    _queue(store, incident)
    assert _deliverer(store, grafana, clock).deliver_due().outcomes == {"created": 1}
    (stored,) = grafana.annotations()
    assert (stored["dashboardUID"], stored["panelId"]) == ("dash", 2)
    assert (stored["time"], stored["timeEnd"]) == (1_780_000_000_000, 1_780_000_060_000)
    assert f"incident:{incident.id}" in stored["tags"]
    assert f'href="http://pb/incidents/{incident.id}"' in stored["text"]
    posts = [r for r in grafana.requests if r.method == "POST"]
    assert posts[0].has_authorization
    assert posts[0].org_id_header == "1"
    (row,) = store.outbox_rows()
    assert (row.state, row.grafana_id) == ("delivered", stored["id"])
    # nothing left to do: no further request
    before = len(grafana.requests)
    assert _deliverer(store, grafana, clock).deliver_due().attempted == 0
    assert len(grafana.requests) == before


def test_a_grown_incident_updates_the_same_annotation(store, grafana):
    clock = Clock()
    incident = _incident()
    _queue(store, incident)
    deliverer = _deliverer(store, grafana, clock)
    deliverer.deliver_due()
    closed = dataclasses.replace(incident, status="closed", end_s=T0 + 3000, note="cause: disk")
    _queue(store, closed, now=clock.now)
    assert deliverer.deliver_due().outcomes == {"updated": 1}
    (stored,) = grafana.annotations()
    assert stored["timeEnd"] == 1_780_003_000_000
    assert "cause: disk" in stored["text"]
    assert "resolved" in stored["text"]
    assert [r.method for r in grafana.requests] == ["POST", "PATCH"]


def test_5xx_and_429_are_retried_with_backoff_then_delivered_once(store, grafana):
    clock = Clock()
    _queue(store, _incident())
    deliverer = _deliverer(store, grafana, clock)
    grafana.fail_next(2, status=503)
    assert deliverer.deliver_due().outcomes == {"retry": 1}
    assert deliverer.deliver_due().attempted == 0  # backing off: not due yet
    clock.now += 1.0
    assert deliverer.deliver_due().outcomes == {"retry": 1}
    (row,) = store.outbox_rows()
    assert row.attempts == 2
    assert "HTTP 503" in (row.last_error or "")
    assert row.next_attempt_s == clock.now + 2.0  # doubled
    grafana.fail_next(1, status=429, retry_after=7)
    clock.now += 2.0
    assert deliverer.deliver_due().outcomes == {"retry": 1}
    assert store.outbox_rows()[0].next_attempt_s == clock.now + 7.0  # Retry-After wins
    clock.now += 7.0
    assert deliverer.deliver_due().outcomes == {"created": 1}
    assert len(grafana.annotations()) == 1


def test_a_timeout_after_grafana_stored_it_is_found_by_tag_not_created_again(store, grafana):
    clock = Clock()
    incident = _incident()
    _queue(store, incident)
    deliverer = _deliverer(store, grafana, clock, timeout_s=0.3)
    grafana.store_then_hang(1, 2.0)
    assert deliverer.deliver_due().outcomes == {"retry": 1}
    (row,) = store.outbox_rows()
    assert row.in_doubt
    assert row.grafana_id is None
    assert len(grafana.annotations()) == 1  # Grafana has it; we did not hear back
    clock.now += 5.0
    assert deliverer.deliver_due().outcomes == {"found": 1}
    assert len(grafana.annotations()) == 1
    (row,) = store.outbox_rows()
    assert (row.state, row.grafana_id, row.in_doubt) == (
        "delivered",
        grafana.annotations()[0]["id"],
        False,
    )


def test_grafana_down_for_a_while_then_everything_arrives_once(store, grafana):
    clock = Clock()
    for n in range(6):
        _queue(store, _incident(n))
    deliverer = _deliverer(store, grafana, clock, timeout_s=0.5)
    grafana.down()
    outcomes = deliverer.deliver_due().outcomes
    assert outcomes == {"retry": 6}
    assert store.outbox_counts()["pending"] == 6
    grafana.up()
    _drain(deliverer, clock, store)
    assert store.outbox_counts() == {"pending": 0, "delivered": 6, "failed": 0}
    tags = _tags_per_incident(grafana)
    assert len(tags) == 6
    assert set(tags.values()) == {1}


def test_an_annotation_deleted_in_grafana_is_created_again(store, grafana):
    clock = Clock()
    incident = _incident()
    _queue(store, incident)
    deliverer = _deliverer(store, grafana, clock)
    deliverer.deliver_due()
    (stored,) = grafana.annotations()
    import requests

    requests.delete(
        f"{grafana.url}/api/annotations/{stored['id']}", headers=grafana.auth_headers, timeout=5
    ).raise_for_status()
    _queue(store, dataclasses.replace(incident, status="closed"), now=clock.now)
    outcomes = _drain(deliverer, clock, store)
    assert outcomes == {"retry": 1, "created": 1}
    (again,) = grafana.annotations()
    assert again["id"] != stored["id"]


def test_long_label_values_still_give_tags_grafana_accepts(store, grafana):
    clock = Clock()
    incident = dataclasses.replace(_incident(), rule="r" * 120, labels={"service": "s" * 400})
    _queue(store, incident)  # Grafana refuses tags longer than 500 bytes in all
    assert _drain(_deliverer(store, grafana, clock), clock, store) == {"created": 1}
    (stored,) = grafana.annotations()
    assert stored["tags"][0] == f"incident:{incident.id}"


def test_a_refused_annotation_is_kept_as_failed_not_dropped(store, grafana):
    clock = Clock()
    _queue(store, _incident())
    grafana.fail_next(1, status=400)
    outcomes = _drain(_deliverer(store, grafana, clock), clock, store)
    assert outcomes == {"failed": 1}
    (row,) = store.outbox_rows()
    assert row.state == "failed"
    assert "HTTP 400" in (row.last_error or "")
    assert grafana.annotations() == []


def test_a_wrong_token_is_retried_not_dropped(store, grafana):
    clock = Clock()
    _queue(store, _incident())
    client = GrafanaClient(grafana.url, "wrong", timeout_s=2.0)
    deliverer = OutboxDeliverer(store, client, clock=clock)
    assert deliverer.deliver_due().outcomes == {"retry": 1}
    (row,) = store.outbox_rows()
    assert "HTTP 401" in (row.last_error or "")
    assert "PLUGIN_BACKEND_GRAFANA_TOKEN" in (row.last_error or "")
    assert TOKEN not in (row.last_error or "")
    assert "wrong" not in (row.last_error or "")
