"""The rate-controlled alarm threshold (scoring.alarm_rate) and its use by the windows."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.alarm_rate import (
    DEFAULT_ALARMS_PER_DAY,
    RatePolicy,
    fit_tails,
    rate_normalized,
    trailing_mean,
)
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.windows import WindowPolicy, alarms, find_windows

STEP = 300.0
DAY = 86_400.0
T0 = 1_700_006_400.0  # a multiple of 64 * 300 s: blocks start at row 0


def scored_from(score: np.ndarray, step: float = STEP) -> ScoredSeries:
    n = score.shape[0]
    ts = T0 + step * np.arange(n)
    values = np.abs(score)
    zeros = np.zeros(n)
    return ScoredSeries(ts, values, zeros, zeros - 1, zeros + 1, np.abs(score))


def rate_thresholds(ts: np.ndarray, score: np.ndarray, policy: RatePolicy | None = None):
    """The point trigger's threshold alone (the run trigger off)."""
    policy = RatePolicy(run_points=0) if policy is None else policy
    step = float(np.median(np.diff(ts)))
    return fit_tails(ts, score, policy).threshold(policy.risk(step), policy.fallback)


def healthy(n: int, seed: int, df: float = 4.0) -> np.ndarray:
    """|Student-t| scores: a band that fits, with the heavy tail real metrics have."""
    return np.abs(np.random.default_rng(seed).standard_t(df, n)) / 2.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_healthy_series_pages_about_as_often_as_promised(seed: int) -> None:
    days = 60
    scored = scored_from(healthy(int(days * DAY / STEP), seed))
    fired = alarms(scored, WindowPolicy())
    per_day = np.count_nonzero(fired[2000:]) / (days - 2000 * STEP / DAY)
    # One per three days promised; the band's edge, even with two points to confirm,
    # pages several times as often.
    assert per_day <= 2 * DEFAULT_ALARMS_PER_DAY
    edge = np.count_nonzero(alarms(scored, WindowPolicy(rate=None, min_points=2))[2000:])
    assert edge > 4 * np.count_nonzero(fired[2000:])


def test_more_sensitivity_allows_more_alarms() -> None:
    scored = scored_from(healthy(20_000, 3))
    strict = rate_thresholds(scored.timestamps_s, scored.score, RatePolicy(alarms_per_day=0.1))
    loose = rate_thresholds(scored.timestamps_s, scored.score, RatePolicy(alarms_per_day=3.0))
    fitted = slice(2000, None)
    assert np.all(loose[fitted] <= strict[fitted])
    assert np.mean(loose[fitted] < strict[fitted]) > 0.9


def test_thresholds_are_causal_and_alarms_on_a_prefix_are_a_prefix() -> None:
    score = healthy(6000, 4)
    score[3000:3004] = 40.0  # an incident, so there are alarms to compare
    scored = scored_from(score)
    whole_thresholds = rate_thresholds(scored.timestamps_s, scored.score)
    whole = alarms(scored, WindowPolicy())
    assert whole[3000:3004].any()
    for cut in (100, 257, 2500, 3001, 3003, 5999):
        prefix = scored_from(score[:cut])
        np.testing.assert_array_equal(
            rate_thresholds(prefix.timestamps_s, prefix.score), whole_thresholds[:cut]
        )
        np.testing.assert_array_equal(alarms(prefix, WindowPolicy()), whole[:cut])


def test_a_tail_with_a_window_of_history_gets_the_same_thresholds() -> None:
    """What lets a refreshed panel resume: the state is the last window of scores."""
    policy = RatePolicy(run_points=0)
    score = healthy(7000, 5)
    whole = scored_from(score)
    drop = 1000
    tail = ScoredSeries(*(np.asarray(getattr(whole, f))[drop:] for f in _FIELDS))
    same_from = policy.window_points + policy.block_points
    np.testing.assert_array_equal(
        rate_thresholds(tail.timestamps_s, tail.score, policy)[same_from:],
        rate_thresholds(whole.timestamps_s, whole.score, policy)[drop + same_from :],
    )


_FIELDS = ("timestamps_s", "values", "expected", "lower", "upper", "score")


