"""Windows and alarms from per-point scores (plugin_backend.scoring.windows)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.robust_z import RobustZ
from plugin_backend.scoring.windows import AnomalyWindow, WindowPolicy, alarms, find_windows
from plugin_backend.types import FloatArray

STEP = 60.0


def EdgePolicy(**kwargs: object) -> WindowPolicy:
    """A policy paging at the band's edge (``rate=None``): these tests pin the run and
    window logic; tests/scoring/test_alarm_rate.py covers the rate-controlled threshold."""
    kwargs.setdefault("min_points", 2)  # the band edge's usual evidence
    return WindowPolicy(rate=None, **kwargs)  # type: ignore[arg-type]


def scored_from(
    score: npt.ArrayLike, sign: npt.ArrayLike | None = None, step: float = STEP
) -> ScoredSeries:
    """A series with expected 0 and a band of +-1 whose score is ``score``;
    ``sign`` (+1/-1 per point) says which side of the band the value is on."""
    scores = np.asarray(score, dtype=np.float64)
    n = scores.shape[0]
    side = np.ones(n) if sign is None else np.asarray(sign, dtype=np.float64)
    ts = 1_700_000_000.0 + step * np.arange(n, dtype=np.float64)
    values = side * scores
    return ScoredSeries(
        timestamps_s=ts,
        values=values,
        expected=np.zeros(n),
        lower=-np.ones(n),
        upper=np.ones(n),
        score=scores,
    )


def quiet(n: int, seed: int = 0) -> FloatArray:
    """Seeded in-band noise: scores in [0, 0.9]."""
    return np.random.default_rng(seed).uniform(0.0, 0.9, n)


def test_five_point_spike_is_one_window() -> None:
    score = quiet(200)
    score[100:105] = [1.5, 2.0, 2.8, 2.2, 1.4]
    scored = scored_from(score)
    windows = find_windows(scored, EdgePolicy())
    t0 = scored.timestamps_s[0]
    assert windows == [
        AnomalyWindow(
            start_s=t0 + 100 * STEP,
            end_s=t0 + 104 * STEP,
            peak_score=2.8,
            peak_s=t0 + 102 * STEP,
            direction="up",
            confirmed_s=t0 + 101 * STEP,  # second anomalous point
            open=False,
            points=5,
        )
    ]
    fired = alarms(scored, EdgePolicy())
    assert np.flatnonzero(fired).tolist() == [101]


def test_downward_spike_has_direction_down() -> None:
    score = quiet(100, seed=1)
    sign = np.ones(100)
    score[50:53] = [1.3, 1.8, 1.2]
    sign[50:53] = -1
    (window,) = find_windows(scored_from(score, sign), EdgePolicy())
    assert window.direction == "down"
    assert window.peak_score == 1.8


def test_instant_threshold_confirms_a_single_point() -> None:
    score = quiet(100, seed=2)
    score[40] = 3.5  # alone, but >= instant_threshold
    score[70] = 2.9  # alone and below it: no window
    scored = scored_from(score)
    windows = find_windows(scored, EdgePolicy())
    assert [w.points for w in windows] == [1]
    assert windows[0].confirmed_s == scored.timestamps_s[40]
    assert np.flatnonzero(alarms(scored, EdgePolicy())).tolist() == [40]


def test_single_point_below_instant_threshold_is_no_window() -> None:
    score = quiet(100, seed=3)
    score[30] = 2.0
    score[60] = 1.1
    assert find_windows(scored_from(score), EdgePolicy()) == []
    assert not alarms(scored_from(score), EdgePolicy()).any()


def test_bursts_closer_than_max_gap_merge() -> None:
    score = quiet(200, seed=4)
    score[50:53] = 2.0
    score[56:59] = 2.5  # 4 normal points = 5 min after the last anomalous one
    score[120:123] = 2.0  # far away: its own window
    scored = scored_from(score)
    policy = EdgePolicy(max_gap_s=6 * STEP)
    windows = find_windows(scored, policy)
    t = scored.timestamps_s
    assert [(w.start_s, w.end_s) for w in windows] == [(t[50], t[58]), (t[120], t[122])]
    assert windows[0].peak_s == t[56]
    assert windows[0].points == 6
    assert np.flatnonzero(alarms(scored, policy)).tolist() == [51, 121]
    # With a shorter gap the first two bursts are separate windows (and alarms).
    split = EdgePolicy(max_gap_s=2 * STEP)
    assert len(find_windows(scored, split)) == 3
    assert np.flatnonzero(alarms(scored, split)).tolist() == [51, 57, 121]


def test_gap_merge_counts_points_across_the_gap() -> None:
    score = quiet(60, seed=5)
    score[20] = 1.5
    score[22] = 1.5  # anomalous, normal, anomalous: two points of one run
    policy = EdgePolicy(max_gap_s=3 * STEP)
    assert np.flatnonzero(alarms(scored_from(score), policy)).tolist() == [22]
    assert find_windows(scored_from(score), EdgePolicy(max_gap_s=0.0)) == []


def test_direction_filter() -> None:
    score = quiet(200, seed=6)
    sign = np.ones(200)
    score[40:44] = 2.0
    score[120:124] = 2.0
    sign[120:124] = -1
    scored = scored_from(score, sign)
    both = find_windows(scored, EdgePolicy(direction="both"))
    up = find_windows(scored, EdgePolicy(direction="up"))
    down = find_windows(scored, EdgePolicy(direction="down"))
    assert [w.direction for w in both] == ["up", "down"]
    assert [w.start_s for w in up] == [scored.timestamps_s[40]]
    assert [w.start_s for w in down] == [scored.timestamps_s[120]]
    assert np.flatnonzero(alarms(scored, EdgePolicy(direction="down"))).tolist() == [121]


def test_min_duration() -> None:
    score = quiet(100, seed=7)
    score[10:13] = 1.5  # lasts 2 minutes
    score[50:56] = 1.5  # lasts 5 minutes
    policy = EdgePolicy(min_points=1, min_duration_s=4 * STEP, max_gap_s=0.0)
    windows = find_windows(scored_from(score), policy)
    assert len(windows) == 1
    assert windows[0].confirmed_s == scored_from(score).timestamps_s[54]


def test_nan_scores_are_not_anomalous() -> None:
    score = quiet(50, seed=8)
    score[:10] = np.nan  # warm-up
    score[20] = np.nan
    score[19] = 1.5
    score[21] = 1.5
    scored = scored_from(score)
    # NaN breaks adjacency; only the gap rule can merge across it.
    assert find_windows(scored, EdgePolicy(max_gap_s=0.0)) == []
    assert len(find_windows(scored, EdgePolicy(max_gap_s=3 * STEP))) == 1


def test_realert_after_realert_s() -> None:
    n = 400
    score = quiet(n, seed=9)
    score[100:300] = 1.5  # 200 minutes of anomaly
    scored = scored_from(score)
    policy = EdgePolicy(realert_s=60 * STEP)
    fired = np.flatnonzero(alarms(scored, policy)).tolist()
    assert fired == [101, 161, 221, 281]
    (window,) = find_windows(scored, policy)
    assert window.confirmed_s == scored.timestamps_s[101]
    # Disabled re-alerts: one alarm.
    assert np.flatnonzero(alarms(scored, EdgePolicy(realert_s=math.inf))).tolist() == [101]


def test_realert_skips_normal_rows_inside_a_window() -> None:
    score = quiet(300, seed=10)
    score[100:200:2] = 1.5  # flapping every other row, merged by the gap rule
    policy = EdgePolicy(realert_s=11 * STEP, max_gap_s=3 * STEP)
    fired = np.flatnonzero(alarms(scored_from(score), policy)).tolist()
    # Confirmed on the 2nd point (102); then the first anomalous row >= 11 min later.
    assert fired[:3] == [102, 114, 126]
    assert len(find_windows(scored_from(score), policy)) == 1


def test_open_window_at_the_end() -> None:
    score = quiet(100, seed=11)
    score[95:] = 2.0
    (window,) = find_windows(scored_from(score), EdgePolicy())
    assert window.open
    assert window.end_s == scored_from(score).timestamps_s[-1]
    # Ended two rows before the end: still open within max_gap_s, closed without.
    score[98:] = 0.5
    assert find_windows(scored_from(score), EdgePolicy(max_gap_s=5 * STEP))[0].open
    assert not find_windows(scored_from(score), EdgePolicy(max_gap_s=0.0))[0].open


@pytest.mark.parametrize("seed", range(5))
def test_alarms_are_causal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    score = rng.gamma(1.0, 0.5, n)
    for start in rng.integers(0, n - 20, 25):
        score[start : start + rng.integers(1, 15)] += rng.uniform(0.5, 4.0)
    score[rng.integers(0, n, 30)] = np.nan
    sign = np.where(rng.uniform(size=n) < 0.3, -1.0, 1.0)
    full = scored_from(score, sign)
    policy = EdgePolicy(realert_s=15 * STEP, max_gap_s=3 * STEP)
    expected = alarms(full, policy)
    assert expected.any()
    for length in range(1, n + 1):
        prefix = ScoredSeries(
            full.timestamps_s[:length],
            full.values[:length],
            full.expected[:length],
            full.lower[:length],
            full.upper[:length],
            full.score[:length],
        )
        assert np.array_equal(alarms(prefix, policy), expected[:length]), length


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_heavy_tailed_noise_pages_less_and_a_level_shift_still_pages_at_once(seed: int) -> None:
    """The rate-controlled threshold against the band's edge."""
    rng = np.random.default_rng(seed)
    n = 3000
    values = 100 + 5 * rng.standard_t(2, n)  # out-of-band points come in clusters
    values[2500:2600] += 60
    scored = RobustZ().score(1_700_000_000.0 + 300.0 * np.arange(n), values)
    paged = np.flatnonzero(alarms(scored, WindowPolicy()))
    usual = np.flatnonzero(alarms(scored, EdgePolicy()))
    assert np.count_nonzero(paged < 2500) < np.count_nonzero(usual < 2500)
    # Within the run trigger's 8 points, however heavy the tail the threshold learnt.
    assert 2500 <= paged[paged >= 2500][0] <= 2500 + 8


