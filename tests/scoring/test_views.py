"""Detectors with several views (``Detector._views``): a point's score is its largest
score against any view, and the band shown is where the views agree."""

from __future__ import annotations

import numpy as np

from plugin_backend.scoring.base import Band, Detector, intersect_bands
from plugin_backend.types import FloatArray


def _band(expected: float, half: float, n: int) -> Band:
    e = np.full(n, expected)
    return Band(e, e - half, e + half)


class _TwoViews(Detector):
    """Expects 0 +- 1 and, in its second view, 2 +- 1."""

    name = "two_views"

    def history_points(self, step_s: float) -> int:
        return 0

    def _band(self, timestamps_s: FloatArray, values: FloatArray, **_: object) -> Band:
        return _band(0.0, 1.0, values.shape[0])

    def _views(self, timestamps_s: FloatArray, values: FloatArray, **_: object) -> list[Band]:
        return [self._band(timestamps_s, values), _band(2.0, 1.0, values.shape[0])]


def test_the_score_is_the_worst_view_and_the_band_their_overlap() -> None:
    ts = np.arange(10.0)
    values = np.array([1.0, 1.5, 0.0, -1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    scored = _TwoViews().score(ts, values)
    # 1.0 is on both bands' edges; 1.5 is outside the first; 0 on the second's edge;
    # -1 one width below the first and 3 below the second; 3 is 3 widths above the first
    np.testing.assert_allclose(scored.score[:5], [1.0, 1.5, 2.0, 3.0, 3.0])
    np.testing.assert_allclose(scored.lower, 1.0)
    np.testing.assert_allclose(scored.upper, 1.0)


def test_intersect_bands_clips_expected_collapses_disjoint_and_skips_unknown() -> None:
    n = 3
    first = Band(
        np.array([0.0, 0.0, np.nan]), np.array([-1.0, -1.0, np.nan]), np.array([1.0, 1.0, np.nan])
    )
    second = Band(np.array([0.8, 5.0, 4.0]), np.array([0.5, 4.0, 3.0]), np.array([1.5, 6.0, 5.0]))
    shown = intersect_bands([first, second])
    # overlap [0.5, 1]: expected 0 is clipped onto it
    assert (shown.lower[0], shown.upper[0], shown.expected[0]) == (0.5, 1.0, 0.5)
    # no overlap: both edges collapse on the first view's expected value
    assert (shown.lower[1], shown.upper[1], shown.expected[1]) == (0.0, 0.0, 0.0)
    # the first view has no band yet: the second one is shown
    assert (shown.lower[2], shown.upper[2], shown.expected[2]) == (3.0, 5.0, 4.0)
    none = intersect_bands([_band(np.nan, 1.0, n), _band(np.nan, 1.0, n)])
    assert np.isnan(none.lower).all()
    assert np.isnan(none.upper).all()


class _HalfBlind(Detector):
    """Two views, each narrow on every other row: each sees half of a series' spikes."""

    name = "half_blind"

    def history_points(self, step_s: float) -> int:
        return 0

    def _band(self, timestamps_s: FloatArray, values: FloatArray, **_: object) -> Band:
        return self._views(timestamps_s, values)[0]

    def _views(self, timestamps_s: FloatArray, values: FloatArray, **_: object) -> list[Band]:
        n = values.shape[0]
        even = np.arange(n) % 2 == 0
        zero = np.zeros(n)
        half_even, half_odd = np.where(even, 1.0, 20.0), np.where(even, 20.0, 1.0)
        return [Band(zero, -half_even, half_even), Band(zero, -half_odd, half_odd)]


def test_habitual_spikes_page_at_most_about_one_percent_of_points_across_views() -> None:
    # 4% of points spike; the calibration widens the bands until ~1% would page at
    # once. Calibrating each view alone would let each page its own 1% (2.2% here).
    rng = np.random.default_rng(0)
    n = 6000
    values = rng.normal(0.0, 0.3, n)
    spikes = rng.random(n) < 0.04
    values[spikes] += rng.uniform(4.0, 12.0, int(spikes.sum()))
    scored = _HalfBlind().score(np.arange(n, dtype=np.float64), values)
    assert np.mean(scored.score[2000:] >= 3.0) <= 0.0125