def test_warm_up_uses_the_conservative_fallback() -> None:
    policy = RatePolicy(run_points=0)
    scored = scored_from(healthy(400, 6))
    thresholds = rate_thresholds(scored.timestamps_s, scored.score, policy)
    np.testing.assert_array_equal(thresholds[: policy.min_fit_points], policy.fallback)
    # Two points just outside the band do not page a series the layer has not learnt ...
    score = np.zeros(100)
    score[50:52] = 2.0
    assert not alarms(scored_from(score), WindowPolicy()).any()
    # ... three band-widths out do.
    score[50:52] = 3.5
    assert alarms(scored_from(score), WindowPolicy()).any()


def test_the_threshold_is_never_inside_the_band() -> None:
    scored = scored_from(np.full(3000, 0.01))
    assert np.all(rate_thresholds(scored.timestamps_s, scored.score) >= 1.0)
    flat = scored_from(np.zeros(3000))
    fitted = slice(RatePolicy().min_fit_points, None)
    assert np.all(rate_thresholds(flat.timestamps_s, flat.score)[fitted] == 1.0)


def test_a_persisting_shift_pages_at_once_and_then_becomes_the_new_normal() -> None:
    score = healthy(12_000, 7)
    start = 6000
    score[start:] += 6.0  # a level the detector's band never follows
    fired = alarms(scored_from(score), WindowPolicy())
    paged = np.flatnonzero(fired[start:])
    assert paged.size
    assert paged[0] == 0  # its first point pages (min_points 1)
    # Once the shift fills 1 - initial_quantile of the window it is normal: until then
    # a bounded number of pages (re-alerts every 4 h), after it the healthy rate.
    policy = RatePolicy()
    settle = int((1 - policy.initial_quantile) * policy.window_points) + 2 * policy.block_points
    early = paged[paged <= settle]
    assert early.size <= 1 + settle * STEP / WindowPolicy().realert_s
    late_days = (score.shape[0] - start - settle) * STEP / DAY
    assert (paged.size - early.size) / late_days <= 2 * DEFAULT_ALARMS_PER_DAY


def test_extreme_peaks_do_not_raise_the_threshold_much() -> None:
    """SPOT's rule: the fit is redone without the peaks beyond its own far tail."""
    score = healthy(3000, 8)
    spiky = score.copy()
    spiky[1000:1010] = 1e6  # ten absurd points in the window
    a = fit_tails(scored_from(score).timestamps_s, score, RatePolicy()).threshold(1e-3, 3.0)
    b = fit_tails(scored_from(spiky).timestamps_s, spiky, RatePolicy()).threshold(1e-3, 3.0)
    assert b[-1] < 2 * a[-1]


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("alarms_per_day", {"alarms_per_day": 0.0}),
        ("window_points", {"window_points": 0}),
        ("initial_quantile", {"initial_quantile": 1.0}),
        ("fallback", {"fallback": 0.5}),
    ],
)
def test_policy_validation_names_the_field(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidTarget, match=field):
        RatePolicy(**kwargs)  # type: ignore[arg-type]


def test_risk_follows_the_step() -> None:
    """The risk is per sample: a point at 5 min or coarser, else the highest score of
    several points (10 at 15 s: 150 s)."""
    policy = RatePolicy()
    assert policy.risk(300.0) == pytest.approx(300.0 / (3 * DAY))
    assert policy.risk(3600.0) == pytest.approx(3600.0 / (3 * DAY))
    assert policy.risk(15.0) == pytest.approx(150.0 / (3 * DAY))


def test_the_window_is_a_span_of_time_bounded_in_points() -> None:
    policy = RatePolicy()
    week_s = policy.window_points * 300.0  # 6.9 days
    for step in (300.0, 60.0, 30.0):
        assert policy.points_per_sample(step) * step * policy.window_points == week_s
    # Finer, the points scored are bounded: 20,000 at 15 s (3.5 days), not 40,000.
    assert policy.points_per_sample(15.0) * policy.window_points == policy.max_window_points
    assert policy.points_per_sample(3600.0) == 1  # coarser: 2,000 points, as before


def with_gaps(scored: ScoredSeries) -> ScoredSeries:
    """``scored`` with no rows for 3 h, 45 min, 7 h and 5 h at four places."""
    ts = scored.timestamps_s.copy()
    for after, gap_h in ((1500, 3.0), (3100, 0.75), (5200, 7.0), (6100, 5.0)):
        ts[after + 1 :] += gap_h * 3600.0
    return ScoredSeries(ts, *(getattr(scored, f) for f in _FIELDS[1:]))


