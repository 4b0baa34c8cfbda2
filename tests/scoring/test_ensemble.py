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
    voting = np.isfinite(views[1].upper)
    np.testing.assert_allclose(views[1].upper[voting], delayed.upper[voting], rtol=1e-5)
    # The delayed view is muted only a day after the ramp, whose day-earlier values
    # it would read as the pattern to expect.
    muted = np.flatnonzero(~voting & np.isfinite(delayed.upper))
    assert muted.size > 0
    assert muted.min() > 2000 + DAY - 8 - 128 - 8


def test_unmuted_the_members_lend_their_views_unchanged() -> None:
    ts, values = _ramp(0)
    views = get_detector("ensemble", mute_echoes=False)._views(ts, values)
    delayed = TransformerDetector()._views(ts, values)[-1]
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


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_yesterdays_incident_is_not_paged_again_the_next_day(seed: int) -> None:
    """The transformer reads the values one day earlier as the pattern to expect, so
    the day after an incident its forecast expects the incident again. The ensemble
    mutes it where STL (whose robust fit does not copy one day) found an anomaly a
    day earlier; the incident itself is still paged."""
    ts, values, start = _yesterdays_incident(seed)
    next_day = slice(start + DAY - 8, start + DAY + 36 + 8)

    def paged(detector_options: dict[str, bool]) -> np.ndarray:
        scored = get_detector("ensemble", **detector_options).score(ts, values)
        return alarms(scored, WindowPolicy())

    unmuted, muted = paged({"mute_echoes": False}), paged({})
    assert unmuted[next_day].any()  # the echo the muting is for
    assert not muted[next_day].any()
    assert muted[start : start + 4].any()
    assert not muted[2 * DAY : start].any()


def test_muting_keeps_the_ensemble_causal() -> None:
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
    """Rescoring a tail with ``context_points`` of context reproduces the scores while
    the transformer is muted by yesterday's incident."""
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
    assert np.isnan(detector._views(ts, values)[1].upper[-20:]).any()  # muting in play
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
    assert not np.any((paged >= 600) & (paged < 2000))
    ramp = slice(2000, 2040)
    out_of_band = int(np.sum(ensemble.score[ramp] > 1))
    for member in ("stl", "transformer"):
        assert out_of_band >= np.sum(get_detector(member).score(ts, values).score[ramp] > 1)
    # Holt-Winters follows a slow ramp point by point; the union does not.
    assert out_of_band > np.sum(get_detector("holt_winters").score(ts, values).score[ramp] > 1)
