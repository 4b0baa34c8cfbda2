"""The ensemble: STL's band and the transformer's delayed view; a point is out of band
when either says so (shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_backend.scoring.registry import get_detector
from plugin_backend.scoring.transformer import TransformerDetector
from plugin_backend.scoring.windows import WindowPolicy, alarms


def _ramp(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 2400
    ts = 1_700_000_000.0 + 300.0 * np.arange(n)
    values = rng.normal(0.0, 1.0, n)
    values[2000:] += np.minimum(0.5 * np.arange(n - 2000), 8.0)
    return ts, values


def test_the_members_lend_stls_band_and_the_transformers_delayed_view() -> None:
    ts, values = _ramp(0)
    views = get_detector("ensemble")._views(ts, values)
    assert len(views) == 2
    stl = get_detector("stl")._band(ts, values)
    delayed = TransformerDetector()._views(ts, values)[-1]
    np.testing.assert_allclose(views[0].expected, stl.expected, equal_nan=True)
    np.testing.assert_allclose(views[1].upper, delayed.upper, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_ramp_is_paged_and_stays_out_of_band_as_long_as_with_either_member(seed: int) -> None:
    ts, values = _ramp(seed)
    ensemble = get_detector("ensemble").score(ts, values)
    paged = np.flatnonzero(alarms(ensemble, WindowPolicy()))
    assert np.any((paged >= 2000) & (paged < 2020))
    assert not np.any((paged >= 600) & (paged < 2000))
    ramp = slice(2000, 2040)
    out_of_band = int(np.sum(ensemble.score[ramp] > 1))
    for member in ("stl", "transformer"):
        assert out_of_band >= np.sum(get_detector(member).score(ts, values).score[ramp] > 1)
    # Holt-Winters follows a slow ramp point by point; the union does not.
    assert out_of_band > np.sum(get_detector("holt_winters").score(ts, values).score[ramp] > 1)