@pytest.mark.parametrize("gaps", [False, True])
def test_the_normalized_score_of_a_tail_with_history_is_the_same(gaps: bool) -> None:
    """Both triggers resume from the cached scores alone, gaps in the data or not."""
    score = healthy(7000, 9)
    score[5201:5205] = 30.0  # just after a gap: the run trigger restarts there
    whole = with_gaps(scored_from(score)) if gaps else scored_from(score)
    drop = 1000
    policy = RatePolicy()
    same_from = policy.window_points + policy.block_points + policy.run_points
    np.testing.assert_array_equal(
        rate_normalized(whole.timestamps_s[drop:], score[drop:], policy)[same_from:],
        rate_normalized(whole.timestamps_s, score, policy)[drop + same_from :],
    )
    for cut in (3101, 5202, 6103):  # and on a prefix, the prefix of the whole
        np.testing.assert_array_equal(
            rate_normalized(whole.timestamps_s[:cut], score[:cut], policy),
            rate_normalized(whole.timestamps_s, score, policy)[:cut],
        )


def test_a_long_run_just_outside_the_band_pages_though_no_point_would() -> None:
    score = healthy(6000, 10)
    start = 5000
    score[start : start + 60] = 1.6  # each point inside the point trigger's threshold
    scored = scored_from(score)
    point_only = alarms(scored, WindowPolicy(rate=RatePolicy(run_points=0)))
    both = alarms(scored, WindowPolicy())
    assert not point_only[start : start + 60].any()
    assert both[start : start + 60].any()


def test_trailing_mean_is_causal_and_needs_most_of_its_points() -> None:
    score = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    mean = trailing_mean(60.0 * np.arange(6), score, 4)
    assert np.isnan(mean[:2]).all()  # fewer than 3 of the last 4 known
    assert np.isnan(mean[2])  # this point unknown
    assert mean[3] == pytest.approx((1 + 2 + 4) / 3)
    assert mean[5] == pytest.approx((4 + 5 + 6) / 3)


def test_block_fits_kept_between_calls_give_the_same_thresholds() -> None:
    """A score cache keeps the block fits: a refresh (the range slid and grown) fits
    only its new blocks and gets what a fit from scratch gets."""
    score = healthy(9000, 11)
    ts = scored_from(score).timestamps_s
    memo: dict = {}
    first = rate_normalized(ts[:6000], score[:6000], memo=memo)
    kept = len(memo)
    assert kept > 0
    np.testing.assert_array_equal(first, rate_normalized(ts[:6000], score[:6000]))
    slid = slice(500, 9000)
    np.testing.assert_array_equal(
        rate_normalized(ts[slid], score[slid], memo=memo), rate_normalized(ts[slid], score[slid])
    )
    assert all(block_s >= ts[500] for _, block_s in memo)  # blocks before the range forgotten


def _fault_twice(step: float, *, first_s: float, gap_s: float, seed: int = 12):
    """|Student-t| scores at ``step`` with the same 30 min fault at ``first_s`` and
    ``gap_s`` later (scores 15 higher: far outside the band)."""
    n = int((first_s + gap_s + 3 * 3600) / step)
    score = healthy(n, seed)
    faults = []
    for start in (first_s, first_s + gap_s):
        at = slice(int(start / step), int((start + 1800) / step))
        score[at] = 15.0 + score[at]
        faults.append(at)
    return scored_from(score, step), faults


def test_a_repeated_fault_on_a_15_s_series_pages_again() -> None:
    """At 15 s a window of 2,000 points is 8.3 h: a fault 6 h after the same fault is
    its normal, although the pager promises one alarm per three days. The window in
    time (3.5 days at 15 s) holds one such fault: rarer than promised, so it pages."""
    scored, (first, second) = _fault_twice(15.0, first_s=4 * DAY, gap_s=6 * 3600)
    ts, score = scored.timestamps_s, scored.score
    points_window = rate_normalized(ts, score, RatePolicy(sample_s=15.0))  # 2,000 points
    assert points_window[first].max() > 1
    assert points_window[second].max() <= 1
    in_time = rate_normalized(ts, score, RatePolicy())
    assert in_time[first].max() > 1
    assert in_time[second].max() > 1
    found = find_windows(scored, WindowPolicy())
    assert any(ts[second.start] <= w.start_s < ts[second.stop] for w in found)