def test_empty_and_all_quiet() -> None:
    assert find_windows(scored_from(np.array([])), EdgePolicy()) == []
    assert alarms(scored_from(np.array([])), EdgePolicy()).shape == (0,)
    assert not alarms(scored_from(quiet(50)), EdgePolicy()).any()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("threshold", {"threshold": -1.0}),
        ("threshold", {"threshold": math.nan}),
        ("direction", {"direction": "sideways"}),
        ("min_points", {"min_points": 0}),
        ("min_points", {"min_points": 1.5}),
        ("min_duration_s", {"min_duration_s": -1.0}),
        ("instant_threshold", {"instant_threshold": 0.5}),
        ("max_gap_s", {"max_gap_s": -5.0}),
        ("max_gap_s", {"max_gap_s": math.inf}),
        ("realert_s", {"realert_s": 0.0}),
    ],
)
def test_policy_validation_names_the_field(field: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidTarget, match=field):
        WindowPolicy(**kwargs)  # type: ignore[arg-type]


def test_with_rate_control_a_series_pages_at_most_once_per_repeat_interval() -> None:
    score = np.zeros(4000)
    for start in range(3000, 3400, 20):  # runs every 20 rows (20 min), above the threshold
        score[start : start + 2] = 2.0
    scored = scored_from(score)
    policy = WindowPolicy(realert_s=2 * 3600.0)
    # The scores given in units of their alarm threshold: the hold alone is tested.
    fired = np.flatnonzero(alarms(scored, policy, normalized=score)).tolist()
    assert fired == [3000, 3120, 3240, 3360]  # every 2 h, on a run's first point
    assert len(find_windows(scored, policy, normalized=score)) == 20  # every run a window
    assert np.count_nonzero(alarms(scored, EdgePolicy(realert_s=2 * 3600.0))) == 20


