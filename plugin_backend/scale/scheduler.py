"""The tick scheduler of the Celery engine: every rule's tick is enqueued once.

Ticks sit on a grid (``floor(now / every) * every``), so every scheduler computes the
same ticks; a scheduler enqueues a tick only if it inserted its ``rule_ticks`` row, so
any number of schedulers (one per worker process, on any machine) never double one,
and one stopping loses nothing while another runs. Only the current tick of a rule is
enqueued: ticks missed while no scheduler ran are not caught up (a cycle looks back
hours, so the next one finds what they would have). A scheduler that dies between
claiming a tick and sending it loses that tick; the next one follows ``every`` later.

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

__all__ = ["HOUSEKEEPING", "TaskSender", "TickScheduler", "tick_of"]

log = logging.getLogger(__name__)

# name in rule_ticks -> how often it is enqueued (seconds)
HOUSEKEEPING = {":deliver": 2.0, ":alerts": 2.0, ":purge": 3600.0}
TICK_RETENTION_S = 86_400.0  # rule_ticks rows kept this long (purged with ":purge")


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
        """Enqueue every tick that is due and not yet queued; returns how many it sent."""
        now = self.clock()
        sent = 0
        due = [(rule.name, rule.every_s) for rule in self.rules().rules]
        due += list(HOUSEKEEPING.items())
        for name, every_s in due:
            tick = tick_of(now, every_s)
            if self._last.get(name) == tick:
                continue
            try:
                if not self.store.claim_tick(name, tick, now):
                    self._last[name] = tick  # another scheduler has it
                    continue
                # a tick that waited a whole period in the queue is stale: the next is due
                expires = tick + every_s
                if name in HOUSEKEEPING:
                    self.send.housekeeping(name, expires_s=expires)
                elif self.since_s is not None and name not in self._last:
                    # a replay is no live tick: it may wait in the queue for longer
                    self.send.rule_tick(
                        name, tick, expires_s=tick + 3600.0, lookback_s=self.since_s
                    )
                else:
                    self.send.rule_tick(name, tick, expires_s=expires)
            except (BackendError, OSError) as exc:  # store or broker down: retried next poll
                log.warning("scheduler: %s tick %.0f not enqueued: %s", name, tick, exc)
                continue
            self._last[name] = tick
            sent += 1
        return sent

    def run_forever(self, stop: threading.Event) -> None:
        log.info("scheduler running %d rules", len(self.rules().rules))
        while not stop.is_set():
            self.run_once()
            stop.wait(self.poll_s)
