"""An ensemble: a point is out of band when any member's slowest view says so.

Each member contributes its slowest view (``Detector._slowest_view``): a
baseline its one band, the transformer its forecast made a block earlier. By
default STL's band and the transformer's delayed forecast: STL knows the daily
and weekly shape from days of history; the delayed forecast adds an expectation
that does not follow a metric ramping away from its level. Scores are the
largest over the members' bands (calibrated together, see ``base``); the band
shown is where they agree. Where one member has no band yet (warm-up), the
others judge alone.

**No more views.** Two mechanisms chosen watching development scores were removed
after measuring them over all five nab-dev corpora and the synthetic one with the
rate-controlled alarms (``python -m benchmarks detection --ablations``):
muting the transformer where the day it copies held an anomaly (worst corpus 41.9
with, 41.8 without; it cost artificialWithAnomaly and realTweets), and a
sustained-deviation view of STL's mean residual (worst 44.6 with, 48.1 without:
realTraffic 44.6 -> 48.1, realAdExchange 48.7 -> 49.5, but realTweets 56.0 ->
54.9, synthetic 63.2 -> 59.5). Hours just outside the band are now the alarm
layer's business (``scoring.alarm_rate``'s run trigger), for every detector.

Development scores of earlier designs, with band-edge alarms (realTraffic /
artificial / synthetic seeds 1-3): before muting, STL + transformer 77.0 /
84.6 / 60.2, 56.7, 64.7; before STL's phase correction, STL + transformer 77.8 /
76.7 / 61.1, 56.8, 64.8; Holt-Winters + transformer 72.3 / 88.4 / 50.6, 46.4,
59.1 (Holt-Winters follows a slow ramp point by point, STL's slower trend does
not); Holt-Winters + STL + transformer 71.7 / 81.2 / 58.7, 54.7, 63.5; the
members' bands averaged (the first design) 71.1 / 65.0 / 49.8, 43.7, 51.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from plugin_backend.errors import InsufficientData, InvalidTarget
from plugin_backend.scoring.base import (
    Band,
    Detector,
)
from plugin_backend.types import FloatArray

if TYPE_CHECKING:
    from plugin_backend.scoring.registry import DetectorFactory

__all__ = ["EnsembleDetector"]

DEFAULT_MEMBERS = ("stl", "transformer")


class EnsembleDetector(Detector):
    name = "ensemble"
    min_points = 8

    def __init__(
        self,
        *,
        sensitivity: float = 1.0,
        min_deviation: float = 0.0,
        members: Sequence[str] = DEFAULT_MEMBERS,
        factory: DetectorFactory | None = None,
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        from plugin_backend.scoring.registry import get_detector

        if not members or "ensemble" in members:
            raise InvalidTarget("ensemble members must be other detectors")
        create = factory.create if factory is not None else get_detector
        self.members = [create(name) for name in members]

    def history_points(self, step_s: float) -> int:
        return max(member.history_points(step_s) for member in self.members)

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        return self._views(timestamps_s, values, needed_from=needed_from)[0]

    def _views(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> list[Band]:
        finite = int(np.count_nonzero(np.isfinite(values)))
        active = [m for m in self.members if finite >= m.min_points]
        if not active:
            raise InsufficientData(min(m.min_points for m in self.members), finite)
        return [
            member._slowest_view(timestamps_s, values, needed_from=needed_from) for member in active
        ]
