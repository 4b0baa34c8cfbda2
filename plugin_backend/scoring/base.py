"""The detector interface: a template method that validates input, asks the
subclass for a causal expected band, and turns the band into scores.

Conventions every detector keeps:

* **Causal**: ``band.expected[i]``, ``lower[i]``, ``upper[i]`` depend only on
  ``values[:i]`` (strictly earlier points) and timestamps up to ``i``. So the
  score of point ``i`` uses data up to ``i`` — what a live system knows.
* **Bounded memory**: nothing before ``i - history_points(step_s)`` influences
  point ``i``; a cache may rescore only a tail with that much context.
* **Score**: ``0`` on the expected value, ``1`` on the band edge, ``> 1`` outside
  (alert rules stay ``> 1``). NaN where the value or the band is unknown
  (missing points, warm-up).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from plugin_backend.errors import InsufficientData, InvalidTarget
from plugin_backend.types import FloatArray

__all__ = ["Band", "Detector", "ScoredSeries", "band_score", "median_step_s"]


@dataclass(frozen=True, slots=True, eq=False)
class Band:
    """Expected value and the band around it, per point (NaN where unknown)."""

    expected: FloatArray
    lower: FloatArray
    upper: FloatArray


@dataclass(frozen=True, slots=True, eq=False)
class ScoredSeries:
    timestamps_s: FloatArray
    values: FloatArray
    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray

    def __len__(self) -> int:
        return int(self.values.shape[0])


def band_score(
    values: FloatArray, band: Band, *, sensitivity: float = 1.0, min_deviation: float = 0.0
) -> tuple[Band, FloatArray]:
    """Scale the band by ``sensitivity`` (2 = half as wide), floor each half-width at
    ``min_deviation`` (absolute units), and score each point against it."""
    expected = band.expected
    above = np.maximum(band.upper - expected, 0.0) / sensitivity
    below = np.maximum(expected - band.lower, 0.0) / sensitivity
    tiny = np.finfo(np.float64).eps * np.maximum(np.abs(expected), 1.0)
    above = np.maximum(above, max(min_deviation, 0.0)) + tiny
    below = np.maximum(below, max(min_deviation, 0.0)) + tiny
    deviation = values - expected
    with np.errstate(invalid="ignore"):
        score = np.where(deviation >= 0, deviation / above, -deviation / below)
    return Band(expected, expected - below, expected + above), score


def median_step_s(timestamps_s: FloatArray) -> float:
    """The typical sampling interval (robust to gaps)."""
    if timestamps_s.shape[0] < 2:
        return 0.0
    return float(np.median(np.diff(timestamps_s)))


class Detector(ABC):
    """Base class: subclasses implement ``_band`` (and ``history_points``)."""

    name: ClassVar[str]
    #: Finite points needed before the first point can be scored.
    min_points: ClassVar[int] = 8

    def __init__(self, *, sensitivity: float = 1.0, min_deviation: float = 0.0) -> None:
        if not sensitivity > 0:
            raise InvalidTarget(f"sensitivity must be > 0, got {sensitivity}")
        if min_deviation < 0:
            raise InvalidTarget(f"min_deviation must be >= 0, got {min_deviation}")
        self.sensitivity = float(sensitivity)
        self.min_deviation = float(min_deviation)

    def score(
        self, timestamps_s: FloatArray, values: FloatArray, *, needed_from: int = 0
    ) -> ScoredSeries:
        """Score every point; with ``needed_from`` the caller (a cache) only needs points
        from that index on, and a detector may leave earlier ones NaN to save time."""
        ts = np.asarray(timestamps_s, dtype=np.float64)
        vs = np.asarray(values, dtype=np.float64)
        if ts.ndim != 1 or ts.shape != vs.shape:
            raise InvalidTarget(f"timestamps {ts.shape} and values {vs.shape} must be equal 1-D")
        if ts.size and not np.all(np.isfinite(ts)):
            raise InvalidTarget("timestamps must be finite")
        if ts.size > 1 and not np.all(np.diff(ts) > 0):
            raise InvalidTarget("timestamps must be strictly increasing")
        finite = int(np.count_nonzero(np.isfinite(vs)))
        if finite < self.min_points:
            raise InsufficientData(self.min_points, finite)
        clean = np.where(np.isfinite(vs), vs, np.nan)
        band = self._band(ts, clean, needed_from=needed_from)
        band, score = band_score(
            clean, band, sensitivity=self.sensitivity, min_deviation=self.min_deviation
        )
        return ScoredSeries(ts, clean, band.expected, band.lower, band.upper, score)

    @abstractmethod
    def _band(self, timestamps_s: FloatArray, values: FloatArray, *, needed_from: int = 0) -> Band:
        """Causal expected band; ``values`` has NaN where points are missing. Points
        before ``needed_from`` may be left NaN (their band is already known)."""

    @abstractmethod
    def history_points(self, step_s: float) -> int:
        """How many earlier points can influence one point's band at this step."""
