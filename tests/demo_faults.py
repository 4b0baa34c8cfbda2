"""Where the demo estate's injected faults fall, for tests that replay one.

The demo draws each incident's start per (seed, 4 h block), so tests ask for it
instead of hard-coding a time.
"""

from __future__ import annotations

from plugin_backend.adapters.demo import FAULTS, incidents_between

#: 2025-11-24 20:00 UTC: the day the tests have always replayed.
NEAR_S = 1_764_014_400.0


def demo_fault_start(fault: str, *, seed: int = 7, after_s: float = NEAR_S) -> float:
    """Start of the first ``fault`` incident of the demo estate at or after ``after_s``."""
    if fault not in FAULTS:
        raise ValueError(f"unknown demo fault {fault!r} (one of {', '.join(FAULTS)})")
    for incident in incidents_between(after_s, after_s + 7 * 86_400, seed=seed):
        if incident.fault == fault and incident.start_s >= after_s:
            return incident.start_s
    raise AssertionError(f"no {fault} in the week after {after_s}")
