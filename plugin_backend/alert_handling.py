"""Turn one alert notification into an incident with a root-cause note: the work the
worker does for each queued webhook alert (pure: the store is the caller's)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from plugin_backend.alerts import AlertEvent, panel_of, symptom_of
from plugin_backend.errors import BackendError
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Annotation, Incident, annotation_for, incident_id
from plugin_backend.rules import RuleSet

__all__ = ["AlertHandler"]

log = logging.getLogger(__name__)


class AlertHandler:
    def __init__(
        self,
        explain: ExplainService | None,
        rules: Callable[[], RuleSet | None],
        *,
        link_base: str | None = None,
        defer_notes: bool = False,
    ) -> None:
        self.explain = explain
        self.rules = rules  # read per alert: the worker reloads rules on SIGHUP
        self.link_base = link_base
        # True: a new incident gets the template note, marked pending (``needs_note``),
        # and the LLM's is written later, by a task of its own (the Celery engine)
        self.defer_notes = defer_notes

    def handle(
        self, event: AlertEvent, existing: Incident | None, now_s: float
    ) -> tuple[Incident, Annotation | None] | None:
        """The incident to save (and its annotation); ``None`` when nothing changes
        (a repeat of a firing alert already explained)."""
        if existing is not None:
            if event.status == "firing" or existing.status == "closed":
                return None
            end = event.ends_at_s if event.ends_at_s is not None else now_s
            closed = dataclasses.replace(
                existing, status="closed", end_s=max(end, existing.start_s)
            )
            return closed, self._annotation(closed)
        incident = self._explained(self._new(event, now_s), event)
        return incident, self._annotation(incident)

    def _new(self, event: AlertEvent, now_s: float) -> Incident:
        rules = self.rules()
        dashboard_uid, panel_id = panel_of(event, rules)
        query = symptom_of(event, rules) or ""
        summary = event.annotations.get("summary") or event.name
        resolved = event.status == "resolved"
        end = event.ends_at_s if resolved and event.ends_at_s is not None else now_s
        rule = event.labels.get("rule")
        return Incident(
            id=incident_id(event.incident_key),
            key=event.incident_key,
            origin=event.source,
            title=f"{event.name}: {summary}" if summary != event.name else event.name,
            query=query,
            series=query,
            start_s=event.starts_at_s,
            end_s=max(end, event.starts_at_s),
            status="closed" if resolved else "open",
            rule=rule if rules is not None and rule and rules.get(rule) else None,
            labels=dict(event.labels),
            dashboard_uid=dashboard_uid,
            panel_id=panel_id,
            created_s=now_s,
            updated_s=now_s,
        )

    def _explained(self, incident: Incident, event: AlertEvent) -> Incident:
        if not incident.query:
            return dataclasses.replace(
                incident,
                note=(
                    "No symptom query for this alert: give it a 'rule' label naming a watch "
                    "rule, or an annotation 'plugin_backend_query' holding the PromQL."
                ),
            )
        if self.explain is None:
            return incident
        rules = self.rules()
        rule = rules.get(event.labels.get("rule", "")) if rules is not None else None
        # Without a rule's override the window follows the symptom's own onset.
        window_s = rule.explain_window_s if rule is not None else None
        try:
            if self.defer_notes:
                report = self.explain.explain(
                    incident.query, event.starts_at_s, window_s, write_note=False
                )
            else:
                report = self.explain.explain(incident.query, event.starts_at_s, window_s)
        except BackendError as exc:
            log.warning("root cause of alert %s failed: %s", event.name, exc.message)
            return dataclasses.replace(incident, note=f"Root cause not available: {exc.message}")
        top = report.causes[0].series if report.causes else None
        return dataclasses.replace(
            incident,
            series=str(report.symptom.get("series", incident.series)),
            note=report.summary,
            cause=top,
            report=report.to_dict(),
        )

    def _annotation(self, incident: Incident) -> Annotation | None:
        if not incident.dashboard_uid:
            return None
        return annotation_for(incident, link_base=self.link_base)
