"""The tick scheduler of the Celery engine: every rule's tick is enqueued once.

Ticks sit on a grid (``floor(now / every) * every``), so every scheduler computes the
same ticks; a scheduler enqueues a tick only if it inserted its ``rule_ticks`` row, so
any number of schedulers (one per worker process, on any machine) never double one,
and one stopping loses nothing while another runs. Only the current tick of a rule is
enqueued: ticks missed while no scheduler ran are not caught up (a cycle looks back
hours, so the next one finds what they would have).

A claim holds for ``SEND_LEASE_S`` until its scheduler reports the tick on the broker.
A tick claimed but never sent (the broker unreachable, the scheduler dead in between)
is sent again, by whichever scheduler polls first once that runs out, as soon as the
broker takes it: unless a later tick of the rule exists by then, which covers it (it
is marked skipped, as ``start_tick`` does to a tick overtaken by a later one). A tick
sent twice (its report lost) still runs once: a task starts a tick only from
``queued``. A scheduler whose broker refuses a tick claims nothing more in that poll,
so another scheduler, whose broker may answer, gets those ticks.

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
    "SEND_LEASE_S",
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
# A claimed tick not reported sent within this is sent again: well past one send (a
# refused connection fails within a second; a sent tick is reported in milliseconds).
SEND_LEASE_S = 5.0


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
        """Send again the ticks whose worker died and those claimed but never sent, then
        enqueue every tick that is due and not yet queued; returns how many it sent."""
        now = self.clock()
        periods = {rule.name: rule.every_s for rule in self.rules().rules}
        periods.update(HOUSEKEEPING)
        sent = self.reclaim(now)
        sent += self.resend_unsent(now, periods)
        for name, every_s in periods.items():
            tick = tick_of(now, every_s)
            if self._last.get(name) == tick:
                continue
            # a replay is no live tick: it may wait in the queue for longer
            replay = name not in HOUSEKEEPING and self.since_s is not None
            lookback = self.since_s if replay and name not in self._last else None
            try:
                claimed = self.store.claim_tick(
                    name, tick, now, lookback_s=lookback, send_lease_s=SEND_LEASE_S
                )
            except BackendError as exc:  # the store down: retried next poll
                log.warning("scheduler: %s tick %.0f not claimed: %s", name, tick, exc)
                continue
            self._last[name] = tick
            if not claimed:
                continue  # another scheduler has it
            # a tick that waited a whole period in the queue is stale: the next is due
            expires = tick + every_s if lookback is None else tick + 3600.0
            if not self._send(name, tick, expires, lookback):
                break  # the broker is down: the claim is sent again once it is back
            sent += 1
        return sent

    def _send(self, name: str, tick: float, expires_s: float, lookback: float | None) -> bool:
        """Send a claimed tick and report it sent; ``False`` if the broker refused it (the
        claim then runs out and the tick is sent again: ``resend_unsent``)."""
        try:
            if name in HOUSEKEEPING:
                self.send.housekeeping(name, expires_s=expires_s)
            else:
                self.send.rule_tick(name, tick, expires_s=expires_s, lookback_s=lookback)
        except (BackendError, OSError) as exc:
            log.warning("scheduler: %s tick %.0f not sent, sent later: %s", name, tick, exc)
            return False
        try:
            self.store.mark_tick_sent(name, tick)
        except BackendError as exc:  # sent again once its claim runs out: runs once still
            log.warning("scheduler: %s tick %.0f sent, not recorded: %s", name, tick, exc)
        return True

    def resend_unsent(self, now: float, periods: dict[str, float]) -> int:
        """Send the ticks claimed but never sent (their claim ran out); returns how many.
        Each may wait in the queue a period from now (the rule's lease for a reclaimed
        tick, an hour for a replay)."""
        try:
            ticks = self.store.unsent_ticks(now, lease_s=SEND_LEASE_S)
        except BackendError as exc:
            log.warning("scheduler: unsent ticks not read: %s", exc)
            return 0
        sent = 0
        for tick in ticks:
            wait = max(periods.get(tick.rule, 60.0), RULE_LEASE_S)
            if tick.lookback_s is not None:
                wait = 3600.0
            log.warning("%s tick %.0f: claimed, never sent: sending it", tick.rule, tick.tick_s)
            if not self._send(tick.rule, tick.tick_s, now + wait, tick.lookback_s):
                break
            sent += 1
        return sent

    def reclaim(self, now: float) -> int:
        """Queue again, and send, the ticks whose worker died; returns how many."""
        try:
            ticks = self.store.reclaim_ticks(
                now, hold_s=RULE_LEASE_S, max_attempts=TICK_ATTEMPTS, send_lease_s=SEND_LEASE_S
            )
        except BackendError as exc:
            log.warning("scheduler: lost ticks not reclaimed: %s", exc)
            return 0
        sent = 0
        for tick in ticks:
            log.warning(
                "rule %s tick %.0f: its worker died (%s), sent again",
                tick.rule,
                tick.tick_s,
                tick.error,
            )
            # it may wait in the queue as long as the rule is kept for it
            if not self._send(tick.rule, tick.tick_s, now + RULE_LEASE_S, tick.lookback_s):
                break  # the broker is down: sent once it is back (``resend_unsent``)
            sent += 1
        return sent

    def run_forever(self, stop: threading.Event) -> None:
        log.info("scheduler running %d rules", len(self.rules().rules))
        while not stop.is_set():
            self.run_once()
            stop.wait(self.poll_s)
