"""The tick scheduler of the Celery engine: every rule's tick is enqueued once.

Ticks sit on a grid (``floor(now / every) * every``), so every scheduler computes the
same ticks; a scheduler enqueues a tick only if it inserted its ``rule_ticks`` row, so
any number of schedulers (one per worker process, on any machine) never double one,
and one stopping loses nothing while another runs. Only the current tick of a rule is
enqueued: ticks missed while no scheduler ran are not caught up (a cycle looks back
hours, so the next one finds what they would have). A scheduler that dies between
claiming a tick and sending it loses that tick; the next one follows ``every`` later.

A running tick holds a lease of ``TICK_LEASE_S`` that its task renews every
``TICK_RENEW_S``. Each poll, a scheduler queues again the ticks whose lease ran out
(their worker died: ``kill -9``, OOM, a lost machine) and sends them at once, with the
dead worker's lease of the rule kept for them, so the rule's later ticks wait for it:
a killed tick runs again within ``TICK_LEASE_S`` + one poll of its worker's death (plus
its wait in the queue), at most ``TICK_ATTEMPTS`` times in all (a tick that kills its
worker every time is then marked failed).

Delivery, the alert queue and retention are enqueued the same way, on grids of their
own, under names no rule can have (rule names start with a letter or digit).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from plugin_backend.errors import BackendError
from plugin_backend.rules import RuleSet
from plugin_backend.store import Store
from plugin_backend.worker import RULE_LEASE_S

__all__ = [
    "HOUSEKEEPING",
    "TICK_ATTEMPTS",
    "TICK_LEASE_S",
    "TICK_RENEW_S",
    "TaskSender",
    "TickScheduler",
    "tick_of",
]

log = logging.getLogger(__name__)

# name in rule_ticks -> how often it is enqueued (seconds); ":notes": the sweep that
# sends again the LLM notes whose task was lost (``tasks.NOTE_SWEEP_AGE_S``)
HOUSEKEEPING = {":deliver": 2.0, ":alerts": 2.0, ":notes": 60.0, ":purge": 3600.0}
TICK_RETENTION_S = 86_400.0  # rule_ticks rows kept this long (purged with ":purge")
# A running tick's lease, renewed by its task every TICK_RENEW_S: shorter than the rule's
# lease (RULE_LEASE_S), so a dead worker's tick is reclaimed while the rule is still
# held for it, and no later tick of the rule slips in before it.
TICK_LEASE_S = 12.0
TICK_RENEW_S = 3.0
TICK_ATTEMPTS = 3


class TaskSender(Protocol):
    """Where the scheduler sends work (the Celery app's queues)."""

    def rule_tick(
        self, rule: str, tick_s: float, *, expires_s: float, lookback_s: float | None = None
    ) -> None: ...

    def housekeeping(self, name: str, *, expires_s: float) -> None: ...


def tick_of(now_s: float, every_s: float) -> float:
    """The latest tick at or before ``now_s`` on the grid of period ``every_s``."""
    return math.floor(now_s / every_s) * every_s


class TickScheduler:
    def __init__(
        self,
        store: Store,
        rules: Callable[[], RuleSet],
        send: TaskSender,
        *,
        clock: Callable[[], float] = time.time,
        poll_s: float = 1.0,
        since_s: float | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.send = send
        self.clock = clock
        self.poll_s = poll_s
        # ``--since``: each rule's first tick replays this much history (a replay finds
        # what live cycles would have: ``watch``), in place of its live tick
        self.since_s = since_s
        self._last: dict[str, float] = {}  # name -> last tick this scheduler handled

    def run_once(self) -> int:
        """Send again the ticks whose worker died, then enqueue every tick that is due
        and not yet queued; returns how many it sent."""
        now = self.clock()
        sent = self.reclaim(now)
        due = [(rule.name, rule.every_s) for rule in self.rules().rules]
        due += list(HOUSEKEEPING.items())
        for name, every_s in due:
            tick = tick_of(now, every_s)
            if self._last.get(name) == tick:
                continue
            # a replay is no live tick: it may wait in the queue for longer
            replay = name not in HOUSEKEEPING and self.since_s is not None
            lookback = self.since_s if replay and name not in self._last else None
            try:
                if not self.store.claim_tick(name, tick, now, lookback_s=lookback):
                    self._last[name] = tick  # another scheduler has it
                    continue
                # a tick that waited a whole period in the queue is stale: the next is due
                expires = tick + every_s
                if name in HOUSEKEEPING:
                    self.send.housekeeping(name, expires_s=expires)
                elif lookback is not None:
                    self.send.rule_tick(name, tick, expires_s=tick + 3600.0, lookback_s=lookback)
                else:
                    self.send.rule_tick(name, tick, expires_s=expires)
            except (BackendError, OSError) as exc:  # store or broker down: retried next poll
                log.warning("scheduler: %s tick %.0f not enqueued: %s", name, tick, exc)
                continue
            self._last[name] = tick
            sent += 1
        return sent

    def reclaim(self, now: float) -> int:
        """Queue again, and send, the ticks whose worker died; returns how many."""
        try:
            ticks = self.store.reclaim_ticks(now, hold_s=RULE_LEASE_S, max_attempts=TICK_ATTEMPTS)
        except BackendError as exc:
            log.warning("scheduler: lost ticks not reclaimed: %s", exc)
            return 0
        for tick in ticks:
            log.warning(
                "rule %s tick %.0f: its worker died (%s), sent again",
                tick.rule,
                tick.tick_s,
                tick.error,
            )
            try:
                # it may wait in the queue as long as the rule is kept for it
                self.send.rule_tick(
                    tick.rule, tick.tick_s, expires_s=now + RULE_LEASE_S, lookback_s=tick.lookback_s
                )
            except (BackendError, OSError) as exc:
                log.warning(
                    "scheduler: %s tick %.0f not sent again: %s", tick.rule, tick.tick_s, exc
                )
        return len(ticks)

    def run_forever(self, stop: threading.Event) -> None:
        log.info("scheduler running %d rules", len(self.rules().rules))
        while not stop.is_set():
            self.run_once()
            stop.wait(self.poll_s)
