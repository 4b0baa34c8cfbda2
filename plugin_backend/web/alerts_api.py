"""Alert webhooks: ``POST /api/v1/alerts/grafana`` (Grafana unified alerting) and
``POST /api/v1/alerts/alertmanager`` (Prometheus Alertmanager).

Answered ``202`` at once: root cause and the note take seconds, and a webhook that
times out is retried by Grafana. Each alert is queued in the store, idempotent per
fingerprint, ``startsAt`` and status, and the worker does the rest.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app

from plugin_backend.alerts import AlertSource, alert_events, job_key
from plugin_backend.incidents import incident_id
from plugin_backend.store import Store
from plugin_backend.web.http import json_body, json_response

__all__ = ["alerts_blueprint"]

alerts_blueprint = Blueprint("alerts", __name__, url_prefix="/api/v1/alerts")


@alerts_blueprint.post("/grafana")
def grafana_webhook() -> Response:
    return _intake("grafana")


@alerts_blueprint.post("/alertmanager")
def alertmanager_webhook() -> Response:
    return _intake("alertmanager")


def _intake(source: AlertSource) -> Response:
    body = json_body()
    events = alert_events(source, body)
    store: Store = current_app.extensions["plugin_backend.store"]
    raw_alerts = body["alerts"]
    accepted = []
    now = time.time()
    for event, raw in zip(events, raw_alerts, strict=True):
        queued = store.enqueue_alert(job_key(event), source, raw, now)
        accepted.append(
            {
                "fingerprint": event.fingerprint,
                "status": event.status,
                "incident": incident_id(event.incident_key),
                "queued": queued,
            }
        )
    queued_count = sum(1 for a in accepted if a["queued"])
    return json_response(
        {
            "status": "accepted",
            "queued": queued_count,
            "duplicates": len(accepted) - queued_count,
            "alerts": accepted,
        },
        status=202,
    )
