"""The transformer band's width: the robust spread of the forecast's own past
residuals (``baselines.residual_band``), so wherever the forecast is closer than a
rolling median the band is narrower than the robust z-score's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.scoring.model import Forecaster, ForecasterConfig
from plugin_backend.scoring.robust import BAND_K
from plugin_backend.scoring.robust_z import RobustZ
from plugin_backend.scoring.transformer import TransformerDetector
from plugin_backend.scoring.windows import WindowPolicy, alarms

TINY = ForecasterConfig(context=32, horizon=8, patch=8, d_model=16, layers=1, heads=2, ff=32)


@pytest.fixture(scope="module")
def tiny_model() -> Forecaster:
    torch.manual_seed(0)
    model = Forecaster(TINY)
    model.eval()
    return model


def test_the_band_is_band_k_robust_sigmas_of_the_views_own_residuals(
    tiny_model: Forecaster,
) -> None:
    # Under a day of points: the trailing window alone sets the width. Whatever the
    # (random) model forecasts, the band is BAND_K standard deviations of its misses.
    rng = np.random.default_rng(0)
    n = 1200
    ts = 1_700_000_000.0 + 60.0 * np.arange(n)
    values = 5.0 + rng.normal(0.0, 1.0, n)
    detector = TransformerDetector(model=tiny_model, calibration_points=512)
    for band in detector._views(ts, values):
        residuals = values - band.expected
        for i in (700, 900, 1199):
            sigma = np.nanstd(residuals[i - 512 : i])
            half = band.upper[i] - band.expected[i]
            assert half == pytest.approx(BAND_K * sigma, rel=0.2)
            assert band.expected[i] - band.lower[i] == pytest.approx(half)


def test_a_step_on_a_noisy_daily_series_pages_where_the_robust_z_score_sees_nothing() -> None:
    # A daily swing of +-30 with noise of 2: the robust z-score's rolling median and
    # spread take the swing in, so a step of 14 (7 noise sigmas) stays inside its band.
    # The shipped model forecasts the swing; its band is a few of its own misses wide.
    rng = np.random.default_rng(5)
    day = 288
    n = 6 * day
    ts = 1_700_000_000.0 + 300.0 * np.arange(n)
    values = 100 + 30 * np.sin(2 * np.pi * np.arange(n) / day) + rng.normal(0, 2.0, n)
    step = 5 * day + 100
    values[step:] += 14.0
    transformer = TransformerDetector().score(ts, values)
    robust = RobustZ().score(ts, values)
    assert np.all(robust.score[step : step + 4] < 1)
    assert np.all(transformer.score[step : step + 4] > 1)
    paged = np.flatnonzero(alarms(transformer, WindowPolicy()))
    assert np.any((paged >= step) & (paged < step + 4))
    assert not np.any(paged[(paged >= 3 * day) & (paged < step)])  # and no false page


def test_a_refresh_with_pooled_widths_equals_a_full_rescore(tiny_model: Forecaster) -> None:
    # Ten-minute steps and four weeks of points: the band width pools the residuals
    # of the same hour on four earlier days, each corrected from four days before it.
    # A cached refresh rescores only a tail of history_points (+ the score window).
    rng = np.random.default_rng(2)
    day = 144
    n = 4000  # ~28 days: more than the context a refresh keeps
    ts = 1_700_000_000.0 + 600.0 * np.arange(n)
    values = 10 + 3 * np.sin(2 * np.pi * np.arange(n) / day) + rng.normal(0, 0.3, n)
    values[n - 50] += 5.0
    detector = TransformerDetector(model=tiny_model, calibration_points=128)
    assert detector.context_points(600.0) < n - 400
    cache = ScoreCache()
    cache.score("k", detector, ts[: n - 200], values[: n - 200], 600.0)
    refreshed = cache.score("k", detector, ts[300:], values[300:], 600.0)
    assert cache.hits == 1
    full = detector.score(ts, values)
    for name in ("expected", "lower", "upper", "score"):
        np.testing.assert_allclose(  # float32 inference: batch composition, 6th digit
            getattr(refreshed, name)[-300:],
            getattr(full, name)[-300:],
            rtol=1e-4,
            atol=1e-6,
            err_msg=name,
        )


def test_an_idle_series_with_regular_quantum_jumps_stays_below_an_instant_page(
    tiny_model: Forecaster,
) -> None:
    # sits at 0, jumps to 20 for one point every 100: the band is at least half the
    # quantum (10), so a jump scores about 2, under the window policy's instant 3
    detector = TransformerDetector(model=tiny_model, calibration_points=512)
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


@pytest.mark.parametrize("bad", [0, 7, 1.5, True])
def test_a_window_too_short_for_a_robust_spread_is_refused(bad: object) -> None:
    with pytest.raises(InvalidTarget, match="calibration_points"):
        TransformerDetector(calibration_points=bad)  # type: ignore[arg-type]
