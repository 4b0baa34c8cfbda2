"""The ensemble: every member scores the series as it would alone, and a point pages
when any member's score passes that member's own rate-controlled threshold."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.alarm_rate import DEFAULT_ALARMS_PER_DAY
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.ensemble import DEFAULT_MEMBERS, combine
from plugin_backend.scoring.registry import get_detector
from plugin_backend.scoring.windows import WindowPolicy, alarms

STEP = 300.0
DAY = 288  # points per day at a 5 min step
T0 = 1_700_006_400.0


def _daily(seed: int, days: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = days * DAY
    ts = T0 + STEP * np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / DAY) + rng.normal(0, 1, n)
    return ts, values


def test_each_member_scores_as_it_would_alone_and_the_shown_score_is_the_largest() -> None:
    ts, values = _daily(0)
    scored = get_detector("ensemble").score(ts, values)
    alone = [get_detector(name).score(ts, values).score for name in DEFAULT_MEMBERS]
    assert scored.member_scores is not None
    np.testing.assert_array_equal(scored.member_scores, np.stack(alone))
    np.testing.assert_array_equal(scored.score, np.fmax.reduce(np.stack(alone), axis=0))
    # The shown band is where every member's agrees: inside it, no member is out of band.
    inside = (scored.values >= scored.lower) & (scored.values <= scored.upper)
    assert inside.mean() > 0.9
    assert np.all(scored.score[inside & np.isfinite(scored.score)] <= 1 + 1e-9)


def _scored(member_scores: np.ndarray) -> ScoredSeries:
    n = member_scores.shape[1]
    ts = T0 + STEP * np.arange(n)
    zeros = np.zeros(n)
    return ScoredSeries(
        ts, zeros, zeros, zeros - 1, zeros + 1, np.fmax.reduce(member_scores, axis=0),
        member_scores=member_scores,
    )  # fmt: skip


def test_a_member_with_a_heavy_tail_does_not_drown_the_others_alarm() -> None:
    """A spiky member (its scores reach 10 band widths every few days) and a quiet one;
    an incident only the quiet one sees. One threshold on the largest raw score is set
    by the spiky member's tail and stays silent; each member on its own threshold pages."""
    rng = np.random.default_rng(5)
    n = 30 * DAY
    spiky = np.abs(rng.standard_t(1.5, n)) / 2
    quiet = np.abs(rng.normal(0, 1, n)) / 3.5
    incident = slice(25 * DAY, 25 * DAY + 12)
    spiky[incident] = 0.2  # the spiky member sees nothing unusual
    quiet[incident] = 3.0  # three band widths out for an hour
    scored = _scored(np.stack([spiky, quiet]))
    calibrated = np.flatnonzero(alarms(scored, WindowPolicy()))
    one_threshold = ScoredSeries(*(getattr(scored, f) for f in _FIELDS))
    raw = np.flatnonzero(alarms(one_threshold, WindowPolicy()))
    assert np.any((calibrated >= incident.start) & (calibrated < incident.stop))
    assert not np.any((raw >= incident.start) & (raw < incident.stop))


_FIELDS = ("timestamps_s", "values", "expected", "lower", "upper", "score")


@pytest.mark.parametrize("members", [2, 4])
def test_the_union_of_members_keeps_the_promised_rate_on_a_healthy_series(members: int) -> None:
    """Each member's threshold gets 1/k of the risk, so k independent healthy members
    together page about as often as one (they would page k times as often each at the
    full risk)."""
    rng = np.random.default_rng(members)
    days = 120
    n = days * DAY
    rows = np.abs(rng.standard_t(4.0, (members, n))) / 2
    fired = alarms(_scored(rows), WindowPolicy())
    warm = 2000
    per_day = np.count_nonzero(fired[warm:]) / (days - warm / DAY)
    assert 0.1 * DEFAULT_ALARMS_PER_DAY <= per_day <= 2 * DEFAULT_ALARMS_PER_DAY


