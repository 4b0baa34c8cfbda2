"""An ensemble: the transformer's band averaged with a seasonal baseline's.

The two fail differently — the transformer adapts within a window and knows
yesterday's shape from its seasonal channel; the baseline keeps a per-hour
profile over days — so their averaged band is steadier than either. Where one
member has no band yet (warm-up), the other's is used alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from plugin_backend.errors import InsufficientData, InvalidTarget
from plugin_backend.scoring.base import Band, Detector
from plugin_backend.types import FloatArray

__all__ = ["EnsembleDetector"]

DEFAULT_MEMBERS = ("transformer", "holt_winters")


class EnsembleDetector(Detector):
    name = "ensemble"
    min_points = 8

    def __init__(
        self,
        *,
        sensitivity: float = 1.0,
        min_deviation: float = 0.0,
        members: Sequence[str] = DEFAULT_MEMBERS,
    ) -> None:
        super().__init__(sensitivity=sensitivity, min_deviation=min_deviation)
        from plugin_backend.scoring.registry import get_detector

        if not members or "ensemble" in members:
            raise InvalidTarget("ensemble members must be other detectors")
        self.members = [get_detector(name) for name in members]

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
        """View ``k`` averages the members' view ``k``; a member with fewer views
        (a baseline has one) lends its primary band to each."""
        finite = int(np.count_nonzero(np.isfinite(values)))
        member_views = [
            member._views(timestamps_s, values, needed_from=needed_from)
            for member in self.members
            if finite >= member.min_points
        ]
        if not member_views:
            raise InsufficientData(min(m.min_points for m in self.members), finite)
        count = max(len(views) for views in member_views)
        return [
            _mean_band([views[k] if k < len(views) else views[0] for views in member_views])
            for k in range(count)
        ]


def _mean_band(bands: list[Band]) -> Band:
    stacked = {
        part: np.stack([getattr(band, part) for band in bands])
        for part in ("expected", "lower", "upper")
    }
    # nanmean warns on all-NaN columns (warm-up); those rightly stay NaN.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Band(
            np.nanmean(stacked["expected"], axis=0),
            np.nanmean(stacked["lower"], axis=0),
            np.nanmean(stacked["upper"], axis=0),
        )