def _gap(scored: ScoredSeries, after: int, gap_s: float) -> ScoredSeries:
    """``scored`` with no rows for ``gap_s`` after row ``after`` (later rows shifted)."""
    ts = scored.timestamps_s.copy()
    ts[after + 1 :] += gap_s
    return ScoredSeries(
        ts, scored.values, scored.expected, scored.lower, scored.upper, scored.score
    )


@pytest.mark.parametrize(("gap_h", "pages_after_gap"), [(2.0, False), (6.0, True)])
def test_an_anomaly_still_there_after_a_gap_is_the_same_run(
    gap_h: float, pages_after_gap: bool
) -> None:
    """A gap is no evidence that an anomaly ended: anomalous on both sides, it is one
    window, and it pages again after the gap only once the repeat interval has passed."""
    score = quiet(400)
    score[100:160] = 2.0  # an hour outside the band, rows stop, and it is still outside
    scored = _gap(scored_from(score), 129, gap_h * 3600.0)
    policy = EdgePolicy(realert_s=4 * 3600.0)
    (window,) = find_windows(scored, policy)
    assert (window.start_s, window.end_s) == (scored.timestamps_s[100], scored.timestamps_s[159])
    fired = np.flatnonzero(alarms(scored, policy)).tolist()
    assert fired == ([101, 130] if pages_after_gap else [101])


def test_an_anomaly_that_ended_before_a_gap_and_one_after_it_are_two_runs() -> None:
    score = quiet(400)
    score[100:120] = 2.0
    score[131:150] = 2.0  # row 130, the last before the gap, is back inside the band
    scored = _gap(scored_from(score), 130, 6 * 3600.0)
    policy = EdgePolicy(realert_s=4 * 3600.0)
    windows = find_windows(scored, policy)
    assert [(w.start_s, w.end_s) for w in windows] == [
        (scored.timestamps_s[100], scored.timestamps_s[119]),
        (scored.timestamps_s[131], scored.timestamps_s[149]),
    ]
    assert np.flatnonzero(alarms(scored, policy)).tolist() == [101, 132]