def test_a_ramp_pages_at_once_and_the_noise_before_it_does_not() -> None:
    rng = np.random.default_rng(0)
    n = 2400
    ts = T0 + STEP * np.arange(n)
    values = rng.normal(0.0, 1.0, n)
    values[2000:] += np.minimum(0.5 * np.arange(n - 2000), 8.0)
    paged = np.flatnonzero(alarms(get_detector("ensemble").score(ts, values), WindowPolicy()))
    assert np.any((paged >= 2000) & (paged < 2020))
    # 1400 points (4.9 days) of noise before it: about one alarm per three days promised.
    assert np.count_nonzero((paged >= 600) & (paged < 2000)) <= 2


def test_the_ensemble_is_causal() -> None:
    ts, values = _daily(1)
    values[6 * DAY + 100 : 6 * DAY + 136] += 15
    detector = get_detector("ensemble")
    full = detector.score(ts, values)
    for n in (6 * DAY + 120, 7 * DAY + 10):
        part = detector.score(ts[:n], values[:n])
        assert part.member_scores is not None
        assert full.member_scores is not None
        np.testing.assert_allclose(part.member_scores, full.member_scores[:, :n], equal_nan=True)
        for field in ("expected", "upper", "score"):
            np.testing.assert_allclose(
                getattr(part, field), getattr(full, field)[:n], equal_nan=True
            )


def test_a_tail_with_the_ensembles_context_scores_as_the_whole_series() -> None:
    step = 3600.0
    rng = np.random.default_rng(2)
    n = 5400
    ts = 1_700_000_000.0 + step * np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)
    detector = get_detector("ensemble")
    start = n - 40 - detector.context_points(step)
    assert start > 0
    full = detector.score(ts, values)
    tail = detector.score(ts[start:], values[start:])
    assert tail.member_scores is not None
    assert full.member_scores is not None
    np.testing.assert_allclose(
        tail.member_scores[:, -40:], full.member_scores[:, -40:], rtol=1e-7, equal_nan=True
    )


def test_a_member_without_enough_points_yet_is_left_out_until_it_has_them() -> None:
    scored = combine([None, _scored(np.ones((1, 10)))])
    assert scored.member_scores is not None
    assert np.isnan(scored.member_scores[0]).all()
    np.testing.assert_array_equal(scored.member_scores[1], np.ones(10))


@pytest.mark.parametrize("members", ["stl", [], ["stl", "stl"], ["ensemble"], ["nope"]])
def test_bad_members_are_refused_with_a_message(members: object) -> None:
    with pytest.raises(InvalidTarget):
        get_detector("ensemble", members=members)


def test_windows_from_kept_block_fits_after_a_refresh_equal_a_cold_run() -> None:
    """The score cache keeps each member's tail fits under its own keys: after a refresh,
    windows from the kept fits are those of the whole series scored and fitted cold."""
    from plugin_backend.scoring.incremental import ScoreCache
    from plugin_backend.scoring.windows import find_windows

    ts, values = _daily(3, days=10)
    values[9 * DAY : 9 * DAY + 6] += 12  # an incident in the refreshed part
    detector = get_detector("ensemble")
    cache = ScoreCache()
    first = cache.score("k", detector, ts[: 9 * DAY - 50], values[: 9 * DAY - 50], STEP)
    memo = cache.fit_memo("k")
    find_windows(first, WindowPolicy(), fit_memo=memo)
    assert any(key[0].startswith("member1:") for key in memo)
    refreshed = cache.score("k", detector, ts, values, STEP)
    kept = find_windows(refreshed, WindowPolicy(), fit_memo=memo)
    cold = find_windows(detector.score(ts, values), WindowPolicy())
    assert kept == cold
    assert any(9 * DAY * STEP <= w.start_s - T0 < (9 * DAY + 6) * STEP for w in kept)
