"""Incidents and the annotations that carry them onto Grafana: value objects and the
pure rules that derive one from the other (ids, tags, annotation text).

An incident is one anomaly episode of one symptom: found by a watch rule, or
reported by a Grafana / Alertmanager alert. Its id is derived from a stable key,
so replaying the same history or receiving the same alert twice names the same
incident. Its annotation carries the tag ``incident:<id>``: Grafana's API has
no idempotency key, so that tag is how a delivery whose outcome was lost is found
again instead of created twice.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "AlertJob",
    "Annotation",
    "Incident",
    "IncidentOrigin",
    "IncidentStatus",
    "OutboxRow",
    "annotation_for",
    "incident_id",
    "incident_tag",
]

IncidentOrigin = Literal["rule", "grafana", "alertmanager"]
IncidentStatus = Literal["open", "closed"]

TAG_PREFIX = "incident:"
_MAX_TEXT_CHARS = 4000  # Grafana stores more; panels show a tooltip, keep it readable
_MAX_TAGS_JSON_BYTES = 450  # Grafana's limit is 500
_MAX_TAG_VALUE_CHARS = 100
# C0/C1 controls except tab and newline, and bidi overrides that can disguise text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def incident_id(key: str) -> str:
    """A short stable id from the incident's identity key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def incident_tag(incident_id: str) -> str:
    return TAG_PREFIX + incident_id


@dataclass(frozen=True, slots=True)
class Incident:
    """One anomaly episode. ``end_s`` is the last anomalous time seen (open) or the end."""

    id: str
    key: str
    origin: IncidentOrigin
    title: str
    query: str
    series: str
    start_s: float
    end_s: float
    status: IncidentStatus = "open"
    rule: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    peak_score: float | None = None
    direction: str | None = None
    dashboard_uid: str | None = None
    panel_id: int | None = None
    note: str = ""
    cause: str | None = None
    report: Mapping[str, Any] | None = None
    created_s: float = 0.0
    updated_s: float = 0.0
    # The symptom's normal range just before the incident: it stays open until the
    # symptom is back inside (rule incidents; None when unknown).
    normal_low: float | None = None
    normal_high: float | None = None


@dataclass(frozen=True, slots=True)
class Annotation:
    """What one Grafana annotation should say (the outbox's desired state)."""

    incident_id: str
    dashboard_uid: str | None
    panel_id: int | None
    time_ms: int
    time_end_ms: int
    text: str
    tags: Sequence[str]

    @property
    def tag(self) -> str:
        return incident_tag(self.incident_id)


def annotation_for(incident: Incident, *, link_base: str | None) -> Annotation:
    """The annotation of ``incident``: its region, its note, a link to its page.

    Grafana renders annotation text as (sanitised) HTML: the link is the only markup,
    the title and note are escaped here, so a label value or note holding HTML shows
    as text.
    """
    status = "resolved" if incident.status == "closed" else "ongoing"
    lines = [f"{incident.title} ({status})"]
    if incident.note:
        lines.append(incident.note)
    text = _CONTROL.sub("", "\n".join(lines))
    if len(text) > _MAX_TEXT_CHARS:
        text = text[: _MAX_TEXT_CHARS - 1] + "…"
    text = html.escape(text, quote=True)
    if link_base:
        text += f'\n<a href="{link_base}/incidents/{incident.id}">Incident page</a>'
    tags = [incident_tag(incident.id), "plugin-backend", f"status:{status}"]
    if incident.rule:
        tags.append(f"rule:{incident.rule}")
    service = incident.labels.get("service")
    if service:
        tags.append(f"service:{service[:_MAX_TAG_VALUE_CHARS]}")
    return Annotation(
        incident_id=incident.id,
        dashboard_uid=incident.dashboard_uid,
        panel_id=incident.panel_id,
        time_ms=round(incident.start_s * 1000),
        time_end_ms=round(max(incident.end_s, incident.start_s) * 1000),
        text=text,
        tags=_within_budget(list(dict.fromkeys(tags))),
    )


def _within_budget(tags: list[str]) -> tuple[str, ...]:
    """Grafana refuses tags whose JSON exceeds 500 bytes: keep the first ones that fit
    (the incident tag, which delivery looks annotations up by, is always first)."""
    kept: list[str] = []
    for tag in tags:
        if len(json.dumps([*kept, tag]).encode("utf-8")) <= _MAX_TAGS_JSON_BYTES:
            kept.append(tag)
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    incident_id: str
    dashboard_uid: str | None
    panel_id: int | None
    time_ms: int
    time_end_ms: int
    text: str
    tags: list[str]
    version: int
    delivered_version: int
    grafana_id: int | None
    in_doubt: bool
    state: str
    attempts: int
    next_attempt_s: float
    last_error: str | None
    updated_s: float

    @property
    def tag(self) -> str:
        return incident_tag(self.incident_id)


@dataclass(frozen=True, slots=True)
class AlertJob:
    id: int
    key: str
    source: str
    payload: dict[str, Any]
    attempts: int