def test_a_fault_that_recurs_more_often_than_promised_becomes_normal_at_15_s() -> None:
    """The other side of the promise: four faults a day for four days are normal."""
    n_days = 4
    step = 15.0
    n = int(n_days * DAY / step)
    score = healthy(n, 13)
    for start in np.arange(3600.0, n_days * DAY - 3600, 6 * 3600):
        at = slice(int(start / step), int((start + 1800) / step))
        score[at] = 15.0 + score[at]
    fired = alarms(scored_from(score, step), WindowPolicy())
    last_day = slice(int((n_days - 1) * DAY / step), None)
    assert not fired[last_day].any()


def test_at_15_s_a_tail_with_a_window_of_history_gets_the_same_thresholds() -> None:
    """Samples are buckets on the absolute time grid, so a tail that starts inside a
    bucket shares every whole one: a refresh resumes from the cached scores."""
    step = 15.0
    policy = RatePolicy()
    per = policy.points_per_sample(step)
    score = healthy(int(5 * DAY / step), 14)
    whole = scored_from(score, step)
    drop = 3 * per + 4  # inside a bucket
    same_from = (policy.window_points + policy.block_points + 1) * per + policy.run_points
    tail = rate_normalized(whole.timestamps_s[drop:], score[drop:], policy)
    full = rate_normalized(whole.timestamps_s, score, policy)
    np.testing.assert_array_equal(tail[same_from:], full[drop + same_from :])
    memo: dict = {}
    first = rate_normalized(whole.timestamps_s[:-800], score[:-800], policy, memo=memo)
    np.testing.assert_array_equal(first, full[:-800])
    np.testing.assert_array_equal(
        rate_normalized(whole.timestamps_s, score, policy, memo=memo), full
    )


def test_the_run_mean_does_not_reach_back_across_a_gap() -> None:
    # Rows every minute, then 3 h without rows: the rows before the gap do not count.
    ts = np.concatenate([60.0 * np.arange(10), 60.0 * 9 + 3 * 3600 + 60.0 * np.arange(8)])
    score = np.concatenate([np.full(10, 9.0), np.ones(8)])
    mean = trailing_mean(ts, score, 8)
    assert mean[9] == pytest.approx(9.0)
    assert np.isnan(mean[10:15]).all()  # fewer than 6 of the last 8 minutes have a row
    np.testing.assert_allclose(mean[15:], 1.0)  # only rows after the gap count
    # Without the gap, or with a hole shorter than the 8 steps the mean spans (irregular
    # polling, a missed scrape), the same rows' mean still holds the earlier scores.
    for hole_s in (0.0, 5 * 60.0):
        ts = 60.0 * np.arange(18) + np.where(np.arange(18) >= 10, hole_s, 0.0)
        assert trailing_mean(ts, score, 8)[12] == pytest.approx((5 * 9 + 3) / 8)


def gapped(score: np.ndarray, gap_after: int, gap_s: float) -> ScoredSeries:
    """``scored_from(score)`` with no rows for ``gap_s`` after row ``gap_after``."""
    scored = scored_from(score)
    ts = scored.timestamps_s.copy()
    ts[gap_after + 1 :] += gap_s
    return ScoredSeries(ts, scored.values, scored.expected, scored.lower, scored.upper, score)


def test_a_spike_before_a_gap_pages_once_and_its_window_ends_before_the_gap() -> None:
    """An export whose rows stop for 6 h right after a spike: the normal rows after the
    gap are no part of the spike (the run trigger's mean does not reach back to it), so
    they neither page again nor stretch its window over the gap."""
    score = healthy(3000, 12)
    spike = 2000
    score[spike : spike + 4] = 12.0  # 20 min far outside the band, then 6 h without rows
    scored = gapped(score, spike + 3, 6 * 3600.0)
    fired = np.flatnonzero(alarms(scored, WindowPolicy()))
    assert fired[(fired >= spike) & (fired < spike + 60)].tolist() == [spike]  # 5 h on
    at = scored.timestamps_s[spike]
    (window,) = [w for w in find_windows(scored, WindowPolicy()) if w.start_s <= at <= w.end_s]
    assert window.end_s == scored.timestamps_s[spike + 3]
