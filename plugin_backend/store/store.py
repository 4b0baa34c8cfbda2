"""``Store``: incidents, the annotation outbox and the alert intake queue, in one
SQL database reached through SQLAlchemy Core.

Every write is one short transaction. An incident and its annotation's desired
state are saved together, so an annotation is recorded before anything is sent.
Outbox rows are *claimed* with a lease before delivery, so two workers never
deliver the same row at once; a crashed worker's lease simply expires.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from plugin_backend.errors import ConfigError, StoreError
from plugin_backend.incidents import AlertJob, Annotation, Incident, OutboxRow
from plugin_backend.store.schema import alert_jobs, incidents, outbox, rule_leases, rule_ticks

__all__ = ["AlertJob", "LeaseLost", "OutboxRow", "RuleTick", "Store", "incident_lease"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HEAD_REVISION = "0006"
_INCIDENT_FIELDS = tuple(c.name for c in incidents.columns)
_MIGRATING = threading.Lock()
_MIGRATE_LOCK = 0x706C7567696E  # the advisory lock key of migrations ("plugin")


class LeaseLost(StoreError):
    """Another worker took the rule's lease over: this worker's cycle must not write."""

    code = "lease_lost"


@dataclass(frozen=True, slots=True)
class RuleTick:
    """One scheduled tick of a rule (the Celery engine's ``rule_ticks`` row)."""

    rule: str
    tick_s: float
    state: str  # queued, running, done, failed, skipped
    holder: str | None
    error: str | None
    updated_s: float
    attempts: int = 0  # times a task started it
    lookback_s: float | None = None  # a replay tick's history
    # running: its task's lease; queued: claimed but not yet known sent (``claim_tick``
    # with ``send_lease_s``), sent again once it runs out (``unsent_ticks``)
    lease_until_s: float | None = None


# the holder of a rule's lease kept for a reclaimed tick (``reclaim_ticks``)
_RESERVED = "reclaimed:"


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine: Engine = _make_engine(url, echo=echo)

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- schema -------------------------------------------------------------------------

    def migrate(self) -> str:
        """Upgrade the schema to the newest revision; returns it."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        # Workers starting together all migrate: alembic's module state admits one
        # migration per process at a time, and on PostgreSQL an advisory lock makes the
        # others wait and then find the schema current (SQLite has one writer anyway).
        with _MIGRATING, self._begin() as conn:
            if self.backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return self.schema_revision() or ""

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self._connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_schema(self) -> None:
        """Raise ``ConfigError`` unless the schema is at the newest revision."""
        revision = self.schema_revision()
        if revision != HEAD_REVISION:
            raise ConfigError(
                f"the store {self!r} is at schema revision {revision or 'none'}, this version "
                f"needs {HEAD_REVISION}: run `plugin-backend db upgrade`"
            )

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- incidents ----------------------------------------------------------------------

    def save_incident(
        self,
        incident: Incident,
        annotation: Annotation | None,
        now_s: float,
        *,
        holder: str | None = None,
    ) -> None:
        """Insert or update ``incident``; queue ``annotation`` when it changed.

        With ``holder``: only while ``holder`` holds the incident's lease
        (``incident_lease``: its rule's, or its alert's), else ``LeaseLost`` and nothing
        is written (the lease row stays locked until commit, so no other worker takes
        it over in between)."""
        row = {name: getattr(incident, name) for name in _INCIDENT_FIELDS}
        row["labels"] = dict(incident.labels)
        row["report"] = dict(incident.report) if incident.report is not None else None
        row["updated_s"] = now_s
        with self._begin() as conn:
            if holder is not None:
                _check_lease(conn, incident_lease(incident), holder)
            existing = conn.execute(
                sa.select(incidents.c.created_s).where(incidents.c.id == incident.id)
            ).first()
            if existing is None:
                row["created_s"] = now_s
                conn.execute(incidents.insert().values(**row))
            else:
                row["created_s"] = existing.created_s
                conn.execute(incidents.update().where(incidents.c.id == incident.id).values(**row))
            if annotation is not None:
                _queue(conn, annotation, now_s)

    def get_incident(self, incident_id: str) -> Incident | None:
        with self._connect() as conn:
            row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
        return _incident(row._mapping) if row is not None else None

    def list_incidents(
        self,
        *,
        rule: str | None = None,
        status: str | None = None,
        service: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        created_before_s: float | None = None,
        created_after_s: float | None = None,
        limit: int = 200,
    ) -> list[Incident]:
        """Newest first; ``since``/``until`` select incidents overlapping that range,
        ``created_after``/``created_before`` those first saved in that range."""
        query = sa.select(incidents).order_by(incidents.c.start_s.desc())
        if rule is not None:
            query = query.where(incidents.c.rule == rule)
        if status is not None:
            query = query.where(incidents.c.status == status)
        if since_s is not None:
            query = query.where(incidents.c.end_s >= since_s)
        if until_s is not None:
            query = query.where(incidents.c.start_s <= until_s)
        if created_before_s is not None:
            query = query.where(incidents.c.created_s < created_before_s)
        if created_after_s is not None:
            query = query.where(incidents.c.created_s >= created_after_s)
        if service is None:
            query = query.limit(limit)
        with self._connect() as conn:
            found = [_incident(r._mapping) for r in conn.execute(query)]
        if service is not None:  # labels are JSON: filter here, portable across databases
            found = [i for i in found if i.labels.get("service") == service][:limit]
        return found

    # -- rule leases --------------------------------------------------------------------

    def acquire_rule(self, rule: str, holder: str, now_s: float, *, lease_s: float) -> bool:
        """Lease ``rule``'s cycle to ``holder`` for ``lease_s``; ``False`` while another
        holder's lease runs. A crashed worker's lease simply expires."""
        values = {"holder": holder, "until_s": now_s + lease_s}
        try:
            with self._begin(conflict_ok=True) as conn:
                taken = conn.execute(
                    rule_leases.update()
                    .where(rule_leases.c.rule == rule)
                    .where(sa.or_(rule_leases.c.holder == holder, rule_leases.c.until_s < now_s))
                    .values(dict(values))
                ).rowcount
                if taken:
                    return True
                exists = conn.execute(
                    sa.select(rule_leases.c.rule).where(rule_leases.c.rule == rule)
                ).first()
                if exists is not None:
                    return False
                conn.execute(rule_leases.insert().values(rule=rule, **values))
        except IntegrityError:  # another worker created it at the same instant
            return False
        return True

    def release_rule(self, rule: str, holder: str) -> None:
        """End ``holder``'s lease of ``rule`` now (no-op if it was taken over)."""
        with self._begin() as conn:
            _release(conn, rule, holder)

    # -- rule ticks (the Celery engine's schedule) ---------------------------------------

    def claim_tick(
        self,
        rule: str,
        tick_s: float,
        now_s: float,
        *,
        lookback_s: float | None = None,
        send_lease_s: float | None = None,
    ) -> bool:
        """Record ``rule``'s tick at ``tick_s`` as queued; ``False`` if it already is (another
        scheduler enqueued it): only the caller that gets ``True`` enqueues it.
        ``lookback_s``: a replay tick's history, kept for when it is sent again.
        ``send_lease_s``: the claim holds until the caller reports it sent
        (``mark_tick_sent``); unreported for that long (the broker was down, the caller
        died), the tick is handed out again by ``unsent_ticks``."""
        try:
            with self._begin(conflict_ok=True) as conn:
                conn.execute(
                    rule_ticks.insert().values(
                        rule=rule,
                        tick_ms=_tick_ms(tick_s),
                        state="queued",
                        updated_s=now_s,
                        attempts=0,
                        lookback_s=lookback_s,
                        lease_until_s=None if send_lease_s is None else now_s + send_lease_s,
                    )
                )
        except IntegrityError:
            return False
        return True

    def mark_tick_sent(self, rule: str, tick_s: float) -> None:
        """The claimed tick is on the broker: ``unsent_ticks`` leaves it alone (no-op once
        a task started it)."""
        with self._begin() as conn:
            conn.execute(
                rule_ticks.update()
                .where(
                    rule_ticks.c.rule == rule,
                    rule_ticks.c.tick_ms == _tick_ms(tick_s),
                    rule_ticks.c.state == "queued",
                )
                .values(lease_until_s=None)
            )

    def unsent_ticks(self, now_s: float, *, lease_s: float, limit: int = 100) -> list[RuleTick]:
        """The claimed ticks never reported sent whose claim ran out (``claim_tick`` with
        ``send_lease_s``), each leased again for ``lease_s`` to one caller, who sends it
        and reports it (``mark_tick_sent``). A live tick of a rule that has a later tick
        is not sent but marked skipped (superseded: the later one's cycle covers it, as
        ``start_tick`` does); a replay tick is always sent. Any number of callers: each
        tick goes to one per lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the
        conditional update elsewhere)."""
        unsent = sa.and_(rule_ticks.c.state == "queued", rule_ticks.c.lease_until_s < now_s)
        found: list[RuleTick] = []
        with self._begin() as conn:
            rows = _lock_oldest_ticks(conn, unsent, limit)
            for row in rows:
                this = (rule_ticks.c.rule == row.rule, rule_ticks.c.tick_ms == row.tick_ms)
                later = conn.execute(
                    sa.select(rule_ticks.c.tick_ms).where(
                        rule_ticks.c.rule == row.rule, rule_ticks.c.tick_ms > row.tick_ms
                    )
                ).first()
                if later is not None and row.lookback_s is None:
                    skipped = conn.execute(
                        rule_ticks.update()
                        .where(*this, unsent)
                        .values(
                            state="skipped",
                            error="superseded (never sent: broker unreachable)",
                            lease_until_s=None,
                            updated_s=now_s,
                        )
                    ).rowcount
                    if skipped and (row.holder or "").startswith(_RESERVED):
                        _release(conn, row.rule, row.holder)
                    continue
                won = conn.execute(
                    rule_ticks.update()
                    .where(*this, unsent)
                    .values(lease_until_s=now_s + lease_s, updated_s=now_s)
                ).rowcount
                if won:
                    found.append(_rule_tick(row._mapping, lease_until_s=now_s + lease_s))
        return found

    def start_tick(
        self, rule: str, tick_s: float, holder: str, now_s: float, *, lease_s: float
    ) -> str:
        """Move the tick to ``running`` for ``holder``, leased for ``lease_s`` (renewed with
        ``renew_tick``). Returns ``"started"``, else why not: ``"duplicate"`` (it already
        ran or runs: a message delivered twice) or ``"superseded"`` (a later tick of the
        rule already ran; marked skipped). A replay tick (``lookback_s``) is never
        superseded: a later live tick's cycle does not cover its history. A tick
        enqueued without a scheduler (no row yet) starts too. A tick queued again after
        its worker died (``reclaim_ticks``) takes over the rule's lease reserved for it."""
        tick = _tick_ms(tick_s)
        this = (rule_ticks.c.rule == rule, rule_ticks.c.tick_ms == tick)
        running = {"state": "running", "holder": holder, "updated_s": now_s}
        running["lease_until_s"] = now_s + lease_s
        try:
            with self._begin(conflict_ok=True) as conn:
                row = conn.execute(
                    sa.select(rule_ticks.c.state, rule_ticks.c.holder, rule_ticks.c.lookback_s)
                    .where(*this)
                    .with_for_update()
                ).first()
                reserved = (
                    row.holder
                    if row is not None and (row.holder or "").startswith(_RESERVED)
                    else None
                )
                # a reclaimed tick holds the rule: a later tick may be "running" only on
                # its way to being skipped, so only one that ran supersedes it
                ran = ("done", "failed") if reserved else ("running", "done", "failed")
                later = conn.execute(
                    sa.select(rule_ticks.c.tick_ms).where(
                        rule_ticks.c.rule == rule,
                        rule_ticks.c.tick_ms > tick,
                        rule_ticks.c.state.in_(ran),
                    )
                ).first()
                replay = row is not None and row.lookback_s is not None
                if later is not None and not replay:
                    conn.execute(
                        rule_ticks.update()
                        .where(*this, rule_ticks.c.state == "queued")
                        .values(state="skipped", error="superseded", updated_s=now_s)
                    )
                    if reserved:
                        _release(conn, rule, reserved)
                    return "superseded"
                if row is None:
                    conn.execute(
                        rule_ticks.insert().values(rule=rule, tick_ms=tick, attempts=1, **running)
                    )
                    return "started"
                started = conn.execute(
                    rule_ticks.update()
                    .where(*this, rule_ticks.c.state == "queued")
                    .values(attempts=rule_ticks.c.attempts + 1, **running)
                ).rowcount
                if not started:
                    return "duplicate"
                if reserved:
                    conn.execute(
                        rule_leases.update()
                        .where(rule_leases.c.rule == rule, rule_leases.c.holder == reserved)
                        .values(holder=holder)
                    )
        except IntegrityError:  # another task inserted it at the same instant
            return "duplicate"
        return "started"

    def renew_tick(
        self, rule: str, tick_s: float, holder: str, now_s: float, *, lease_s: float
    ) -> bool:
        """Extend ``holder``'s lease of its running tick; ``False`` if it was reclaimed."""
        return self._update_held_tick(rule, tick_s, holder, {"lease_until_s": now_s + lease_s})

    def finish_tick(
        self,
        rule: str,
        tick_s: float,
        state: str,
        now_s: float,
        error: str | None = None,
        *,
        holder: str | None = None,
    ) -> bool:
        """Record how a started tick ended: ``done``, ``failed`` (with ``error``) or
        ``skipped`` (another worker held the rule's lease). With ``holder``: only while
        it still runs the tick (``False`` if it was reclaimed meanwhile)."""
        query = rule_ticks.update().where(
            rule_ticks.c.rule == rule, rule_ticks.c.tick_ms == _tick_ms(tick_s)
        )
        if holder is not None:
            query = query.where(rule_ticks.c.state == "running", rule_ticks.c.holder == holder)
        with self._begin() as conn:
            return bool(
                conn.execute(
                    query.values(state=state, error=error, updated_s=now_s, lease_until_s=None)
                ).rowcount
            )

    def requeue_tick(self, rule: str, tick_s: float, holder: str, now_s: float) -> bool:
        """Put a started tick back in the queue, unsent, for a scheduler to send again
        at once (``unsent_ticks``): a replay tick that found its rule held by another
        worker, whose live tick does not cover its history. ``False`` if ``holder``
        no longer runs it."""
        values = {"state": "queued", "holder": None, "lease_until_s": now_s, "updated_s": now_s}
        return self._update_held_tick(rule, tick_s, holder, values)

    def _update_held_tick(
        self, rule: str, tick_s: float, holder: str, values: Mapping[str, Any]
    ) -> bool:
        """Set ``values`` on the tick while ``holder`` still runs it (``False`` if not)."""
        with self._begin() as conn:
            return bool(
                conn.execute(
                    rule_ticks.update()
                    .where(
                        rule_ticks.c.rule == rule,
                        rule_ticks.c.tick_ms == _tick_ms(tick_s),
                        rule_ticks.c.state == "running",
                        rule_ticks.c.holder == holder,
                    )
                    .values(dict(values))
                ).rowcount
            )

    def reclaim_ticks(
        self,
        now_s: float,
        *,
        hold_s: float,
        max_attempts: int,
        send_lease_s: float | None = None,
        limit: int = 100,
    ) -> list[RuleTick]:
        """Queue again the running ticks whose lease ran out (their worker died), and
        return them, for the caller to send again (``send_lease_s``: as ``claim_tick``'s,
        until the caller reports it sent). The dead holder's lease of the rule
        passes to the tick (for ``hold_s``): the rule's later ticks wait for it, and
        ``start_tick`` hands that lease to whichever task runs it. A tick started
        ``max_attempts`` times is marked failed instead. Any number of callers: each
        tick is reclaimed by one (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the
        conditional update elsewhere)."""
        send_until = None if send_lease_s is None else now_s + send_lease_s
        expired = sa.and_(rule_ticks.c.state == "running", rule_ticks.c.lease_until_s < now_s)
        reclaimed: list[RuleTick] = []
        with self._begin() as conn:
            rows = _lock_oldest_ticks(conn, expired, limit)
            for row in rows:
                this = (rule_ticks.c.rule == row.rule, rule_ticks.c.tick_ms == row.tick_ms)
                lost = f"worker lost: {row.holder}"
                if row.attempts >= max_attempts:
                    conn.execute(
                        rule_ticks.update()
                        .where(*this, expired)
                        .values(
                            state="failed",
                            error=f"{lost} ({row.attempts} attempts)",
                            lease_until_s=None,
                            updated_s=now_s,
                        )
                    )
                    continue
                reserved = f"{_RESERVED}{row.tick_ms}"
                moved = conn.execute(
                    rule_leases.update()
                    .where(rule_leases.c.rule == row.rule, rule_leases.c.holder == row.holder)
                    .values(holder=reserved, until_s=now_s + hold_s)
                ).rowcount
                won = conn.execute(
                    rule_ticks.update()
                    .where(*this, expired)
                    .values(
                        state="queued",
                        holder=reserved if moved else None,
                        error=lost,
                        lease_until_s=send_until,
                        updated_s=now_s,
                    )
                ).rowcount
                if won:
                    reclaimed.append(
                        _rule_tick(row._mapping, state="queued", lease_until_s=send_until)
                    )
        return reclaimed

    def rule_ticks(self, rule: str | None = None, limit: int = 200) -> list[RuleTick]:
        """Recorded ticks, newest first."""
        query = sa.select(rule_ticks).order_by(rule_ticks.c.tick_ms.desc()).limit(limit)
        if rule is not None:
            query = query.where(rule_ticks.c.rule == rule)
        with self._connect() as conn:
            return [_rule_tick(r._mapping) for r in conn.execute(query)]

    def purge_ticks(self, older_than_s: float) -> int:
        """Forget ticks last updated before ``older_than_s``; returns how many."""
        with self._begin() as conn:
            return int(
                conn.execute(
                    rule_ticks.delete().where(rule_ticks.c.updated_s < older_than_s)
                ).rowcount
            )

    # -- outbox -------------------------------------------------------------------------

    def claim_due(self, now_s: float, *, lease_s: float, limit: int = 20) -> list[OutboxRow]:
        """Pending rows due now, leased to the caller for ``lease_s``.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so any number of workers claim at once,
        each getting rows no other is claiming, without waiting for each other. SQLite
        has one writer at a time; there the conditional update decides."""
        free = sa.or_(outbox.c.lease_until_s.is_(None), outbox.c.lease_until_s < now_s)
        with self._begin() as conn:
            candidates = conn.execute(
                sa.select(outbox)
                .where(outbox.c.state == "pending", outbox.c.next_attempt_s <= now_s, free)
                .order_by(outbox.c.next_attempt_s, outbox.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            claimed: list[OutboxRow] = []
            for row in candidates:
                won = conn.execute(
                    outbox.update()
                    .where(outbox.c.id == row.id, free)
                    .values(lease_until_s=now_s + lease_s)
                ).rowcount
                if won:
                    claimed.append(_outbox_row(row._mapping))
        return claimed

    def mark_in_doubt(self, row_id: int, now_s: float) -> None:
        """Record, before sending, that an attempt is starting (its outcome may be lost)."""
        self._update_outbox(row_id, in_doubt=True, updated_s=now_s)

    def mark_delivered(self, row: OutboxRow, grafana_id: int, now_s: float) -> None:
        """Grafana holds ``row.version``; the row stays pending if it changed meanwhile."""
        with self._begin() as conn:
            current = conn.execute(sa.select(outbox.c.version).where(outbox.c.id == row.id)).one()
            done = current.version == row.version
            conn.execute(
                outbox.update()
                .where(outbox.c.id == row.id)
                .values(
                    grafana_id=grafana_id,
                    delivered_version=row.version,
                    in_doubt=False,
                    state="delivered" if done else "pending",
                    attempts=0,
                    last_error=None,
                    lease_until_s=None,
                    next_attempt_s=now_s,
                    updated_s=now_s,
                )
            )

    def forget_grafana_id(self, row_id: int, now_s: float) -> None:
        """The annotation was deleted in Grafana: create it afresh on the next attempt."""
        self._update_outbox(row_id, grafana_id=None, delivered_version=0, updated_s=now_s)

    def mark_retry(
        self, row: OutboxRow, error: str, next_attempt_s: float, now_s: float, *, in_doubt: bool
    ) -> None:
        self._update_outbox(
            row.id,
            attempts=row.attempts + 1,
            last_error=error[:2000],
            next_attempt_s=next_attempt_s,
            lease_until_s=None,
            in_doubt=in_doubt,
            updated_s=now_s,
        )

    def mark_failed(self, row: OutboxRow, error: str, now_s: float) -> None:
        """Grafana refused the annotation itself (4xx): keep it, visibly, for an operator."""
        self._update_outbox(
            row.id,
            state="failed",
            attempts=row.attempts + 1,
            last_error=error[:2000],
            lease_until_s=None,
            in_doubt=False,
            updated_s=now_s,
        )

    def retry_failed(self, now_s: float) -> int:
        """Put every failed row back in the queue (after the operator fixed the cause)."""
        with self._begin() as conn:
            result = conn.execute(
                outbox.update()
                .where(outbox.c.state == "failed")
                .values(state="pending", attempts=0, next_attempt_s=now_s, updated_s=now_s)
            )
        return int(result.rowcount)

    def outbox_rows(self, state: str | None = None, limit: int = 200) -> list[OutboxRow]:
        query = sa.select(outbox).order_by(outbox.c.updated_s.desc()).limit(limit)
        if state is not None:
            query = query.where(outbox.c.state == state)
        with self._connect() as conn:
            return [_outbox_row(r._mapping) for r in conn.execute(query)]

    def outbox_counts(self) -> dict[str, int]:
        return self._count_states(outbox, ("pending", "delivered", "failed"))

    # -- alert intake -------------------------------------------------------------------

    def enqueue_alert(
        self, key: str, source: str, payload: Mapping[str, Any], now_s: float
    ) -> bool:
        """Queue one alert for the worker; ``False`` when that key was queued before."""
        try:
            with self._begin(conflict_ok=True) as conn:
                conn.execute(
                    alert_jobs.insert().values(
                        key=key,
                        source=source,
                        payload=dict(payload),
                        state="pending",
                        attempts=0,
                        received_s=now_s,
                        updated_s=now_s,
                    )
                )
        except IntegrityError:
            return False
        return True

    def pending_alerts(self, limit: int = 50) -> list[AlertJob]:
        query = (
            sa.select(alert_jobs)
            .where(alert_jobs.c.state == "pending")
            .order_by(alert_jobs.c.received_s, alert_jobs.c.id)
            .limit(limit)
        )
        with self._connect() as conn:
            return [
                AlertJob(r.id, r.key, r.source, dict(r.payload), r.attempts)
                for r in conn.execute(query)
            ]

    def claim_alerts(
        self, now_s: float, *, lease_s: float, limit: int = 10, skip: Collection[int] = ()
    ) -> list[AlertJob]:
        """Pending alerts (oldest first, not in ``skip``) leased to the caller for
        ``lease_s``, as ``claim_due`` does for the outbox (``FOR UPDATE SKIP LOCKED``)."""
        free = sa.or_(alert_jobs.c.lease_until_s.is_(None), alert_jobs.c.lease_until_s < now_s)
        with self._begin() as conn:
            candidates = conn.execute(
                sa.select(alert_jobs)
                .where(alert_jobs.c.state == "pending", free, alert_jobs.c.id.not_in(list(skip)))
                .order_by(alert_jobs.c.received_s, alert_jobs.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            claimed: list[AlertJob] = []
            for r in candidates:
                won = conn.execute(
                    alert_jobs.update()
                    .where(alert_jobs.c.id == r.id, free)
                    .values(lease_until_s=now_s + lease_s)
                ).rowcount
                if won:
                    claimed.append(AlertJob(r.id, r.key, r.source, dict(r.payload), r.attempts))
        return claimed

    def finish_alert(self, job: AlertJob, now_s: float, error: str | None = None) -> None:
        """Done, or (with ``error``) retried later; failed for good after 5 attempts."""
        attempts = job.attempts + (1 if error else 0)
        state = "done" if error is None else ("failed" if attempts >= 5 else "pending")
        with self._begin() as conn:
            conn.execute(
                alert_jobs.update()
                .where(alert_jobs.c.id == job.id)
                .values(
                    state=state,
                    attempts=attempts,
                    last_error=error,
                    lease_until_s=None,
                    updated_s=now_s,
                )
            )

    def alert_counts(self) -> dict[str, int]:
        return self._count_states(alert_jobs, ("pending", "done", "failed"))

    # -- retention ----------------------------------------------------------------------

    def purge(self, older_than_s: float, *, undeliverable: bool = False) -> dict[str, int]:
        """Delete closed incidents that ended before ``older_than_s`` and whose annotation
        was delivered, finished alert jobs as old, and alert leases free since then. An
        undelivered annotation keeps its incident, unless ``undeliverable`` (no Grafana
        is configured: it never will be)."""
        with self._begin() as conn:
            undelivered = sa.select(outbox.c.incident_id).where(outbox.c.state != "delivered")
            old = sa.select(incidents.c.id).where(
                incidents.c.status == "closed", incidents.c.end_s < older_than_s
            )
            if not undeliverable:
                old = old.where(incidents.c.id.not_in(undelivered))
            ids = [r.id for r in conn.execute(old)]
            if ids:
                conn.execute(outbox.delete().where(outbox.c.incident_id.in_(ids)))
                conn.execute(incidents.delete().where(incidents.c.id.in_(ids)))
            jobs = conn.execute(
                alert_jobs.delete().where(
                    alert_jobs.c.state != "pending", alert_jobs.c.updated_s < older_than_s
                )
            ).rowcount
            # an alert's lease (``incident_lease``) is free again once released: one row
            # per alert incident would otherwise pile up
            leases = conn.execute(
                rule_leases.delete().where(
                    rule_leases.c.rule.like("alert:%"), rule_leases.c.until_s < older_than_s
                )
            ).rowcount
        return {"incidents": len(ids), "alert_jobs": int(jobs), "alert_leases": int(leases)}

    # -- plumbing -----------------------------------------------------------------------

    def _count_states(self, table: sa.Table, states: tuple[str, ...]) -> dict[str, int]:
        """Rows of ``table`` per ``state`` (every one of ``states`` present, 0 if none)."""
        counts = dict.fromkeys(states, 0)
        with self._connect() as conn:
            query = sa.select(table.c.state, sa.func.count()).group_by(table.c.state)
            for state, n in conn.execute(query):
                counts[str(state)] = int(n)
        return counts

    def _update_outbox(self, row_id: int, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(outbox.update().where(outbox.c.id == row_id).values(**values))

    @contextmanager
    def _begin(self, *, conflict_ok: bool = False) -> Iterator[Connection]:
        """One transaction; a database error is a ``StoreError`` (``conflict_ok``: a
        constraint violation is the caller's to handle, raised as ``IntegrityError``)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            if conflict_ok:
                raise
            raise StoreError(f"store {self!r}: {exc.__class__.__name__}: {exc}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self!r}: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self!r}: {exc.__class__.__name__}: {exc}") from exc


def _tick_ms(tick_s: float) -> int:
    return round(tick_s * 1000.0)


def _rule_tick(row: Mapping[Any, Any], **override: Any) -> RuleTick:
    values = {**row, **override}
    return RuleTick(
        rule=values["rule"],
        tick_s=values["tick_ms"] / 1000.0,
        state=values["state"],
        holder=values["holder"],
        error=values["error"],
        updated_s=values["updated_s"],
        attempts=int(values["attempts"] or 0),
        lookback_s=values["lookback_s"],
        lease_until_s=values["lease_until_s"],
    )


def _lock_oldest_ticks(conn: Connection, where: Any, limit: int) -> Sequence[Any]:
    """The oldest ``limit`` rule ticks matching ``where``, locked for this transaction
    (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: concurrent callers get disjoint rows)."""
    return conn.execute(
        sa.select(rule_ticks)
        .where(where)
        .order_by(rule_ticks.c.tick_ms)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def _release(conn: Connection, rule: str, holder: str) -> None:
    conn.execute(
        rule_leases.update()
        .where(rule_leases.c.rule == rule, rule_leases.c.holder == holder)
        .values(until_s=0.0)
    )


def incident_lease(incident: Incident) -> str:
    """The lease (a ``rule_leases`` name) under which ``incident`` is written: its rule's
    for a rule's incident, ``alert:<id>`` for an alert's (the alert handler and the note
    writer share it). Rule names start with a letter or digit: the two never meet."""
    if incident.origin == "rule" and incident.rule is not None:
        return incident.rule
    return f"alert:{incident.id}"


def _check_lease(conn: Connection, rule: str, holder: str) -> None:
    held = conn.execute(
        sa.select(rule_leases.c.rule)
        .where(rule_leases.c.rule == rule, rule_leases.c.holder == holder)
        .with_for_update()
    ).first()
    if held is None:
        raise LeaseLost(f"rule {rule}: another worker took its lease over; nothing written")


def _queue(conn: Connection, annotation: Annotation, now_s: float) -> None:
    desired = {
        "dashboard_uid": annotation.dashboard_uid,
        "panel_id": annotation.panel_id,
        "time_ms": annotation.time_ms,
        "time_end_ms": annotation.time_end_ms,
        "text": annotation.text,
        "tags": list(annotation.tags),
    }
    current = conn.execute(
        sa.select(outbox).where(outbox.c.incident_id == annotation.incident_id)
    ).first()
    if current is None:
        conn.execute(
            outbox.insert().values(
                incident_id=annotation.incident_id,
                **desired,
                version=1,
                delivered_version=0,
                grafana_id=None,
                in_doubt=False,
                state="pending",
                attempts=0,
                next_attempt_s=now_s,
                updated_s=now_s,
            )
        )
        return
    mapping = current._mapping
    if all(mapping[k] == v for k, v in desired.items()):
        return
    conn.execute(
        outbox.update()
        .where(outbox.c.id == mapping["id"])
        .values(
            **desired,
            version=mapping["version"] + 1,
            state="pending",
            attempts=0,
            next_attempt_s=now_s,
            updated_s=now_s,
        )
    )


def _incident(row: Mapping[Any, Any]) -> Incident:
    values = dict(row)
    values["labels"] = dict(values["labels"] or {})
    return Incident(**values)


def _outbox_row(row: Mapping[Any, Any]) -> OutboxRow:
    values = {k: v for k, v in row.items() if k != "lease_until_s"}
    values["tags"] = list(values["tags"] or [])
    values["in_doubt"] = bool(values["in_doubt"])
    return OutboxRow(**values)


def _make_engine(url: str, *, echo: bool) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"PLUGIN_BACKEND_STORE_URL: {exc}") from None
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":  # psycopg 3 (the `postgres` extra), not psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return sa.create_engine(parsed, echo=echo, pool_pre_ping=True, future=True)
        except ImportError:
            raise ConfigError(
                "PLUGIN_BACKEND_STORE_URL names PostgreSQL but its driver is missing: "
                "pip install 'plugin-backend[postgres]'"
            ) from None
    if parsed.database and parsed.database != ":memory:":
        try:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"PLUGIN_BACKEND_STORE_URL: cannot create its folder: {exc}"
            ) from None
    engine = sa.create_engine(parsed, echo=echo, future=True, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # WAL: the API's readers never block the worker's writer; busy_timeout: concurrent
        # writers (API intake, worker) wait instead of failing; foreign keys cascade.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
