"""Baseline detectors (robust z, block STL, robust Holt-Winters): the contract every one keeps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plugin_backend.errors import InsufficientData, InvalidTarget
from plugin_backend.scoring import registry
from plugin_backend.scoring.base import Detector, ScoredSeries
from plugin_backend.scoring.caches import ForecastCaches
from plugin_backend.scoring.holt_winters import HoltWinters
from plugin_backend.scoring.hw_recursion import DAMPING, Lanes, _day_medians, hw_recursion
from plugin_backend.scoring.phase_correction import phase_correction
from plugin_backend.scoring.robust import ABS_FLOOR, REL_FLOOR, flat_floor, row_nanmedian
from plugin_backend.scoring.robust_z import RobustZ
from plugin_backend.scoring.stl import SeasonalSTL
from plugin_backend.scoring.windows import WindowPolicy, alarms
from plugin_backend.types import FloatArray

STEP = 300.0
DAY = 288  # points per day at a 5 min step
T0 = 1_699_920_000.0  # a UTC midnight
N = 4 * DAY
ANOMALY = 2 * DAY + DAY // 4  # day 2, 06:00: the top of the daily sine
DETECTORS: list[type[Detector]] = [RobustZ, SeasonalSTL, HoltWinters]


def _timestamps(n: int = N) -> FloatArray:
    return T0 + np.arange(n, dtype=np.float64) * STEP


def _base(seed: int = 7, n: int = N) -> FloatArray:
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(n) / DAY
    return 50 + 10 * np.sin(phase) + rng.normal(0.0, 1.0, n)


def _with(kind: str) -> FloatArray:
    """The base series with one anomaly injected at ``ANOMALY``."""
    v = _base()
    rest = N - ANOMALY
    if kind == "spike":
        v[ANOMALY] += 40.0
    elif kind == "level_shift":
        v[ANOMALY:] += 30.0
    elif kind == "drift":
        v[ANOMALY:] += 0.1 * np.arange(rest)
    elif kind == "seasonal_break":
        v[ANOMALY:] = 50 + np.random.default_rng(8).normal(0.0, 1.0, rest)
    return v


_CACHE: dict[tuple[str, str], ScoredSeries] = {}


def _scored(cls: type[Detector], kind: str) -> ScoredSeries:
    key = (cls.__name__, kind)
    if key not in _CACHE:
        _CACHE[key] = cls().score(_timestamps(), _with(kind))
    return _CACHE[key]


def _false_positive_rate(scored: ScoredSeries, clean: np.ndarray) -> float:
    score = scored.score
    mask = clean & np.isfinite(score)
    assert mask.sum() > DAY  # enough scored clean points to mean something
    return float(np.mean(score[mask] > 1))


# --------------------------------------------------------------------------- anomalies


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_spike_scores_above_one_and_clean_stretches_stay_inside(cls: type[Detector]) -> None:
    scored = _scored(cls, "spike")
    assert scored.score[ANOMALY] > 1
    idx = np.arange(N)
    clean = (idx < ANOMALY - 6) | (idx > ANOMALY + 6)
    assert _false_positive_rate(scored, clean) < 0.02


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_level_shift_first_points_score_above_one(cls: type[Detector]) -> None:
    scored = _scored(cls, "level_shift")
    assert np.all(scored.score[ANOMALY : ANOMALY + 3] > 1)
    assert _false_positive_rate(scored, np.arange(N) < ANOMALY) < 0.02


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
@pytest.mark.parametrize("kind", ["drift", "seasonal_break"])
def test_slow_anomalies_keep_the_clean_part_quiet(cls: type[Detector], kind: str) -> None:
    # Adaptive baselines follow a slow drift and soon relearn a broken daily
    # pattern, so only the clean part is asserted (and the break's onset below).
    scored = _scored(cls, kind)
    assert _false_positive_rate(scored, np.arange(N) < ANOMALY) < 0.02


@pytest.mark.parametrize("cls", [SeasonalSTL, HoltWinters], ids=lambda c: c.name)
def test_seasonal_detectors_flag_the_daily_pattern_stopping(cls: type[Detector]) -> None:
    scored = _scored(cls, "seasonal_break")
    assert np.all(scored.score[ANOMALY : ANOMALY + 3] > 1)


def test_seasonal_detectors_are_tighter_than_robust_z_on_a_daily_series() -> None:
    widths = {}
    for cls in DETECTORS:
        scored = _scored(cls, "spike")
        widths[cls.name] = float(np.nanmedian((scored.upper - scored.expected)[3 * DAY :]))
    # Gaussian noise sigma = 1: BAND_K * sigma = 3.5; STL's band still pools the
    # same-hour residuals of its first two (non-seasonal) days.
    assert widths["stl"] < 6
    assert widths["holt_winters"] < 5
    assert widths["robust_z"] > 15  # the daily swing is inside its band


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_calibration_on_white_noise(cls: type[Detector]) -> None:
    v = 100 + np.random.default_rng(3).normal(0.0, 2.0, 2 * DAY)
    scored = cls().score(_timestamps(2 * DAY), v)
    ok = np.isfinite(scored.score)
    assert np.mean(scored.score[ok] <= 1) > 0.98
    half = np.nanmedian(scored.upper - scored.expected)
    assert 4.5 < half < 9.0  # ~3 sigma, sigma = 2


# --------------------------------------------------------------------------- causality


def _causality_series() -> tuple[FloatArray, FloatArray]:
    ts = _timestamps()
    v = _with("spike")
    v[100:105] = np.nan
    v[700:760] = np.nan
    keep = np.ones(N, dtype=bool)
    keep[[300, 301, 640, 900]] = False  # missing samples: timestamps absent too
    return ts[keep], v[keep]


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_scores_are_causal(cls: type[Detector]) -> None:
    ts, v = _causality_series()
    full = cls().score(ts, v)
    for n in (60, 333, 612, 650, 801, 1000):
        part = cls().score(ts[:n], v[:n])
        for field in ("expected", "lower", "upper", "score"):
            np.testing.assert_allclose(
                getattr(part, field),
                getattr(full, field)[:n],
                rtol=1e-9,
                atol=1e-9,
                equal_nan=True,
                err_msg=f"{cls.name}.{field} at n={n}",
            )


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_future_values_do_not_change_the_past(cls: type[Detector]) -> None:
    ts = _timestamps()
    v = _base()
    w = v.copy()
    w[900:] += 1000.0  # rewrite the future
    a = cls().score(ts, v)
    b = cls().score(ts, w)
    np.testing.assert_array_equal(a.score[:900], b.score[:900])


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_band_excludes_the_point_itself(cls: type[Detector]) -> None:
    """``band[i]`` uses ``values[:i]``: changing ``values[i]`` moves only its score."""
    ts, v = _timestamps(), _base()
    base = cls().score(ts, v)
    for k in (400, 700, 1000):
        w = v.copy()
        w[k] += 100.0
        moved = cls().score(ts, w)
        for field in ("expected", "lower", "upper"):
            np.testing.assert_array_equal(
                getattr(moved, field)[: k + 1], getattr(base, field)[: k + 1], err_msg=field
            )
        assert moved.score[k] > 1


@pytest.mark.parametrize(
    "detector",
    [RobustZ(), SeasonalSTL(weekly=False, history_periods=2), HoltWinters(history_periods=2)],
    ids=lambda d: d.name,
)
def test_history_points_of_context_reproduce_the_full_scores(detector: Detector) -> None:
    """Rescoring a tail with ``history_points`` of context reproduces the scores (what
    lets the service fetch a bounded history)."""
    n = 12 * DAY
    ts, v = _timestamps(n), _base(n=n)
    v[3 * DAY + 10] += 50.0
    start = n - 40 - detector.history_points(STEP)
    assert start > 0
    full = detector.score(ts, v)
    tail = detector.score(ts[start:], v[start:])
    for field in ("expected", "upper", "score"):
        np.testing.assert_allclose(
            getattr(tail, field)[-40:], getattr(full, field)[-40:], rtol=1e-9, equal_nan=True
        )


# --------------------------------------------------------------------------- gaps, sizes


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_nan_gaps_score_nan_and_do_not_crash(cls: type[Detector]) -> None:
    ts = _timestamps()
    v = _base()
    gaps = np.zeros(N, dtype=bool)
    gaps[[50, 51, 400, 655]] = True
    gaps[800:900] = True
    v[gaps] = np.nan
    v[901] = np.inf  # a Prometheus +Inf is a missing point too
    scored = cls().score(ts, v)
    assert np.all(np.isnan(scored.score[gaps]))
    assert np.isnan(scored.score[901])
    after = np.isfinite(scored.score[905:])
    assert after.mean() > 0.95  # scoring resumes after the long gap
    assert np.mean(scored.score[905:][after] > 1) < 0.02


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_points_right_after_long_gaps_are_scored(cls: type[Detector]) -> None:
    # A sparse export (NAB's travel times, a flaky scrape target): bursts of 40 points
    # 10 min apart with 12 h of silence between them, so a block's trend history
    # (64 cells) never holds 8 points. Every point after the warm-up gets a score,
    # including the first ones after each gap, and a spike there is found.
    bursts, size, step, silence = 12, 40, 600.0, 12 * 3600.0
    ts = np.concatenate(
        [T0 + b * (size * step + silence) + step * np.arange(size) for b in range(bursts)]
    )
    v = 100 + np.random.default_rng(3).normal(0.0, 5.0, ts.size)
    spike = 8 * size + 1  # the second point after the 8th gap
    v[spike] += 200.0
    scored = cls().score(ts, v)
    later = scored.score[3 * size :]
    assert np.isfinite(later).all()
    assert scored.score[spike] > 3
    assert np.mean(np.delete(scored.score, spike)[3 * size :] > 1) < 0.02


def _spike_then_gap() -> tuple[FloatArray, FloatArray, int]:
    """A sparse series (three points 10 min apart every 80 min, so no daily fit) at
    100, a 50 min spike to ~4,700, a 5 h gap, then 100 again: NAB's TravelTime_387
    on 2015-09-11. Returns the timestamps, the values and the first row after the gap."""
    step = 600.0

    def triples(t0: float, hours: int) -> FloatArray:
        per = hours * 6 // 8
        return np.concatenate([t0 + k * 8 * step + step * np.arange(3) for k in range(per)])

    before = triples(T0, 36)
    spike = before[-1] + step * np.arange(1, 6)
    after = triples(spike[-1] + 5 * 3600.0, 12)
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            100 + rng.normal(0.0, 5.0, before.size),
            [4600.0, 4550.0, 4900.0, 4800.0, 4700.0],
            100 + rng.normal(0.0, 5.0, after.size),
        ]
    )
    return np.concatenate([before, spike, after]), values, before.size + spike.size


@pytest.mark.parametrize("name", ["stl", "holt_winters", "ensemble"])
def test_a_spike_before_a_long_gap_does_not_make_the_return_to_normal_a_dip(name: str) -> None:
    # STL's robust level + trend used to be fitted on the 64 cells before each block,
    # across the gap: half the few points there were the spike, so it extrapolated to
    # ~17,000 after the gap and then, the spike leaving that history, to -1,500, paging
    # three times on normal points. Only points after a gap of more than 8 steps
    # count for a slope; without 8 of them, the median of the last 64 observed points.
    ts, v, first_after = _spike_then_gap()
    scored = registry.get_detector(name).score(ts, v)
    fired = np.flatnonzero(alarms(scored, WindowPolicy()))
    assert first_after - 5 in fired  # the spike itself pages
    assert not (fired >= first_after).any(), ts[fired[fired >= first_after]] - ts[first_after]
    assert np.all(np.abs(scored.expected[first_after:] - 100) < 30)
    # and still causally: a prefix that ends inside the gap's aftermath scores the same
    for n in (first_after + 1, first_after + 10):
        part = registry.get_detector(name).score(ts[:n], v[:n])
        np.testing.assert_array_equal(part.score, scored.score[:n])


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_too_short_raises_insufficient_data(cls: type[Detector]) -> None:
    n = cls.min_points - 1
    with pytest.raises(InsufficientData):
        cls().score(_timestamps(n), _base(n=n))
    v = np.full(3 * cls.min_points, np.nan)
    v[: cls.min_points - 1] = 1.0
    with pytest.raises(InsufficientData):
        cls().score(_timestamps(v.size), v)


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_shortest_input_scores_something_and_warm_up_is_nan(cls: type[Detector]) -> None:
    n = cls.min_points
    scored = cls().score(_timestamps(n), _base(n=n))
    for field in ("expected", "lower", "upper", "score"):
        assert np.isnan(getattr(scored, field)[0])
    assert np.isfinite(scored.score[-1])


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_flat_series_blip_alarms_float_noise_does_not(cls: type[Detector]) -> None:
    n = 400
    ts = _timestamps(n)
    flat = np.full(n, 5.0)
    flat[300] = 6.0
    scored = cls().score(ts, flat)
    assert scored.score[300] > 1
    assert np.all(np.isfinite(scored.upper[300:]))
    assert np.all(scored.upper[300:] > scored.lower[300:])  # never zero width
    noisy = 5.0 + 1e-12 * np.random.default_rng(1).standard_normal(n)
    assert np.nanmax(cls().score(ts, noisy).score) <= 1


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_quantised_series_does_not_alarm_on_its_usual_steps(cls: type[Detector]) -> None:
    rng = np.random.default_rng(5)
    n = 600
    v = 3.0 + (rng.random(n) < 0.3).astype(np.float64)  # mostly 3, often 4
    v[500] = 9.0
    scored = cls().score(_timestamps(n), v)
    ok = np.isfinite(scored.score)
    assert np.mean(scored.score[ok][:-100] > 1) < 0.02
    assert scored.score[500] > 1


@pytest.mark.parametrize(
    ("step", "n", "jitter"), [(15.0, 3000, 0.0), (3600.0, 480, 0.0), (300.0, 900, 40.0)]
)
def test_other_steps_and_jittered_timestamps(step: float, n: int, jitter: float) -> None:
    rng = np.random.default_rng(4)
    ts = T0 + np.arange(n) * step + rng.uniform(-jitter, jitter, n)
    v = 10 + np.sin(2 * np.pi * ts / 86400) + rng.normal(0, 0.1, n)
    for cls in DETECTORS:
        scored = cls().score(ts, v)
        assert np.isfinite(scored.score[-1])
        assert np.nanmean(scored.score > 1) < 0.03


# --------------------------------------------------------------------------- Holt-Winters


def test_holt_winters_recursion_matches_statsmodels() -> None:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    m = 24
    rng = np.random.default_rng(11)
    y = 20 + 5 * np.sin(2 * np.pi * np.arange(4 * m) / m) + 0.05 * np.arange(4 * m)
    y += rng.normal(0, 0.5, y.size)
    level0, profile = 20.0, 5 * np.sin(2 * np.pi * np.arange(m) / m)
    alpha, beta, gamma = 0.3, 0.1, 0.2
    lanes = Lanes(
        data=y[None, :],
        level=np.array([level0]),
        seasonal=profile[None, :],
        sigma=np.array([np.inf]),  # no clipping
        seen=np.array([8]),
        alpha=np.array([alpha]),
        beta=np.array([beta]),
        gamma=np.array([gamma]),
    )
    forecasts, _, _ = hw_recursion(lanes, damping=DAMPING, phase0=0, loss_from=0, loss_to=0)
    fit = ExponentialSmoothing(
        y,
        trend="add",
        damped_trend=True,
        seasonal="add",
        seasonal_periods=m,
        initialization_method="known",
        initial_level=level0,
        initial_trend=0.0,
        initial_seasonal=profile,
    ).fit(
        smoothing_level=alpha,
        smoothing_trend=beta,
        smoothing_seasonal=gamma,
        damping_trend=DAMPING,
        optimized=False,
    )
    np.testing.assert_allclose(forecasts[0], fit.fittedvalues, rtol=1e-10)


def _cron_steps(days: int, seed: int = 3) -> FloatArray:
    """A daily square wave (a batch window 06:00-12:00 at 5x the load) with noise."""
    phase = np.arange(days * DAY) % DAY
    busy = (phase >= DAY // 4) & (phase < DAY // 2)
    return np.where(busy, 100.0, 20.0) + np.random.default_rng(seed).normal(0, 2, days * DAY)


def test_phase_correction_returns_a_misfit_every_day_repeats_and_leaves_noise_alone() -> None:
    cells = np.arange(6 * DAY)
    rng = np.random.default_rng(0)
    expected = np.zeros(cells.size)
    values = rng.normal(0, 1, cells.size)
    values[cells % DAY == 100] += 30.0  # a forecast that misses one phase by ~30 a day
    correction = phase_correction(cells, values, expected, DAY, days=4)
    assert correction[: 4 * DAY].max() == 0  # four earlier days needed
    at_phase = correction[4 * DAY :][cells[4 * DAY :] % DAY == 100]
    assert np.all(at_phase > 25)
    elsewhere = correction[4 * DAY :][cells[4 * DAY :] % DAY != 100]
    assert np.mean(elsewhere != 0) < 0.2
    assert np.abs(elsewhere).max() < 1.5


def test_phase_correction_with_a_band_learns_a_miss_beyond_it_from_two_days() -> None:
    cells = np.arange(6 * DAY)
    rng = np.random.default_rng(1)
    expected = np.zeros(cells.size)
    values = rng.normal(0, 1, cells.size)
    values[cells % DAY == 100] += 30.0  # missed far beyond the band, every day
    values[cells % DAY == 200] += 2.5  # missed on one side, but inside the band
    band = (expected - 4.0, expected + 4.0)
    early = phase_correction(cells, values, expected, DAY, days=4, band=band)
    plain = phase_correction(cells, values, expected, DAY, days=4)
    young = (cells >= 2 * DAY) & (cells < 4 * DAY)
    assert np.all(early[young & (cells % DAY == 100)] > 25)  # from the third day
    assert np.all(plain[young] == 0)
    assert np.all(early[cells < 2 * DAY] == 0)  # one day is not enough
    assert np.all(early[young & (cells % DAY != 100)] == 0)  # noise and small misses stay
    np.testing.assert_array_equal(early[4 * DAY :], plain[4 * DAY :])  # four days: as before


def test_stl_does_not_page_every_day_at_a_sharp_daily_step_but_still_pages_a_spike() -> None:
    days = 9
    values = _cron_steps(days)
    spike = 8 * DAY + DAY // 3  # inside the busy window
    values[spike] += 40.0
    ts = _timestamps(days * DAY)
    corrected = SeasonalSTL().score(ts, values)
    fired = np.flatnonzero(alarms(corrected, WindowPolicy()))
    assert spike in fired
    assert np.all(fired[fired >= 6 * DAY] == spike)  # the edges stay quiet once learnt
    plain = SeasonalSTL(phase_days=0).score(ts, values)
    # Judged at the band's edge: the rate control would learn the daily misses as normal.
    fired_plain = np.flatnonzero(alarms(plain, WindowPolicy(rate=None)))
    assert np.count_nonzero((fired_plain >= 6 * DAY) & (fired_plain != spike)) >= 2


def test_detector_options_are_validated() -> None:
    with pytest.raises(InvalidTarget):
        RobustZ(window=3)
    with pytest.raises(InvalidTarget):
        SeasonalSTL(history_periods=1)
    with pytest.raises(InvalidTarget):
        SeasonalSTL(phase_days=-1)
    with pytest.raises(InvalidTarget):
        HoltWinters(scale_window=2.5)  # type: ignore[arg-type]
    assert RobustZ(window=48).history_points(STEP) == 49
    for cls in (SeasonalSTL, HoltWinters):
        assert cls().history_points(STEP) >= 4 * DAY  # four days of daily history


# --------------------------------------------------------------------------- registry


def test_registry_default_needs_only_packaged_files_and_pages_a_spike() -> None:
    # The default (the STL + transformer ensemble) loads the weights shipped in the
    # package: nothing to train or download before the first panel.
    assert registry.DEFAULT_DETECTOR in registry.available()
    detector = registry.get_detector(registry.DEFAULT_DETECTOR)
    assert isinstance(detector, Detector)
    scored = detector.score(_timestamps(), _with("spike"))
    assert scored.score[ANOMALY] > 3
    assert np.nanmax(scored.score[ANOMALY + 1 :]) < 3


def test_holt_winters_recursion_resumes_exactly_from_a_saved_state():
    m = 24
    rng = np.random.default_rng(3)
    y = 50 + 10 * np.sin(2 * np.pi * np.arange(5 * m) / m) + rng.normal(0, 1, 5 * m)
    y[40] = 200.0  # an outlier the clipping must treat the same in both runs
    y[50:66] = np.nan  # a long gap, saved in the middle
    y[70:73] = np.nan
    lanes = Lanes(
        data=np.stack([y, y]),
        level=np.array([50.0, 50.0]),
        seasonal=np.stack([10 * np.sin(2 * np.pi * np.arange(m) / m)] * 2),
        sigma=np.array([1.0, 2.0]),
        seen=np.array([8, 8]),
        alpha=np.array([0.15, 0.4]),
        beta=np.array([0.0, 0.1]),
        gamma=np.array([0.05, 0.2]),
    )
    whole, loss, _ = hw_recursion(lanes, damping=DAMPING, phase0=3, loss_from=10, loss_to=60)
    _, _, state = hw_recursion(
        lanes, damping=DAMPING, phase0=3, loss_from=10, loss_to=60, steps=range(60)
    )
    rest, loss2, _ = hw_recursion(
        lanes,
        damping=DAMPING,
        phase0=3,
        loss_from=10,
        loss_to=60,
        steps=range(60, 5 * m),
        state=state,
    )
    np.testing.assert_array_equal(whole[:, 60:], rest[:, 60:])
    np.testing.assert_array_equal(loss, loss2)


def _textbook_lane(
    y: FloatArray, level: float, seasonal: FloatArray, sigma: float, seen: int, params: FloatArray
) -> FloatArray:
    """One lane of ``hw_recursion`` written out with Python floats, step by step."""
    alpha, beta, gamma = (float(p) for p in params)
    season, trend, out = seasonal.astype(float).tolist(), 0.0, []
    gap = 0  # consecutive missing steps
    for t, value in enumerate(y.tolist()):
        phase = t % len(season)
        damped = DAMPING * trend
        base = level + damped
        yhat = base + season[phase]
        out.append(yhat if seen >= 8 else np.nan)
        observed, fresh = np.isfinite(value), np.isfinite(value) and np.isnan(level)
        known = observed and not fresh
        error = value - yhat if known else 0.0
        bound = 3.0 * sigma
        clipped = min(max(error, -bound), bound)
        before = level
        level = value - season[phase] if fresh else base + alpha * clipped
        trend = damped + alpha * beta * clipped
        gap = 0 if observed else gap + 1
        if gap > 8:  # a long gap: the state stops coasting
            level, trend = before, 0.0
        season[phase] += gamma * clipped
        if known and np.isfinite(sigma):
            sigma = math.sqrt(0.95 * sigma**2 + 0.05 * min(error**2, bound**2) / 0.9707)
        seen += int(observed)
    return np.asarray(out)


def test_holt_winters_lanes_step_exactly_as_the_textbook_recursion():
    """Every lane, whether the step takes the all-observed shortcut or not (a gap, a
    long gap, a lane not started yet, no clipping scale), forecasts bit for bit as the
    equations written out one lane at a time; lanes given as views of time-major
    arrays too."""
    m, n = 24, 6 * 24
    rng = np.random.default_rng(5)
    y = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / m) + rng.normal(0, 1, n)
    y += 0.2 * np.arange(n)  # a trend, for the long gap to drop
    y[30] = 400.0
    y[90:95] = np.nan  # a short gap: the state coasts over it
    y[110:130] = np.nan  # a long one: the trend coasts 8 steps of it, then stops
    profile = 10 * np.sin(2 * np.pi * np.arange(m) / m)
    params = np.array([(0.05, 0.0, 0.05), (0.15, 0.1, 0.2), (0.4, 0.1, 0.2), (0.4, 0.0, 0.05)])
    level0 = np.array([50.0, 50.0, np.nan, 49.0])
    sigma0 = np.array([1.0, 2.0, 1.5, np.inf])
    seen0 = np.array([8, 8, 0, 8])
    data = np.stack([y] * 4)
    for data_view, seasonal_view in (
        (data, np.stack([profile] * 4)),
        (np.ascontiguousarray(data.T).T, np.ascontiguousarray(np.stack([profile] * 4).T).T),
    ):
        lanes = Lanes(
            data=data_view,
            level=level0,
            seasonal=seasonal_view,
            sigma=sigma0,
            seen=seen0,
            alpha=params[:, 0].copy(),
            beta=params[:, 1].copy(),
            gamma=params[:, 2].copy(),
        )
        forecasts, _, _ = hw_recursion(lanes, damping=DAMPING, phase0=0, loss_from=0, loss_to=0)
        for lane in range(4):
            expected = _textbook_lane(
                y, level0[lane], profile, sigma0[lane], int(seen0[lane]), params[lane]
            )
            np.testing.assert_array_equal(forecasts[lane], expected)


def test_holt_winters_extrapolates_its_trend_over_at_most_8_missing_steps() -> None:
    # A rising series (a trend the lanes learn), then the data stops. Over a gap of up
    # to 8 steps the damped trend coasts as usual; over a longer one it coasts for
    # those 8 steps and stops: it used to be extrapolated over the whole gap.
    y = 0.5 * np.arange(120.0) + np.random.default_rng(2).normal(0, 0.1, 120)
    before = 60

    def lanes_with_gap(length: int) -> Lanes:
        data = y.copy()
        data[before : before + length] = np.nan
        return Lanes(
            data=data[None, :],
            level=np.array([np.nan]),
            seasonal=None,
            sigma=np.array([np.inf]),
            seen=np.array([0]),
            alpha=np.array([0.4]),
            beta=np.array([0.1]),
            gamma=np.array([0.0]),
        )

    for length in (8, 9, 40):
        lanes = lanes_with_gap(length)
        forecasts, _, _ = hw_recursion(lanes, damping=DAMPING, phase0=0, loss_from=0, loss_to=0)
        _, _, last = hw_recursion(
            lanes, damping=DAMPING, phase0=0, loss_from=0, loss_to=0, steps=range(before)
        )
        assert last.trend[0] > 0.4  # it learnt the slope of 0.5 a step
        # steps of damped trend in the forecast: each missing step's, and its own
        coasted = length + 1 if length <= 8 else 8
        trend = last.trend[0] * sum(DAMPING**k for k in range(1, coasted + 1))
        assert forecasts[0, before + length] == pytest.approx(last.level[0] + trend, rel=1e-12)


def test_holt_winters_after_a_spike_and_a_long_gap_does_not_page_the_return_to_normal() -> None:
    # A 30 min spike, then a 6 h scrape gap, then the usual daily curve. The spike's
    # clipped errors pull the trend up; extrapolated over the whole gap it made the normal
    # points after it look 11 below the forecast, and the first one paged again.
    n = 6 * DAY
    rng = np.random.default_rng(1)
    ts = _timestamps(n)
    v = 100 + 20 * np.sin(2 * np.pi * ts / 86_400) + rng.normal(0, 2, n)
    spike = 5 * DAY
    v[spike : spike + 6] += 100
    keep = np.ones(n, dtype=bool)
    keep[spike + 6 : spike + 6 + 72] = False
    ts, v = ts[keep], v[keep]
    scored = HoltWinters().score(ts, v)
    first_after = spike + 6
    fired = np.flatnonzero(alarms(scored, WindowPolicy()))
    assert spike in fired  # the spike itself pages
    assert not (fired >= first_after).any(), fired[fired >= first_after] - first_after
    misses = scored.expected[first_after : first_after + 8] - v[first_after : first_after + 8]
    assert np.mean(np.abs(misses)) < 5  # noise of 2; it was 11 with the trend carried over
    for m in (first_after + 1, first_after + 10):  # causal: a prefix scores the same
        part = HoltWinters().score(ts[:m], v[:m])
        np.testing.assert_array_equal(part.score, scored.score[:m])


def test_a_holt_winters_refresh_reuses_the_warm_up_and_gives_identical_scores():
    step = 300.0
    n = 288 * 6
    rng = np.random.default_rng(8)
    ts = 1_700_000_000 + step * np.arange(n)
    vs = 100 + 20 * np.sin(2 * np.pi * ts / 86_400) + rng.normal(0, 2, n)
    caches = ForecastCaches()  # cold
    cold = HoltWinters(caches=caches).score(ts, vs)
    assert len(caches.hw_warm_states) >= 1
    # the latest block's warm-up now comes from the cache
    warm = HoltWinters(caches=caches).score(ts, vs)
    np.testing.assert_array_equal(cold.expected, warm.expected)
    np.testing.assert_array_equal(cold.score, warm.score)
    changed = vs.copy()
    changed[n - 400] += 50  # data inside a warm-up changes: the cached state must not be used
    caches = ForecastCaches()
    fresh = HoltWinters(caches=caches).score(ts, changed)
    HoltWinters(caches=caches).score(ts, vs)  # caches the unchanged series' states
    again = HoltWinters(caches=caches).score(ts, changed)
    np.testing.assert_array_equal(fresh.expected, again.expected)


@pytest.mark.parametrize(
    ("step", "days"),
    [(15.0, 3.5), (60.0, 4.5), (3600.0, 40)],
    ids=["sub-block and daily fits", "daily fits", "weekly fits"],
)
def test_stl_forecasts_reused_from_an_earlier_window_equal_a_cold_fit(
    step: float, days: float
) -> None:
    n = int(days * 86_400 / step)
    rng = np.random.default_rng(11)
    ts = T0 + step * np.arange(n)
    phase = 2 * np.pi * ts / 86_400
    values = 50 + 10 * np.sin(phase) + rng.normal(0, 1, n)
    values[n // 3 : n // 3 + n // 50] = np.nan  # a scrape outage
    values[2 * n // 3 :] += 15  # a level shift
    detector = SeasonalSTL(caches=ForecastCaches())
    detector.score(ts[: n - n // 10], values[: n - n // 10])
    # A later window: it starts later (old points dropped) and has new points.
    later = slice(n // 20, None)
    reused = detector.score(ts[later], values[later])
    detector.caches.clear()
    cold = detector.score(ts[later], values[later])
    for field in ("expected", "lower", "upper", "score"):
        np.testing.assert_array_equal(getattr(reused, field), getattr(cold, field), err_msg=field)
    assert np.isfinite(cold.score[-100:]).all()


@pytest.mark.parametrize("days", [2, 3, 4, 5, 8])
def test_holt_winters_seasonal_start_takes_each_phase_median_as_row_nanmedian(days):
    """The per-phase median over the days (sorting network for four) gives exactly the
    values of ``row_nanmedian`` on the phases' rows, with holes, infinities and ties."""
    rng = np.random.default_rng(days)
    by_day = np.round(rng.normal(size=(6, days, 97)) * 3)
    by_day[rng.random(by_day.shape) < 0.3] = np.nan
    by_day[rng.random(by_day.shape) < 0.03] = np.inf
    by_day[rng.random(by_day.shape) < 0.03] = -np.inf
    by_day[0, :, :10] = np.nan  # phases without any value
    rows = by_day.transpose(0, 2, 1).reshape(-1, days)
    with np.errstate(invalid="ignore"):  # inf * 0 where an infinity is a middle value
        expected = row_nanmedian(rows).reshape(6, 97)
        assert np.array_equal(_day_medians(by_day), expected, equal_nan=True)


