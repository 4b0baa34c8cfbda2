"""Frozen value objects shared by every layer.

Times are unix seconds (float) everywhere inside the backend; epoch
milliseconds exist only on the Grafana wire (``datasource/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from plugin_backend.errors import InvalidTimeRange

__all__ = ["ChangeEvent", "FloatArray", "Labels", "Series", "TimeRange", "format_series_name"]

FloatArray = npt.NDArray[np.float64]
Labels = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A closed interval ``[start_s, end_s]`` in unix seconds."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.start_s) and np.isfinite(self.end_s)):
            raise InvalidTimeRange("time range bounds must be finite numbers")
        if self.end_s < self.start_s:
            raise InvalidTimeRange(
                f"time range ends before it starts (from={self.start_s}, to={self.end_s})"
            )

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def format_series_name(labels: Labels) -> str:
    """Prometheus' own notation: ``name{a="x", b="y"}`` (labels sorted, name first)."""
    name = labels.get("__name__", "")
    rest = sorted((k, v) for k, v in labels.items() if k != "__name__")
    if not rest:
        return name or "{}"
    inner = ", ".join(f'{k}="{_escape_label_value(v)}"' for k, v in rest)
    return f"{name}{{{inner}}}"


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """One labelled series: parallel arrays of unix-second timestamps and values.

    Values may hold NaN (missing or Prometheus ``NaN``) and ±inf.
    """

    labels: Labels
    timestamps_s: FloatArray
    values: FloatArray
    _frozen_labels: Labels = field(init=False, repr=False)

    def __post_init__(self) -> None:
        frozen = MappingProxyType(dict(self.labels))
        object.__setattr__(self, "labels", frozen)
        object.__setattr__(self, "_frozen_labels", frozen)
        ts = np.asarray(self.timestamps_s, dtype=np.float64)
        vs = np.asarray(self.values, dtype=np.float64)
        if ts.shape != vs.shape or ts.ndim != 1:
            raise ValueError(f"timestamps {ts.shape} and values {vs.shape} must be equal 1-D")
        object.__setattr__(self, "timestamps_s", ts)
        object.__setattr__(self, "values", vs)

    @property
    def name(self) -> str:
        return format_series_name(self.labels)

    @property
    def metric(self) -> str:
        return self.labels.get("__name__", "")

    def __len__(self) -> int:
        return int(self.timestamps_s.shape[0])


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """Something changed at ``time_s`` (a deploy annotated in Grafana, ...): root cause
    weighs it like a series that appeared then. ``labels`` name what changed."""

    time_s: float
    kind: str
    text: str
    labels: Labels = field(default_factory=dict)
