"""Times and durations as users type them: unix seconds, ISO-8601, ``30m``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from plugin_backend.errors import InvalidTimeRange

__all__ = ["parse_duration_s", "parse_time_s"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
# Bounds keep every time in milliseconds well inside int64 (numpy grids, Prometheus).
MAX_DURATION_S = 10 * 366 * 86_400.0  # ten years
MAX_TIME_S = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def parse_duration_s(text: str | float, *, what: str = "duration") -> float:
    """``"30m"``, ``"1h"``, ``"90s"``, ``"2d"`` or a number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise InvalidTimeRange(f"{what}: {text!r} is not a duration such as 30m, 1h or 90s")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if not seconds > 0:
        raise InvalidTimeRange(f"{what} must be positive, got {text!r}")
    if not seconds <= MAX_DURATION_S:
        raise InvalidTimeRange(f"{what} must be at most ten years, got {text!r}")
    return seconds


def parse_time_s(text: str | float, *, what: str = "time") -> float:
    """Unix seconds (number or numeric string) or ISO-8601 (naive = UTC), from 1970 to
    the year 9999."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return _in_range(float(text), text, what)
    raw = str(text).strip()
    try:
        return _in_range(float(raw), text, what)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidTimeRange(
            f"{what}: {text!r} is neither unix seconds nor ISO-8601 (2026-01-01T12:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _in_range(parsed.timestamp(), text, what)


def _in_range(seconds: float, text: str | float, what: str) -> float:
    if not 0.0 <= seconds <= MAX_TIME_S:  # NaN fails too
        raise InvalidTimeRange(f"{what}: {text!r} is not a time between 1970 and the year 9999")
    return seconds