def _flat_floor_by_definition(values, window, magnitude, first):
    """The band floor row by row: half the smallest change between consecutive finite
    points in the trailing window (row excluded) that is above the row's relative
    floor, the relative floor, and the absolute floor."""
    out = np.full(values.size, np.nan)
    finite = np.flatnonzero(np.isfinite(values))
    change = np.full(values.size, np.nan)
    change[finite[1:]] = np.abs(np.diff(values[finite]))
    for i in range(values.size):
        relative = REL_FLOOR * abs(magnitude[i])
        above = [c for c in change[max(i - window, 0) : i] if c > relative] if i >= first else []
        quantum = min(above) if above and math.isfinite(min(above)) else 0.0
        out[i] = np.maximum(np.maximum(0.5 * quantum, relative), ABS_FLOOR)  # NaN stays
    return out


@pytest.mark.parametrize(
    "case", ["noisy", "quantised", "changes below the relative floor", "holes", "mixed"]
)
def test_band_floor_is_the_smallest_change_above_the_relative_floor(case):
    rng = np.random.default_rng(len(case))
    values = np.round(rng.normal(size=900) * 2 + 100, 1 if case != "quantised" else 0)
    magnitude = values + 0.3
    if case == "changes below the relative floor":  # every change is float noise here
        values = 1e10 + np.round(rng.normal(size=900) * 1e3)
        magnitude = values.copy()
    if case == "holes":
        values[rng.random(900) < 0.2] = np.nan
        magnitude[rng.random(900) < 0.1] = np.nan
    if case == "mixed":  # some windows settle on the smallest change, others do not
        magnitude[300:600] = 3e6
    with np.errstate(invalid="ignore"):
        got = flat_floor(values, 48, magnitude, first=100)
        expected = _flat_floor_by_definition(values, 48, magnitude, first=100)
    assert np.array_equal(got, expected, equal_nan=True)
