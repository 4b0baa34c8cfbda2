"""The worker loop: run each watch rule every ``every``, process queued alert
notifications, deliver the annotation outbox, apply retention.

Single-threaded and restartable at any instant: everything it decides is saved in
the store before anything is sent, so a crash (even ``kill -9``) loses nothing and
the outbox's tag lookup keeps delivery from duplicating.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from plugin_backend.alert_handling import AlertHandler
from plugin_backend.alerts import AlertEvent, alert_events
from plugin_backend.delivery import DeliveryReport, OutboxDeliverer
from plugin_backend.errors import BackendError, ConfigError, StoreError, UpstreamError
from plugin_backend.incidents import AlertJob, Incident, annotation_for, incident_id
from plugin_backend.rules import Rule, RuleSet, load_rules
from plugin_backend.store import LeaseLost, Store, incident_lease
from plugin_backend.telemetry import WorkerMetrics
from plugin_backend.watch import DEFAULT_LOOKBACK_S, CycleResult, RuleCycle, needs_note

__all__ = ["RuleRun", "StepFailure", "Worker", "WorkerReport"]

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0
# A rule's lease is renewed every RULE_LEASE_RENEW_S while its cycle runs, so a slow
# cycle keeps it and a crashed worker's rules resume elsewhere within RULE_LEASE_S. A
# cycle that lost it anyway (renewals failed) writes nothing (LeaseLost).
RULE_LEASE_S = 20.0
RULE_LEASE_RENEW_S = 5.0
ALERT_BATCH = 10  # alerts claimed at a time: a batch's notes fit well inside its lease
ALERT_LEASE_S = 300.0
ALERT_PASS_MAX = 50  # alerts per pass, so rule cycles are never starved


@dataclass(frozen=True, slots=True)
class StepFailure:
    """One step that did not complete: nothing of it was saved, it runs again later."""

    step: str  # one of telemetry.FAILURE_STEPS
    subject: str  # the rule name, the alert's key, or "" for delivery
    cause: str  # one of telemetry.FAILURE_CAUSES
    message: str

    def __str__(self) -> str:
        subject = f" {self.subject}" if self.subject else ""
        return f"{self.step}{subject} failed ({self.cause}): {self.message}"


@dataclass(frozen=True, slots=True)
class RuleRun:
    """How one rule cycle went: ``ok`` (``result`` saved), ``skipped`` (another worker
    holds the rule's lease) or ``error`` (``failure``; nothing saved)."""

    outcome: str
    result: CycleResult | None = None
    failure: StepFailure | None = None


@dataclass(slots=True)
class WorkerReport:
    cycles: list[CycleResult] = field(default_factory=list)
    alerts: int = 0
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    failures: list[StepFailure] = field(default_factory=list)

    @property
    def opened(self) -> int:
        return sum(len(c.opened) for c in self.cycles)


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        rules: RuleSet,
        rules_path: str | None,
        cycle: RuleCycle,
        alerts: AlertHandler,
        deliverer: OutboxDeliverer | None,
        metrics: WorkerMetrics | None = None,
        retention_s: float = 30 * 86_400.0,
        clock: Callable[[], float] = time.time,
        poll_s: float = 1.0,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.rules_path = rules_path
        self.cycle = cycle
        self.alerts = alerts
        self.deliverer = deliverer
        self.metrics = metrics
        self.retention_s = retention_s
        self.clock = clock
        self.poll_s = poll_s
        # who holds a rule's lease: unique per worker process, readable in the store
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._next_due: dict[str, float] = {}
        self._next_purge = 0.0
        self._reload = threading.Event()
        self._failures: list[StepFailure] | None = None  # collected during run_once only
        # set by a task queue: an alert's new incident whose note is pending (the LLM's
        # is written later, ``write_note``) is handed to it (a rule's: by the rule task)
        self.send_note: Callable[[str], None] | None = None
        if metrics is not None:
            metrics.rules_loaded.set(len(rules.rules))

    # -- control ------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Reload the rules file at the next step (the SIGHUP handler calls this)."""
        self._reload.set()

    def reload_rules(self) -> bool:
        """Swap in the rules file's current content; keep the old rules if it is invalid."""
        self._reload.clear()
        if self.rules_path is None:
            return False
        try:
            rules = load_rules(self.rules_path)
        except ConfigError as exc:
            log.error("rules reload refused, keeping %d rules: %s", len(self.rules.rules), exc)
            if self.metrics is not None:
                self.metrics.rules_reload_failures.inc()
            return False
        gone = set(self.rules.names) - set(rules.names)
        self.rules = rules
        self._next_due = {k: v for k, v in self._next_due.items() if k in rules.names}
        if self.metrics is not None:
            self.metrics.rules_loaded.set(len(rules.rules))
            for name in gone:
                self.metrics.anomaly_score.remove(name)
        log.info("rules reloaded: %s", ", ".join(rules.names) or "none")
        return True

    # -- one pass -----------------------------------------------------------------------

    def run_once(self, *, since_s: float | None = None) -> WorkerReport:
        """Every rule once (over ``since_s`` of history when given), then the alert queue,
        then the outbox."""
        report = WorkerReport()
        self._failures = report.failures
        try:
            for rule in self.rules.rules:
                result = self.run_rule(rule, lookback_s=since_s or DEFAULT_LOOKBACK_S).result
                if result is not None:
                    report.cycles.append(result)
            report.alerts = self.process_alerts()
            report.delivery = self.deliver()
        finally:
            self._failures = None
        return report

    def run_forever(self, stop: threading.Event, *, since_s: float | None = None) -> None:
        """Until ``stop`` is set: replay ``since_s`` first (if given), then run live."""
        log.info("worker running %d rules: %s", len(self.rules.rules), ", ".join(self.rules.names))
        # Delivery runs beside the rules, so a slow cycle (an LLM note takes seconds)
        # never holds back annotations that are ready.
        delivery = threading.Thread(
            target=self._deliver_until, args=(stop,), name="outbox-delivery", daemon=True
        )
        delivery.start()
        if since_s is not None:
            for rule in self.rules.rules:
                self.run_rule(rule, lookback_s=since_s)
        while not stop.is_set():
            if self._reload.is_set():
                self.reload_rules()
            now = self.clock()
            for rule in self.rules.rules:
                if stop.is_set():
                    break
                if self._next_due.get(rule.name, 0.0) <= now:
                    self.run_rule(rule)
            self.process_alerts()
            self._purge()
            stop.wait(self._sleep_s())
        delivery.join(timeout=30)

    def _deliver_until(self, stop: threading.Event) -> None:
        batch = self.deliverer.policy.batch if self.deliverer is not None else 1
        while not stop.is_set():
            report = self.deliver()
            if report.attempted < batch:  # a full batch: more may be due, go on at once
                stop.wait(self.poll_s)

    # -- steps --------------------------------------------------------------------------

    def run_rule(
        self,
        rule: Rule,
        *,
        lookback_s: float = DEFAULT_LOOKBACK_S,
        at_s: float | None = None,
        holder: str | None = None,
        after_save: Callable[[CycleResult], None] | None = None,
    ) -> RuleRun:
        """One cycle of ``rule`` as of ``at_s`` (default: now), under the rule's lease held
        as ``holder`` (default: this worker; a task queue passes one per task).
        ``after_save``: run once the cycle is saved, still under the lease (a task queue
        shares the detector state and records the tick there; if it fails, so does the
        cycle)."""
        now = self.clock()
        at = now if at_s is None else at_s
        holder = holder or self.holder
        self._next_due[rule.name] = now + rule.every_s
        started = time.perf_counter()
        try:
            if not self.store.acquire_rule(rule.name, holder, now, lease_s=RULE_LEASE_S):
                log.info("rule %s: another worker is running it, skipped", rule.name)
                self._count_cycle(rule, "skipped", started)
                return RuleRun("skipped")
        except BackendError as exc:
            failure = self._failed("rule", rule.name, exc)
            self._count_cycle(rule, "error", started)
            return RuleRun("error", failure=failure)
        done = threading.Event()
        renewer = threading.Thread(
            target=self._renew_lease,
            args=(rule, holder, done),
            name=f"lease-{rule.name}",
            daemon=True,
        )
        renewer.start()
        try:
            # read after the lease: whatever the previous holder wrote is known here
            known = self._known(rule, at, lookback_s)
            result = self.cycle.run(rule, at, known, lookback_s=lookback_s)
            for incident, annotation in result.changed:
                self.store.save_incident(incident, annotation, now_s=self.clock(), holder=holder)
            if after_save is not None:
                after_save(result)
        except Exception as exc:  # one bad rule must not stop the others
            failure = self._failed("rule", rule.name, exc)
            self._count_cycle(rule, "error", started)
            return RuleRun("error", failure=failure)
        finally:
            done.set()
            renewer.join()
            self._release(rule, holder)
        self._count_cycle(rule, "ok", started)
        if self.metrics is not None:
            if result.score is not None:
                self.metrics.anomaly_score.labels(rule.name).set(result.score)
            self.metrics.incidents_opened.labels("rule").inc(len(result.opened))
        for incident, _ in result.changed:
            if incident.id in result.opened:
                log.info("incident %s opened: %s", incident.id, incident.title)
        return RuleRun("ok", result)

    def write_note(self, incident_id: str, *, holder: str | None = None) -> str:
        """Upgrade an incident's pending template note (``defer_notes``) to the LLM's, and
        queue its annotation again. The LLM runs without the incident's lease (its
        rule's cycles, or its alert's notifications, go on meanwhile); the note is saved
        under the lease (``incident_lease``), into the incident as it is then, and only
        if it is still pending: a note sent twice is written once. Returns ``written``,
        ``not needed`` (no incident, or its note is no longer pending) or ``busy`` (the
        lease stayed taken for ``RULE_LEASE_S``: try again later)."""
        explain = self.cycle.explain
        incident = self.store.get_incident(incident_id)
        if explain is None or incident is None or not needs_note(incident):
            return "not needed"
        written = explain.write_note(incident.report or {})
        holder = holder or self.holder
        lease = incident_lease(incident)
        if not self._hold(lease, holder):
            return "busy"
        try:
            current = self.store.get_incident(incident_id)
            if current is None or not needs_note(current):
                return "not needed"
            report = {**(current.report or {}), "summary": written.text, "llm": written.to_dict()}
            updated = dataclasses.replace(current, note=written.text, report=report)
            annotation = (
                annotation_for(updated, link_base=self.cycle.link_base)
                if updated.dashboard_uid
                else None
            )
            self.store.save_incident(updated, annotation, now_s=self.clock(), holder=holder)
        finally:
            self._release_name(lease, holder)
        return "written"

    def _hold(self, lease: str, holder: str) -> bool:
        """Take ``lease`` (a rule's or an alert's) for ``holder``, waiting up to
        ``RULE_LEASE_S`` while another holds it."""
        deadline = time.monotonic() + RULE_LEASE_S
        while not self.store.acquire_rule(lease, holder, self.clock(), lease_s=RULE_LEASE_S):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def _renew_lease(self, rule: Rule, holder: str, done: threading.Event) -> None:
        while not done.wait(RULE_LEASE_RENEW_S):
            try:
                if not self.store.acquire_rule(
                    rule.name, holder, self.clock(), lease_s=RULE_LEASE_S
                ):
                    log.warning("rule %s: another worker took its lease over", rule.name)
                    return
            except BackendError as exc:  # try again; past the lease the cycle writes nothing
                log.warning("rule %s: lease not renewed: %s", rule.name, exc.message)

    def _release(self, rule: Rule, holder: str) -> None:
        self._release_name(rule.name, holder)

    def _release_name(self, rule: str, holder: str) -> None:
        try:
            self.store.release_rule(rule, holder)
        except BackendError as exc:  # the lease then expires by itself
            log.warning("rule %s: lease not released: %s", rule, exc.message)

    def _known(self, rule: Rule, now: float, lookback_s: float) -> list[Incident]:
        since = now - lookback_s - self.cycle.policy.max_gap_s
        found = {i.id: i for i in self.store.list_incidents(rule=rule.name, since_s=since)}
        for incident in self.store.list_incidents(rule=rule.name, status="open"):
            found.setdefault(incident.id, incident)
        return list(found.values())

    def process_alerts(self) -> int:
        """Handle queued alert notifications (oldest first); returns how many."""
        done = 0
        seen: set[int] = set()  # a failed job is retried next pass, not in this one
        try:
            while len(seen) < ALERT_PASS_MAX:
                jobs = self.store.claim_alerts(
                    self.clock(), lease_s=ALERT_LEASE_S, limit=ALERT_BATCH, skip=seen
                )
                if not jobs:
                    break
                for job in jobs:
                    seen.add(job.id)
                    done += self._process_alert(job)
        except StoreError as exc:  # the queue itself is unreachable: try again next pass
            self._failed("alert", "", exc)
        return done

    def _process_alert(self, job: AlertJob) -> int:
        try:
            (event,) = alert_events(job.source, {"alerts": [job.payload]})  # type: ignore[arg-type]
            self._handle_alert(event, self.clock())
        except Exception as exc:
            failure = self._failed("alert", job.key, exc)
            self.store.finish_alert(job, self.clock(), error=failure.message)
            self._count_alert(job.source, "error")
            return 0
        self.store.finish_alert(job, self.clock())
        self._count_alert(job.source, "ok")
        return 1

    def _handle_alert(self, event: AlertEvent, now: float) -> None:
        """Under the alert's lease (``alert:<incident id>``, shared with the note writer):
        firing and resolved notifications of one alert, handled by two workers at
        once, or its note being saved meanwhile, never overwrite each other."""
        key = incident_id(event.incident_key)
        lease = f"alert:{key}"  # incident_lease of the alert's incident
        if not self._hold(lease, self.holder):
            raise LeaseLost(f"alert {event.incident_key}: its incident is being written elsewhere")
        try:
            existing = self.store.get_incident(key)
            outcome = self.alerts.handle(event, existing, now)
            if outcome is None:
                return
            incident, annotation = outcome
            self.store.save_incident(incident, annotation, now_s=self.clock(), holder=self.holder)
        finally:
            self._release_name(lease, self.holder)
        if existing is None:
            log.info(
                "incident %s opened from %s alert: %s", incident.id, event.source, incident.title
            )
            if self.metrics is not None:
                self.metrics.incidents_opened.labels(event.source).inc()
        if self.send_note is not None and existing is None and needs_note(incident):
            try:
                self.send_note(incident.id)
            except Exception as exc:  # the broker: the note sweep sends it later
                log.warning("note of incident %s not sent: %s", incident.id, exc)

    def deliver(self) -> DeliveryReport:
        report = DeliveryReport()
        if self.deliverer is not None:
            try:
                report = self.deliverer.deliver_due()
            except BackendError as exc:  # the store itself failed: try again next pass
                self._failed("delivery", "", exc)
        if self.metrics is not None:
            try:
                for state, count in self.store.outbox_counts().items():
                    self.metrics.outbox_rows.labels(state).set(count)
            except BackendError as exc:
                log.warning("outbox counts unavailable: %s", exc.message)
        return report

    def _purge(self) -> None:
        now = self.clock()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        self.purge()

    def purge(self) -> None:
        """Apply retention now (the loop does so every ``PURGE_EVERY_S``)."""
        now = self.clock()
        try:
            # without Grafana (no deliverer) pending annotations can never be delivered
            removed = self.store.purge(now - self.retention_s, undeliverable=self.deliverer is None)
        except BackendError as exc:
            log.warning("retention purge failed: %s", exc.message)
            return
        if any(removed.values()):
            log.info("retention removed %s", removed)

    def _sleep_s(self) -> float:
        now = self.clock()
        due = min(self._next_due.values(), default=now + self.poll_s)
        return max(0.05, min(self.poll_s, due - now))

    def _failed(self, step: str, subject: str, exc: Exception) -> StepFailure:
        """Log (ERROR, with the cause), count and collect a step that failed."""
        cause = _cause(exc)
        message = exc.message if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
        failure = StepFailure(step, subject, cause, message)
        log.error("%s", failure, exc_info=exc if cause == "crash" else None)
        if self.metrics is not None:
            self.metrics.step_failures.labels(step, cause).inc()
        if self._failures is not None:
            self._failures.append(failure)
        return failure

    def _count_cycle(self, rule: Rule, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.cycles.labels(rule.name, outcome).inc()
            self.metrics.cycle_duration.labels(rule.name).observe(time.perf_counter() - started)

    def _count_alert(self, source: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_processed.labels(source, outcome).inc()


def _cause(exc: Exception) -> str:
    if isinstance(exc, LeaseLost):
        return "lease"
    if isinstance(exc, StoreError):
        return "store"
    if isinstance(exc, UpstreamError):
        return "upstream"
    return "error" if isinstance(exc, BackendError) else "crash"
