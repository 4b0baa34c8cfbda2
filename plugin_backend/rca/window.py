"""A window that follows the symptom: where to split baseline from incident.

The symptom's own onset (``changepoint.onset``: Bayesian online change points, no
window to guess) is the reference. Causes may start before it, a slow leak long
before: the incident part starts ``LEAD_S`` before the onset, or earlier by as long
as the symptom has already been in trouble (a symptom that ramped for 40 min had a
cause ramping before that). The baseline is what comes before, at least
``MIN_BASELINE_POINTS`` samples when the data has them, up to ``MAX_BASELINE_S``
(older data adds little and costs time; a day would mix in the daily cycle).
An onset that would leave less normal history before it than trouble after it (a
daily cycle drifting away from the first regime) is not followed: the window is then
``LEAD_S``.
"""

from __future__ import annotations

import numpy as np

from plugin_backend.rca.changepoint import onset
from plugin_backend.types import Series

__all__ = ["LEAD_S", "MAX_BASELINE_S", "MIN_BASELINE_POINTS", "symptom_window"]

LEAD_S = 1800.0  # how long before the symptom's onset a cause may start, at least
MIN_BASELINE_POINTS = 48
MAX_BASELINE_S = 6 * 3600.0


def symptom_window(symptom: Series, *, at_s: float, step_s: float) -> tuple[float, float]:
    """``(window_s, baseline_s)`` for a ranking at ``at_s`` over the symptom's data."""
    t = symptom.timestamps_s
    ok = np.isfinite(t) & np.isfinite(symptom.values) & (t <= at_s + 1e-6)
    first = float(np.min(t[ok])) if np.any(ok) else at_s - LEAD_S
    start = max(first, at_s - MAX_BASELINE_S - 4 * LEAD_S)
    found = onset(symptom, at_s=at_s, start_s=start)
    trouble = at_s - found if found is not None else 0.0
    if trouble > 0.5 * (at_s - start):
        # Trouble over most of the history (a daily cycle drifting away from the first
        # regime): no normal period to compare with, so no onset to follow.
        trouble = 0.0
    window = trouble + max(LEAD_S, trouble)
    available = at_s - window - first
    baseline = max(available, MIN_BASELINE_POINTS * step_s)
    return window, float(min(baseline, MAX_BASELINE_S))
