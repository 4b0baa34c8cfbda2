"""The ensemble: STL's band and the transformer's delayed view; a point is out of band
when either says so (shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_backend.scoring.registry import get_detector
from plugin_backend.scoring.transformer import TransformerDetector
from plugin_backend.scoring.windows import WindowPolicy, alarms

DAY = 288  # points per day at a 5 min step


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


def _yesterdays_incident(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Eight days of a daily cycle at 5 min; on day 6 the level jumps for three hours."""
    rng = np.random.default_rng(seed)
    n = 8 * DAY
    ts = 1_700_000_000.0 + 300.0 * np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / DAY) + rng.normal(0, 1, n)
    start = 6 * DAY + 100
    values[start : start + 36] += 15
    return ts, values, start


def test_the_ensemble_is_causal() -> None:
    ts, values, start = _yesterdays_incident(1)
    detector = get_detector("ensemble")
    full = detector.score(ts, values)
    for n in (start + 20, start + DAY + 10):
        part = detector.score(ts[:n], values[:n])
        for field in ("expected", "upper", "score"):
            np.testing.assert_allclose(
                getattr(part, field), getattr(full, field)[:n], rtol=1e-5, equal_nan=True
            )


def test_a_tail_with_the_ensembles_context_scores_as_the_whole_series() -> None:
    """Rescoring a tail with ``context_points`` of context reproduces the scores, with
    yesterday's incident in the transformer's copied day."""
    step = 3600.0
    rng = np.random.default_rng(2)
    n = 5400
    ts = 1_700_000_000.0 + step * np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)
    values[n - 30 - 24 : n - 24] += 12  # yesterday's incident, seen by the last points
    detector = get_detector("ensemble")
    start = n - 40 - detector.context_points(step)
    assert start > 0
    full = detector.score(ts, values)
    tail = detector.score(ts[start:], values[start:])
    for field in ("expected", "upper", "score"):
        np.testing.assert_allclose(
            getattr(tail, field)[-40:], getattr(full, field)[-40:], rtol=1e-5, equal_nan=True
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_ramp_is_paged_and_stays_out_of_band_as_long_as_with_either_member(seed: int) -> None:
    ts, values = _ramp(seed)
    ensemble = get_detector("ensemble").score(ts, values)
    paged = np.flatnonzero(alarms(ensemble, WindowPolicy()))
    assert np.any((paged >= 2000) & (paged < 2020))
    # Before the ramp, 1400 points (4.9 days) of noise: the rate control promises about
    # one alarm per three days.
    assert np.count_nonzero((paged >= 600) & (paged < 2000)) <= 2
    ramp = slice(2000, 2040)
    out_of_band = int(np.sum(ensemble.score[ramp] > 1))
    for member in ("stl", "transformer"):
        assert out_of_band >= np.sum(get_detector(member).score(ts, values).score[ramp] > 1)
    # Holt-Winters follows a slow ramp point by point; the union does not.
    assert out_of_band > np.sum(get_detector("holt_winters").score(ts, values).score[ramp] > 1)
