"""Per-series change evidence (onset, magnitude, change events) and counter rates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plugin_backend.errors import InvalidTarget
from plugin_backend.rca.counters import is_counter, rates_for_counters, to_rates
from plugin_backend.rca.evidence import (
    CHANGE_EVENT_MAGNITUDE,
    Evidence,
    compute_evidence,
    deviation,
    infer_step,
)
from plugin_backend.types import Series

STEP = 15.0
AT = 1_700_000_000.0
START = AT - 5400.0  # window 1800 s after a 3600 s baseline
T = START + STEP * np.arange(int(5400 / STEP) + 1)


def _series(values: np.ndarray, name: str = "m", t: np.ndarray = T, **labels: str) -> Series:
    return Series({"__name__": name, **labels}, t, values)


def _noise(seed: int, level: float = 10.0, sigma: float = 0.5) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0.0, sigma, T.size)


@pytest.mark.parametrize("seed", range(8))
def test_step_onset_within_one_step(seed: int) -> None:
    onset = AT - 700.0 + STEP * (seed % 3)
    x = _noise(seed) + np.where(onset <= T, 4.0, 0.0)
    ev = compute_evidence(_series(x), at_s=AT)
    assert ev.changed
    assert ev.kind == "metric"
    assert ev.direction == "up"
    assert ev.onset_s is not None
    assert abs(ev.onset_s - onset) <= STEP
    assert ev.magnitude > 5
    assert ev.incident_value == pytest.approx(14.0, abs=0.5)
    assert ev.baseline == pytest.approx(10.0, abs=0.2)


@pytest.mark.parametrize("seed", range(8))
def test_ramp_onset_within_one_step(seed: int) -> None:
    onset = AT - 900.0
    ramp = np.clip((T - onset) / 180.0, 0.0, 1.0) * 10.0  # 3 minute ramp
    ev = compute_evidence(_series(_noise(seed) - ramp), at_s=AT)
    assert ev.changed
    assert ev.direction == "down"
    assert ev.onset_s is not None
    assert abs(ev.onset_s - onset) <= 2 * STEP  # the first ramp sample is inside the noise
    assert ev.onset_s >= onset - STEP


def test_slow_leak_is_found_early() -> None:
    onset = AT - 1200.0
    leak = np.clip(T - onset, 0.0, None) * 0.01  # +12 over 20 min, noise 0.5
    ev = compute_evidence(_series(_noise(3) + leak), at_s=AT)
    assert ev.changed
    assert ev.onset_s is not None
    assert onset - STEP <= ev.onset_s <= onset + 300.0


def test_pure_noise_rarely_changes() -> None:
    changed = [compute_evidence(_series(_noise(s)), at_s=AT).changed for s in range(60)]
    assert sum(changed) <= 2


def test_heavy_tailed_noise_and_single_spikes_are_not_changes() -> None:
    rng = np.random.default_rng(5)
    x = 10.0 + rng.standard_t(3, T.size) * 0.5
    x[T.size - 50] = 1000.0  # one wild sample
    x[T.size - 20] = -500.0
    ev = compute_evidence(_series(x), at_s=AT)
    assert not ev.changed
    assert ev.onset_s is None


def test_a_change_the_alert_caught_early_counts_though_its_last_sample_eased() -> None:
    # The alert fires two samples into the trouble (5 min data: 10 min); the latest
    # sample has eased back. What comes after at_s is unseen, not back to normal.
    x = _noise(4)
    x[-3:-1] = 60.0
    ev = compute_evidence(_series(x), at_s=AT)
    assert ev.changed
    assert ev.onset_s == pytest.approx(T[-3])


def test_the_same_two_sample_burst_well_before_the_alert_is_no_change() -> None:
    x = _noise(4)
    x[-30:-28] = 60.0  # followed by 28 normal samples: a blip, over
    assert not compute_evidence(_series(x), at_s=AT).changed


def test_drifting_baseline_is_not_a_change_but_a_step_on_it_is() -> None:
    drift = (T - START) * 0.002  # +10.8 over 90 min: 20 sigma if the trend were ignored
    ev = compute_evidence(_series(_noise(1) + drift), at_s=AT)
    assert not ev.changed
    onset = AT - 600.0
    ev = compute_evidence(_series(_noise(1) + drift + np.where(onset <= T, 5.0, 0.0)), at_s=AT)
    assert ev.changed
    assert ev.onset_s is not None
    assert abs(ev.onset_s - onset) <= STEP


def test_nan_gaps_are_skipped() -> None:
    onset = AT - 600.0
    x = _noise(2) + np.where(onset <= T, 4.0, 0.0)
    x[::7] = np.nan
    x[100:140] = np.nan  # a scrape outage inside the baseline
    x[-30:-25] = np.inf
    ev = compute_evidence(_series(x), at_s=AT)
    assert ev.changed
    assert ev.onset_s is not None
    assert abs(ev.onset_s - onset) <= 2 * STEP
    assert np.isfinite(ev.magnitude)


def test_all_nan_and_empty_series_are_unchanged() -> None:
    assert not compute_evidence(_series(np.full(T.size, np.nan)), at_s=AT).changed
    empty = Series({"__name__": "m"}, np.array([]), np.array([]))
    ev = compute_evidence(empty, at_s=AT)
    assert not ev.changed
    assert ev.onset_s is None


def test_samples_after_at_s_are_ignored() -> None:
    x = _noise(4)
    t = np.concatenate([T, T[-1] + STEP * np.arange(1, 41)])
    x = np.concatenate([x, np.full(40, 100.0)])  # the future: not seen at AT
    assert not compute_evidence(_series(x, t=t), at_s=AT).changed


def test_series_that_appears_is_a_change_event() -> None:
    t = T[T >= AT - 500.0]
    ev = compute_evidence(_series(np.ones(t.size), "app_build_info", t=t), at_s=AT)
    assert ev.kind == "change_event"
    assert ev.event == "appeared"
    assert ev.changed
    assert ev.onset_s == pytest.approx(t[0])
    assert ev.magnitude == CHANGE_EVENT_MAGNITUDE
    assert ev.direction == "up"


def test_series_that_disappears_is_a_change_event() -> None:
    t = T[T < AT - 500.0]
    ev = compute_evidence(_series(np.ones(t.size), "app_build_info", t=t), at_s=AT)
    assert ev.kind == "change_event"
    assert ev.event == "disappeared"
    assert ev.direction == "down"
    assert ev.onset_s == pytest.approx(t[-1] + STEP)


def test_series_gone_before_the_window_or_covering_only_the_window_is_no_event() -> None:
    early = T[T < AT - 2500.0]
    assert not compute_evidence(_series(np.ones(early.size), t=early), at_s=AT).changed
    window_only = T[T >= AT - 1800.0]
    ev = compute_evidence(_series(_noise(0)[-window_only.size :], t=window_only), at_s=AT)
    assert ev.kind == "metric"
    assert not ev.changed


def test_change_that_predates_the_window_has_no_onset() -> None:
    x = _noise(6) + np.where(AT - 1900.0 <= T, 5.0, 0.0)  # 100 s before the window
    ev = compute_evidence(_series(x), at_s=AT)
    assert ev.onset_s is None
    assert not ev.changed


def test_constant_series_uses_a_scale_floor() -> None:
    x = np.ones(T.size)
    x[T >= AT - 300.0] = 0.0  # up -> 0
    ev = compute_evidence(_series(x, "up"), at_s=AT)
    assert ev.changed
    assert ev.direction == "down"
    assert ev.baseline_scale > 0
    assert ev.onset_s == pytest.approx(T[T >= AT - 300.0][0])


def test_to_dict_is_json_ready() -> None:
    t = T[T >= AT - 500.0]
    ev = compute_evidence(_series(np.ones(t.size), t=t), at_s=AT)
    data = ev.to_dict()
    assert data["baseline"] is None  # NaN for an appeared series
    assert data["kind"] == "change_event"
    json.dumps(data)
    assert isinstance(ev, Evidence)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"at_s": float("nan")}, "at_s"),
        ({"at_s": AT, "window_s": 0.0}, "window_s"),
        ({"at_s": AT, "baseline_s": -5.0}, "baseline_s"),
    ],
)
def test_bad_parameters_raise_invalid_target(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidTarget, match=field):
        compute_evidence(_series(_noise(0)), **kwargs)  # type: ignore[arg-type]


def test_infer_step() -> None:
    assert infer_step(T) == pytest.approx(STEP)
    assert infer_step(np.array([1.0])) is None


# --- counters ----------------------------------------------------------------


def test_to_rates_per_second_with_reset() -> None:
    t = np.arange(0.0, 100.0, 10.0)
    x = np.array([0, 10, 20, 30, 5, 15, 25, 35, 45, 55], dtype=float)
    r = to_rates(Series({"__name__": "req_total", "job": "a"}, t, x))
    assert np.isnan(r.values[0])
    np.testing.assert_allclose(r.values[1:4], 1.0)
    assert r.values[4] == pytest.approx(0.5)  # reset: 5 counted from zero over 10 s
    np.testing.assert_allclose(r.values[5:], 1.0)
    assert dict(r.labels) == {"__name__": "req_total", "job": "a"}
    np.testing.assert_array_equal(r.timestamps_s, t)


def test_to_rates_is_nan_safe_and_sorts() -> None:
    t = np.array([30.0, 0.0, 10.0, 20.0, 40.0])
    x = np.array([30.0, 0.0, np.nan, 20.0, 40.0])
    r = to_rates(Series({"__name__": "c_total"}, t, x))
    np.testing.assert_array_equal(r.timestamps_s, [0.0, 10.0, 20.0, 30.0, 40.0])
    assert np.isnan(r.values[0])
    assert np.isnan(r.values[1])
    assert r.values[2] == pytest.approx(1.0)  # 0 -> 20 over 20 s, across the gap
    np.testing.assert_allclose(r.values[3:], 1.0)
    assert len(to_rates(Series({}, np.array([1.0]), np.array([3.0])))) == 1


def test_counter_detection_and_bulk_conversion() -> None:
    t = np.arange(5.0)
    c = Series({"__name__": "http_requests_total"}, t, np.arange(5.0) * 2)
    g = Series({"__name__": "queue_depth"}, t, np.ones(5))
    assert is_counter(c)
    assert not is_counter(g)
    converted = rates_for_counters([c, g])
    assert converted[1] is g
    np.testing.assert_allclose(converted[0].values[1:], 2.0)


def test_deviation_curve_matches_the_evidence() -> None:
    x = _noise(3)
    x[T >= AT - 600] -= 10.0  # a drop of 20 sigma, 10 min before at_s
    ev, dev = deviation(_series(x), at_s=AT)
    assert ev == compute_evidence(_series(x), at_s=AT)
    assert ev.direction == "down"
    assert dev is not None
    assert dev.timestamps_s[0] >= AT - 1800
    assert dev.timestamps_s[-1] == AT
    assert dev.z.shape == dev.timestamps_s.shape
    assert float(np.median(dev.z[-10:])) > 10  # signed: positive is away, along direction
    assert abs(float(np.median(dev.z[:20]))) < 2
    new = T >= AT - 600
    _, none = deviation(_series(np.ones(int(new.sum())), t=T[new]), at_s=AT)
    assert none is None  # a change event has no curve


@pytest.mark.parametrize("seed", range(6))
def test_onset_of_a_huge_step_is_not_dragged_back_by_slow_noise(seed: int) -> None:
    # Strongly autocorrelated noise wanders a few sigma away in runs; a 100 sigma
    # jump must not walk its onset back into such a run.
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, 1.0, T.size)
    x = np.empty(T.size)
    x[0] = e[0]
    for i in range(1, T.size):
        x[i] = 0.95 * x[i - 1] + e[i]
    onset = AT - 600.0
    x = 10.0 + 0.2 * x + np.where(onset <= T, 60.0, 0.0)
    ev = compute_evidence(_series(x), at_s=AT)
    assert ev.changed
    assert ev.onset_s is not None
    assert abs(ev.onset_s - onset) <= STEP


def test_deviation_reports_the_baselines_own_largest_excursion() -> None:
    quiet = deviation(_series(_noise(3)), at_s=AT)[1]
    assert quiet is not None
    assert quiet.baseline_peak < 5.0
    bursty = _noise(3) + np.where((T >= START + 600) & (T < START + 900), 10.0, 0.0)
    dev = deviation(_series(bursty), at_s=AT)[1]
    assert dev is not None
    assert dev.baseline_peak > 10.0  # a 20 sigma burst inside the baseline


@pytest.mark.parametrize("name", ["availability_percent", "petshop_availability", "success_ratio"])
def test_a_bounded_metric_registers_a_drop_of_a_few_points(name: str) -> None:
    full = 1.0 if name.endswith("_ratio") else 100.0
    x = np.full(T.size, full)
    x[T >= AT - 600.0] = 0.955 * full  # 100 -> 95.5
    ev = compute_evidence(_series(x, name), at_s=AT)
    assert ev.changed
    assert ev.direction == "down"
    assert ev.magnitude >= 10.0


def test_an_unbounded_metric_keeps_its_level_floor() -> None:
    x = np.full(T.size, 100.0)  # 100 requests, then 95.5: noise for a rate
    x[T >= AT - 600.0] = 95.5
    assert not compute_evidence(_series(x, "requests_per_second"), at_s=AT).changed
    low = np.full(T.size, 0.01)  # a low error ratio keeps its level's floor
    low[T >= AT - 600.0] = 0.0102
    assert not compute_evidence(_series(low, "errors_ratio"), at_s=AT).changed


def test_a_setting_that_moved_by_one_is_a_change_however_small_next_to_its_level() -> None:
    # A deployment's generation 45 -> 46: 2 % of its level, below the relative noise
    # floor of a measurement, but an exact constant has no noise at all.
    moved = AT - 600.0
    ev, dev = deviation(_series(np.where(moved <= T, 46.0, 45.0), "deployment_generation"), at_s=AT)
    assert ev.changed
    assert ev.kind == "metric"
    assert ev.magnitude == CHANGE_EVENT_MAGNITUDE
    assert ev.onset_s == pytest.approx(moved, abs=STEP)
    assert ev.direction == "up"
    assert ev.incident_value == 46.0
    assert dev is not None
    assert dev.setting


def test_measurements_that_sit_still_are_no_settings() -> None:
    moved = T >= AT - 600.0
    # Availability exactly at its bound, then a real drop: a measurement.
    availability = np.where(moved, 0.0, 100.0)
    ev, dev = deviation(_series(availability, "petshop_availability_percent"), at_s=AT)
    assert ev.changed
    assert dev is not None
    assert not dev.setting
    # Constant, then a value that keeps moving: judged as a measurement too.
    wobbly = np.where(moved, 50.0 + np.random.default_rng(3).normal(0, 5, T.size), 45.0)
    ev, dev = deviation(_series(wobbly, "queue_workers"), at_s=AT)
    assert dev is not None
    assert not dev.setting
    # A constant that stays put is unchanged.
    ev, dev = deviation(_series(np.full(T.size, 45.0), "deployment_generation"), at_s=AT)
    assert not ev.changed
