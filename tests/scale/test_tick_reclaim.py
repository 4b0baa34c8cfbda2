"""The scheduler sends again a tick whose worker died (its lease ran out), once however
many schedulers poll, a replay tick as a replay; on SQLite and a real PostgreSQL store.
(With real Celery workers and ``kill -9``: ``test_faults.py``.)"""

from __future__ import annotations

from plugin_backend.rules import parse_rules
from plugin_backend.scale.scheduler import TICK_LEASE_S, TickScheduler
from plugin_backend.store import Store

RULES = parse_rules("rules:\n  - name: r\n    expr: up\n    every: 60s\n")
T = 1_780_000_020.0  # on the rule's 60 s grid


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[tuple[str, float, float | None]] = []

    def rule_tick(
        self, rule: str, tick_s: float, *, expires_s: float, lookback_s: float | None = None
    ) -> None:
        self.ticks.append((rule, tick_s, lookback_s))

    def housekeeping(self, name: str, *, expires_s: float) -> None:
        return


def test_a_dead_workers_replay_tick_is_sent_again_once_as_a_replay(store: Store) -> None:
    clock = [T + 1.0]
    sent = [Recorder(), Recorder()]
    schedulers = [
        TickScheduler(store, lambda: RULES, s, clock=lambda: clock[0], since_s=43_200.0)
        for s in sent
    ]
    for scheduler in schedulers:
        scheduler.run_once()
    assert [r.ticks for r in sent] == [[("r", T, 43_200.0)], []]  # once, as a replay
    assert store.start_tick("r", T, "w1", now_s=T + 2, lease_s=TICK_LEASE_S) == "started"
    clock[0] = T + 2 + TICK_LEASE_S - 1  # alive (its lease runs): nothing is sent
    for scheduler in schedulers:
        scheduler.run_once()
    assert [len(r.ticks) for r in sent] == [1, 0]
    clock[0] = T + 2 + TICK_LEASE_S + 1  # w1 died: one scheduler sends it again
    for scheduler in schedulers:
        scheduler.run_once()
    again = [t for r in sent for t in r.ticks[1:] if t[0] == "r"]
    assert again == [("r", T, 43_200.0)]
    (tick,) = store.rule_ticks("r")
    assert (tick.state, tick.attempts, tick.error) == ("queued", 1, "worker lost: w1")
