"""The sustained-deviation band: the mean of the last few residuals must stay normal."""

from __future__ import annotations

import numpy as np

from plugin_backend.scoring.base import Band, band_score
from plugin_backend.scoring.sustained import ONE_SHOT, sustained_band

STEP = 300.0


def _flat_base(n: int, half: float = 3.5) -> Band:
    expected = np.zeros(n)
    return Band(expected, expected - half, expected + half)


def _noise(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 1_700_000_000.0 + STEP * np.arange(n), rng.normal(0.0, 1.0, n)


def test_on_independent_noise_the_band_of_a_mean_shrinks_by_sqrt_points() -> None:
    ts, values = _noise(3000)
    band = sustained_band(ts, values, _flat_base(3000), points=8, window=2000)
    # Half-width for the last point: 8 residuals averaged, spread ~1/sqrt(8) of one.
    half = (band.upper - band.lower)[-500:] / 2
    np.testing.assert_allclose(np.median(half), 8 * ONE_SHOT * 3.5 / np.sqrt(8), rtol=0.15)
    assert np.mean(band_score(values, band)[1][-1000:] > 1) < 0.002


def test_hours_just_inside_the_point_band_fall_out_of_the_sustained_band() -> None:
    ts, values = _noise(3000)
    values[2500:2560] -= 2.5  # every point still inside the point band (3.5) mostly
    base = _flat_base(3000)
    point = band_score(values, base)[1]
    sustained = band_score(values, sustained_band(ts, values, base, points=8, window=2000))[1]
    assert np.mean(point[2500:2560] > 1) < 0.5
    assert np.mean(sustained[2510:2560] > 1) > 0.8
    assert np.mean(sustained[2000:2500] > 1) < 0.01


def test_a_points_band_uses_only_earlier_points() -> None:
    ts, values = _noise(2600)
    base = _flat_base(2600)
    before = sustained_band(ts, values, base, points=8, window=2000)
    for k in (2200, 2400):
        moved = values.copy()
        moved[k] += 50.0
        after = sustained_band(ts, moved, base, points=8, window=2000)
        for edge in ("lower", "upper"):
            np.testing.assert_array_equal(
                getattr(after, edge)[: k + 1], getattr(before, edge)[: k + 1]
            )


def test_a_tail_with_enough_context_gets_the_same_band() -> None:
    """Spreads are measured on the absolute time grid, not from the array's start."""
    ts, values = _noise(4000)
    base = _flat_base(4000)
    full = sustained_band(ts, values, base, points=8, window=2000)
    start = 4000 - 100 - 2000 - 8 - 64 - 37  # an offset off the block grid
    tail = sustained_band(
        ts[start:], values[start:], _flat_base(4000 - start), points=8, window=2000
    )
    np.testing.assert_allclose(tail.upper[-100:], full.upper[-100:], rtol=1e-12)


def test_too_few_points_in_the_run_give_no_band() -> None:
    ts, values = _noise(2600)
    values[2300:2310] = np.nan
    band = sustained_band(ts, values, _flat_base(2600), points=8, window=2000)
    assert np.isnan(band.upper[2305:2310]).all()
    assert np.isfinite(band.upper[2400:]).all()
