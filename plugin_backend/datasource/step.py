"""Turn a panel's range, ``intervalMs`` and ``maxDataPoints`` into a query step."""

from __future__ import annotations

import math

from plugin_backend.errors import LimitExceeded
from plugin_backend.timegrid import align_range, points_in
from plugin_backend.types import TimeRange

__all__ = ["align_range", "choose_step", "points_in"]

MIN_STEP_S = 1.0


def choose_step(
    time_range: TimeRange,
    *,
    interval_ms: float | None,
    max_data_points: int | None,
    max_points: int,
    min_step_s: float = MIN_STEP_S,
) -> float:
    """The step, in seconds, for a panel query.

    Grafana's own Prometheus datasource logic: the panel interval is the wish,
    ``maxDataPoints`` the ceiling on resolution, and the step never drops
    below ``min_step_s``. Whole seconds above one second keep results on a
    stable grid across refreshes. Raises ``LimitExceeded`` when the panel asks
    for more points per series than ``max_points``.
    """
    if max_data_points is not None and max_data_points > max_points:
        raise LimitExceeded(
            f"maxDataPoints={max_data_points} exceeds the limit of {max_points} points per "
            "series (PLUGIN_BACKEND_MAX_POINTS_PER_SERIES)",
            limit="max_points_per_series",
        )
    duration_s = time_range.duration_s
    step_s = min_step_s
    if interval_ms is not None:
        step_s = max(step_s, interval_ms / 1000.0)
    if max_data_points:
        step_s = max(step_s, duration_s / max_data_points)
    if step_s > 1.0:
        step_s = float(math.ceil(step_s - 1e-9))
    points = points_in(time_range, step_s)
    if points > max_points:
        raise LimitExceeded(
            f"the query would return {points} points per series; the limit is {max_points} "
            "(PLUGIN_BACKEND_MAX_POINTS_PER_SERIES): shorten the range or widen the interval",
            limit="max_points_per_series",
        )
    return step_s
