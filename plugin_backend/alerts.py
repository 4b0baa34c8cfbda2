"""Alert webhooks (Grafana unified alerting, Prometheus Alertmanager): validate the
payload, split it into alerts, and find each one's panel and symptom query.

Grafana strips ``__dashboardUid__``/``__panelId__`` from the annotations it sends:
the dashboard UID survives only in ``dashboardURL`` (``/d/<uid>/...``) and the
panel id in ``panelURL`` (``viewPanel=<id>``). The symptom query is the watch
rule named by the alert's ``rule`` label, else the PromQL in the alert annotation
``plugin_backend_query``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugin_backend.errors import RequestError
from plugin_backend.rules import RuleSet

__all__ = [
    "AlertEvent",
    "AlertSource",
    "alert_events",
    "job_key",
    "panel_of",
    "symptom_of",
]

AlertSource = Literal["grafana", "alertmanager"]
QUERY_ANNOTATION = "plugin_backend_query"
_DASHBOARD_PATH = re.compile(r"/d/([A-Za-z0-9_-]{1,128})(?:/|$)")
_MAX_PANEL_ID = 2**31 - 1
_MAX_ALERTS = 500


class _Alert(BaseModel):
    """One alert; field names are the wire names (camelCase)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    fingerprint: str = Field("", max_length=256)
    generatorURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    alerts: list[_Alert] = Field(max_length=_MAX_ALERTS)
    externalURL: str = ""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert of a webhook call, as the worker processes it."""

    source: AlertSource
    status: Literal["firing", "resolved"]
    fingerprint: str
    starts_at_s: float
    ends_at_s: float | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    dashboard_uid: str | None
    panel_id: int | None
    generator_url: str

    @property
    def incident_key(self) -> str:
        """Firing and resolved notifications of one alert episode share it."""
        return f"{self.source}:{self.fingerprint}:{self.starts_at_s:.0f}"

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "alert")


def alert_events(source: AlertSource, body: Any) -> list[AlertEvent]:
    """The alerts of a webhook body; ``RequestError`` naming the first bad field."""
    try:
        payload = _Payload.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise RequestError(
            f"not a {source} webhook payload: {where}: {first.get('msg', 'invalid')}",
            code="invalid_alert_payload",
        ) from None
    return [_event(source, alert) for alert in payload.alerts]


def job_key(event: AlertEvent) -> str:
    """Idempotency key of one notification: repeats of it are dropped at intake."""
    return f"{event.incident_key}:{event.status}"


def panel_of(event: AlertEvent, rules: RuleSet | None) -> tuple[str | None, int | None]:
    """Where to annotate: the alert's own panel, else the panel its rule names."""
    if event.dashboard_uid is not None:
        return event.dashboard_uid, event.panel_id
    rule = rules.get(event.labels.get("rule", "")) if rules is not None else None
    if rule is not None:
        return rule.dashboard_uid, rule.panel_id
    return None, None


def symptom_of(event: AlertEvent, rules: RuleSet | None) -> str | None:
    """The PromQL to explain: the rule named by the ``rule`` label, else the annotation."""
    rule = rules.get(event.labels.get("rule", "")) if rules is not None else None
    if rule is not None:
        return rule.expr
    query = event.annotations.get(QUERY_ANNOTATION, "").strip()
    return query or None


def _event(source: AlertSource, alert: _Alert) -> AlertEvent:
    ends = alert.endsAt.timestamp() if alert.endsAt and alert.endsAt.year > 1 else None
    fingerprint = alert.fingerprint or _fingerprint(alert.labels)
    dashboard_uid, panel_id = _dashboard_and_panel(alert.dashboardURL, alert.panelURL)
    return AlertEvent(
        source=source,
        status=alert.status,
        fingerprint=fingerprint,
        starts_at_s=alert.startsAt.timestamp(),
        ends_at_s=ends,
        labels=dict(alert.labels),
        annotations=dict(alert.annotations),
        dashboard_uid=dashboard_uid,
        panel_id=panel_id,
        generator_url=alert.generatorURL,
    )


def _fingerprint(labels: Mapping[str, str]) -> str:
    text = "\x00".join(f"{k}\x00{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _dashboard_and_panel(dashboard_url: str, panel_url: str) -> tuple[str | None, int | None]:
    uid: str | None = None
    panel: int | None = None
    for url in (panel_url, dashboard_url):
        if not url:
            continue
        parts = urlsplit(url)
        match = _DASHBOARD_PATH.search(parts.path)
        if match and uid is None:
            uid = match.group(1)
        view = parse_qs(parts.query).get("viewPanel", [""])[0].removeprefix("panel-")
        # Grafana 11+ writes viewPanel=panel-<id>; an id past 32 bits is no Grafana panel
        # (and would overflow the store's column on PostgreSQL): ignored
        if view.isdigit() and panel is None and int(view) <= _MAX_PANEL_ID:
            panel = int(view)
    return uid, panel
