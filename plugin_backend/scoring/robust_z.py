"""The rolling robust z-score: no seasonality, no model, the simplest baseline."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from plugin_backend.scoring.base import Band, Detector, check_int
from plugin_backend.scoring.robust import BAND_K, flat_floor, rolling_median_sigma
from plugin_backend.types import FloatArray

__all__ = ["RobustZ"]


class RobustZ(Detector):
    """Rolling median +- ``BAND_K`` robust sigmas of the trailing ``window`` points
    (sigma = max(1.4826 * MAD, q75 / 1.150) of the deviations from that median):
    the classic robust z-score, no seasonality -- a daily swing sits inside its band.

    Cost: O(n * window log window) as sorted row blocks (numpy SIMD sort),
    ~0.27 s per 100k points at the default window (~370k points/s). Point ``i``
    is scored once 7 earlier finite points exist in its window.
    """

    name: ClassVar[str] = "robust_z"
    min_points: ClassVar[int] = 8

    def __init__(
        self, *, window: int = 288, sensitivity: float = 1.0, min_deviation: float = 0.0
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        self.window = check_int("window", window, self.min_points, 100_000)

    def history_points(self, step_s: float) -> int:
        return self.window + 1  # the floor's quantum looks at one more point

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        med, sigma = rolling_median_sigma(values, self.window, self.min_points - 1)
        half = np.maximum(BAND_K * sigma, flat_floor(values, self.window, med))
        return Band(med, med - half, med + half)
