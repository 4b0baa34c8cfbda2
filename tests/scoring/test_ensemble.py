"""The ensemble: STL's band and the transformer's delayed view; a point is out of band
when either says so (shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_backend.errors import InvalidTarget
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
    assert len(views) == 3  # and the sustained view of STL's residuals
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

    def paged(mute_echoes: bool) -> np.ndarray:
        # Without the sustained view, whose long incident scores widen the next day's
        # bands through the calibration and can hide the echo on their own.
        detector = get_detector("ensemble", mute_echoes=mute_echoes, sustained_points=0)
        return alarms(detector.score(ts, values), WindowPolicy())

    unmuted, muted = paged(False), paged(True)
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


def _missing_peak(seed: int) -> tuple[np.ndarray, np.ndarray, slice]:
    """Nine days at 5 min with a busy afternoon peak (its height varies from day to
    day); on day 7 the peak never comes."""
    rng = np.random.default_rng(seed)
    n = 9 * DAY
    ts = 1_700_000_000.0 + 300.0 * np.arange(n)
    hour = (np.arange(n) % DAY) / 12.0
    peak = np.exp(-0.5 * ((hour - 15.0) / 1.5) ** 2)
    height = np.repeat(rng.uniform(30.0, 45.0, 9), DAY)
    values = 100 + height * peak + rng.normal(0, 8, n)
    day = 7 * DAY
    values[day : day + DAY] -= height[day] * peak[day : day + DAY]
    rise = day + int(11.25 * 12)  # 2.5 widths before the top, at 15:00
    return ts, values, slice(rise, rise + 90)


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_a_missing_daily_peak_is_paged_by_the_sustained_view(seed: int) -> None:
    """No single point of the missing peak is far outside the point bands (peak heights
    vary from day to day); hours of points below them are. The sustained view pages
    it; the same ensemble without that view does not (on these seeds: where the
    missing peak would have been a tall one, the point bands page it too)."""
    ts, values, peak_hours = _missing_peak(seed)

    def paged(**options: int) -> np.ndarray:
        return alarms(get_detector("ensemble", **options).score(ts, values), WindowPolicy())

    assert not paged(sustained_points=0)[peak_hours].any()
    with_view = paged()
    assert with_view[peak_hours].any()
    assert not with_view[2 * DAY : peak_hours.start - 12].any()  # the normal days stay quiet


def test_the_sustained_view_keeps_quiet_on_autocorrelated_noise() -> None:
    """Residuals that wander together (AR(1) noise) have means almost as spread as
    single residuals: the band for the mean scales with that, so it pages no more
    often than the point bands."""
    rng = np.random.default_rng(7)
    n = 8 * DAY
    ts = 1_700_000_000.0 + 300.0 * np.arange(n)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.9 * noise[i - 1] + rng.normal(0, 1)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / DAY) + noise
    without = alarms(get_detector("ensemble", sustained_points=0).score(ts, values), WindowPolicy())
    with_view = alarms(get_detector("ensemble").score(ts, values), WindowPolicy())
    assert with_view[2 * DAY :].sum() <= without[2 * DAY :].sum() + 2


def test_sustained_points_are_validated() -> None:
    for bad in (-1, 1, 2.5, True, "8"):
        with pytest.raises(InvalidTarget, match="sustained_points"):
            get_detector("ensemble", sustained_points=bad)


@pytest.mark.parametrize("seed", [0, 7])
def test_the_day_after_a_missing_peak_the_returning_peak_is_not_paged(seed: int) -> None:
    """Yesterday's missing peak is an anomaly only the sustained view confirms; the
    transformer, reading yesterday as the pattern, would expect no peak today and
    page the normal one. The sustained view judges with STL, so it is muted there."""
    ts, values, peak_hours = _missing_peak(seed)
    next_day = slice(peak_hours.start + DAY - 24, peak_hours.stop + DAY + 30)

    def paged(**options: bool) -> np.ndarray:
        return alarms(get_detector("ensemble", **options).score(ts, values), WindowPolicy())

    assert paged(mute_echoes=False)[next_day].any()  # the echo
    assert not paged()[next_day].any()
