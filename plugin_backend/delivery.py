"""Deliver the annotation outbox to Grafana: at least once, and never twice.

Each due row is claimed (leased), then:

* no Grafana id yet and a previous attempt's outcome unknown (``in_doubt``: a
  timeout, a dropped connection, a crash between sending and recording): look the
  annotation up by its stable ``incident:<id>`` tag and adopt it if it is there;
* no Grafana id: record ``in_doubt`` *before* sending, ``POST`` it, record the id;
* a Grafana id: ``PATCH`` it to the desired state (idempotent); a 404 means someone
  deleted it in Grafana, so it is created afresh.

Failures that may pass (transport errors, 5xx, 429, auth) are retried with
exponential backoff (``Retry-After`` honoured); a 4xx that names the annotation
itself as wrong marks the row ``failed``, kept and visible, never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugin_backend.errors import GrafanaError
from plugin_backend.incidents import OutboxRow
from plugin_backend.ports import AnnotationSink, OutboxStore

__all__ = ["DeliveryPolicy", "DeliveryReport", "OutboxDeliverer", "annotation_body"]

log = logging.getLogger(__name__)

Outcome = str  # created | updated | found | retry | failed


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0
    lease_s: float = 30.0  # must cover one delivery: a lookup, then a create or a patch
    batch: int = 20

    def next_delay_s(self, attempts: int, retry_after_s: float | None = None) -> float:
        delay = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(attempts, 30))
        return max(delay, retry_after_s or 0.0)


@dataclass(slots=True)
class DeliveryReport:
    outcomes: dict[Outcome, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    @property
    def attempted(self) -> int:
        return sum(self.outcomes.values())


def annotation_body(row: OutboxRow) -> dict[str, Any]:
    """The ``POST /api/annotations`` body of ``row`` (Grafana's PostAnnotationsCmd)."""
    body: dict[str, Any] = {
        "time": row.time_ms,
        "timeEnd": row.time_end_ms,
        "text": row.text,
        "tags": list(row.tags),
    }
    if row.dashboard_uid:
        body["dashboardUID"] = row.dashboard_uid
        if row.panel_id is not None:
            body["panelId"] = row.panel_id
    return body


class OutboxDeliverer:
    def __init__(
        self,
        store: OutboxStore,
        sink: AnnotationSink,
        *,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], float],
        observe: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.policy = policy or DeliveryPolicy()
        self.clock = clock
        self.observe = observe

    def deliver_due(self) -> DeliveryReport:
        """Deliver up to ``batch`` rows due now; never raises ``GrafanaError``.

        Rows are claimed one at a time, so a lease only has to cover one delivery
        (a few Grafana calls), however slow the rest of the batch is."""
        report = DeliveryReport()
        for _ in range(self.policy.batch):
            claimed = self.store.claim_due(self.clock(), lease_s=self.policy.lease_s, limit=1)
            if not claimed:
                break
            outcome = self._deliver(claimed[0])
            report.add(outcome)
            if self.observe is not None:
                self.observe(outcome)
        return report

    def _deliver(self, row: OutboxRow) -> Outcome:
        grafana_id = row.grafana_id
        outcome: Outcome = "updated"
        try:
            if grafana_id is None and row.in_doubt:
                grafana_id = self._find_existing(row)
                outcome = "found" if grafana_id is not None else outcome
            if grafana_id is None:
                self.store.mark_in_doubt(row.id, self.clock())
                grafana_id = self.sink.create_annotation(annotation_body(row))
                outcome = "created"
            else:
                self._patch(row, grafana_id)
            self.store.mark_delivered(row, grafana_id, self.clock())
            return outcome
        except _Deleted:
            self.store.forget_grafana_id(row.id, self.clock())
            self.store.mark_retry(
                row, "deleted in Grafana", self.clock(), self.clock(), in_doubt=False
            )
            return "retry"
        except GrafanaError as exc:
            now = self.clock()
            # in doubt if this attempt may have created it, or an earlier one may have.
            in_doubt = row.grafana_id is None and (row.in_doubt or exc.in_doubt)
            if not exc.retryable:
                log.error("annotation for incident %s refused: %s", row.incident_id, exc.message)
                self.store.mark_failed(row, exc.message, now)
                return "failed"
            delay = self.policy.next_delay_s(row.attempts, exc.retry_after_s)
            log.warning(
                "annotation for incident %s not delivered (attempt %d, retry in %.0f s): %s",
                row.incident_id,
                row.attempts + 1,
                delay,
                exc.message,
            )
            self.store.mark_retry(row, exc.message, now + delay, now, in_doubt=in_doubt)
            return "retry"

    def _find_existing(self, row: OutboxRow) -> int | None:
        found = [
            a
            for a in self.sink.find_annotations(tags=[row.tag], dashboard_uid=row.dashboard_uid)
            if row.tag in (a.get("tags") or []) and isinstance(a.get("id"), int)
        ]
        if not found:
            return None
        if len(found) > 1:
            log.warning("%d annotations carry tag %s; updating the oldest", len(found), row.tag)
        return min(int(a["id"]) for a in found)

    def _patch(self, row: OutboxRow, grafana_id: int) -> None:
        body = annotation_body(row)
        try:
            self.sink.patch_annotation(
                grafana_id, {k: body[k] for k in ("time", "timeEnd", "text", "tags")}
            )
        except GrafanaError as exc:
            if exc.status == 404:
                raise _Deleted from None
            raise


class _Deleted(Exception):
    pass
