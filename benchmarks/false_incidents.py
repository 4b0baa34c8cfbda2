"""True and false incidents of a watch rule over a replay with known faults.

A rule's history is replayed as ``worker --since`` does: one cycle over the whole
span (scores and alarms are causal, so each window is what a live cycle would have
found). An incident is *true* when its span overlaps an injected fault's window and
*false* when it overlaps none. A fault's window runs from ``ONSET_TOLERANCE_S``
before its onset to the end of its symptoms plus ``GRACE_S``: a window the detector
opens while the series returns to normal belongs to the fault, and so does a
persisting anomaly paged again after the re-alert interval (it overlaps the fault).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from plugin_backend.incidents import Incident
from plugin_backend.rules import Rule, parse_rules
from plugin_backend.watch import RuleCycle

__all__ = [
    "GRACE_S",
    "ONSET_TOLERANCE_S",
    "FaultWindow",
    "RuleTally",
    "replay_incidents",
    "tally",
    "total",
    "watch_rule",
]

#: A window may start a little before the fault's own onset (the detector dates a run
#: from its first point; the benchmark's delay loop allows the same).
ONSET_TOLERANCE_S = 120.0
#: After a fault's symptoms end, an incident opening within this long is still the
#: fault's (the band follows the return to normal with a lag; recovery takes a few points).
GRACE_S = 600.0


@dataclass(frozen=True, slots=True)
class FaultWindow:
    start_s: float
    end_s: float  # when its symptoms end (math.inf: not within the replay)

    def overlaps(self, incident: Incident) -> bool:
        return (
            incident.end_s >= self.start_s - ONSET_TOLERANCE_S
            and incident.start_s <= self.end_s + GRACE_S
        )


@dataclass(frozen=True, slots=True)
class RuleTally:
    rule: str
    replayed_s: float
    true: int  # incidents overlapping a fault's window
    false: int  # incidents overlapping none
    faults: int  # windows of the faults that touch the rule's series
    found: int  # of those, the windows some incident overlaps

    @property
    def false_per_day(self) -> float:
        return self.false * 86_400.0 / self.replayed_s


def watch_rule(name: str, expr: str, *, rate_control: bool, every_s: float = 30.0) -> Rule:
    return parse_rules(
        f"rules:\n  - name: {name}\n    expr: '{expr}'\n    every: {every_s:.0f}s\n"
        f"    rate_control: {'true' if rate_control else 'false'}\n"
    ).rules[0]


def replay_incidents(cycle: RuleCycle, rule: Rule, start_s: float, end_s: float) -> list[Incident]:
    """The incidents one replay cycle of ``rule`` over ``[start_s, end_s]`` opens."""
    result = cycle.run(rule, end_s, [], lookback_s=end_s - start_s)
    return sorted(
        (i for i, _ in result.changed if i.id in result.opened and i.start_s >= start_s),
        key=lambda i: i.start_s,
    )


def tally(
    rule: str,
    incidents: Iterable[Incident],
    faults: Sequence[FaultWindow],
    replayed_s: float,
    *,
    affecting: Sequence[FaultWindow] | None = None,
) -> RuleTally:
    """``incidents`` against every fault's window (``faults``); faults found among those
    whose symptoms include the rule's series (``affecting``, by default all)."""
    incidents = list(incidents)
    affecting = faults if affecting is None else affecting
    true = sum(1 for i in incidents if any(f.overlaps(i) for f in faults))
    found = sum(1 for f in affecting if any(f.overlaps(i) for i in incidents))
    return RuleTally(rule, replayed_s, true, len(incidents) - true, len(affecting), found)


def total(name: str, tallies: Sequence[RuleTally]) -> RuleTally:
    return RuleTally(
        name,
        math.fsum(t.replayed_s for t in tallies),
        sum(t.true for t in tallies),
        sum(t.false for t in tallies),
        sum(t.faults for t in tallies),
        sum(t.found for t in tallies),
    )
