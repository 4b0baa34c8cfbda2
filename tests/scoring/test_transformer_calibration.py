"""The transformer band's calibration on its own past residuals (``_calibration``):
a robust spread of the residuals in the model's claimed standard deviations, so
the band is ``BAND_K`` typical residuals wide and a few spikes do not widen it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugin_backend.scoring.model import Forecaster, ForecasterConfig
from plugin_backend.scoring.transformer import _CAL_CLIP, BAND_K, TransformerDetector

TINY = ForecasterConfig(context=32, horizon=8, patch=8, d_model=16, layers=1, heads=2, ff=32)


@pytest.fixture(scope="module")
def detector() -> TransformerDetector:
    torch.manual_seed(0)
    model = Forecaster(TINY)
    model.eval()
    return TransformerDetector(model=model, calibration_points=512)


def _factor(det: TransformerDetector, residuals: np.ndarray, half: float) -> float:
    n = residuals.size + 8
    expected = np.zeros(n)
    values = np.concatenate([residuals, np.zeros(8)])
    lower, upper = expected - half, expected + half
    factor = det._calibration(values, expected, lower, upper, np.array([n - 8]))
    assert factor is not None
    return float(factor[0])


def test_a_model_calibrated_on_gaussian_noise_gets_band_k_sigmas(
    detector: TransformerDetector,
) -> None:
    rng = np.random.default_rng(0)
    # outer half-width 2.326: the model claims sigma = 1, which is right
    factor = _factor(detector, rng.normal(0, 1, 512), half=2.3263)
    assert factor * 2.3263 == pytest.approx(BAND_K, rel=0.1)


def test_over_or_under_confidence_rescales_the_band(detector: TransformerDetector) -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 512)
    # a model twice too confident (claims sigma 0.5) is widened twice as much as one
    # that is right; one twice too cautious keeps its own band (never narrowed: one
    # factor serves both sides of an asymmetric band, see the module docstring)
    right = _factor(detector, noise, half=2.3263)
    narrow = _factor(detector, noise, half=2.3263 / 2)
    wide = _factor(detector, noise, half=2.3263 * 2)
    assert right > 1.2
    assert narrow == pytest.approx(2 * right, rel=1e-6)
    assert right / 2 < 1.0 == wide == _CAL_CLIP[0]


def test_a_few_spikes_in_the_trailing_window_do_not_widen_the_band(
    detector: TransformerDetector,
) -> None:
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 1, 512)
    spiky = noise.copy()
    spiky[rng.choice(512, 40, replace=False)] = 60.0  # ~8% huge residuals
    quiet = _factor(detector, noise, half=2.3263)
    assert _factor(detector, spiky, half=2.3263) == pytest.approx(quiet, rel=0.15)


def test_the_factor_is_clipped_and_needs_enough_residuals(detector: TransformerDetector) -> None:
    assert _factor(detector, np.zeros(512), half=1.0) == _CAL_CLIP[0]
    assert _factor(detector, np.full(512, 1e6), half=1.0) == _CAL_CLIP[1]
    assert _factor(detector, np.full(10, 1e6), half=1.0) == 1.0  # < 64 residuals: as predicted


def test_an_idle_series_with_regular_quantum_jumps_stays_below_an_instant_page(
    detector: TransformerDetector,
) -> None:
    # sits at 0, jumps to 20 for one point every 100: the band is at least half the
    # quantum (10), so a jump scores about 2, under the window policy's instant 3
    n = 2000
    ts = 1_700_000_000.0 + 300.0 * np.arange(n)
    values = np.zeros(n)
    values[::100] = 20.0
    scored = detector.score(ts, values)
    assert np.nanmax(scored.score[600:]) < 3.0
    # each view's band (the shown band is where they overlap) is floored around its own
    # expected value
    for band in detector._views(ts, values):
        assert np.all(band.upper[600:] - band.expected[600:] >= 10.0 - 1e-9)
