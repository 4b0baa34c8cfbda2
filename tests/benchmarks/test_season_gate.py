"""The seasonality gates the detection benchmark measures (benchmarks.season_gate):
what its --season tables rely on."""

from __future__ import annotations

import numpy as np

from benchmarks.fusion import member_fit
from benchmarks.season_gate import (
    GATE_STATISTICS,
    gated_normalized,
    seasonal_strength,
    skill_shares,
    strength_shares,
    trailing_errors,
)
from plugin_backend.scoring.alarm_rate import RatePolicy, SeriesFit

STEP = 300.0
DAY = 288  # points per day at a 5 min step
T0 = 1_700_006_400.0
POLICY = RatePolicy()
FS, FS_ROBUST, ACF = (GATE_STATISTICS.index(s) for s in ("fs", "fs_robust", "acf"))


def _series(days: int, amplitude: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = days * DAY
    ts = T0 + STEP * np.arange(n, dtype=np.float64)
    daily = amplitude * np.sin(2 * np.pi * np.arange(n) / DAY)
    return ts, 10.0 + daily + rng.normal(0.0, 1.0, n)


def test_a_daily_shape_is_strong_and_noise_is_weak() -> None:
    ts, seasonal = _series(8, 5.0, 0)
    _, noise = _series(8, 0.0, 0)
    strong = seasonal_strength(ts, seasonal)[:, 6 * DAY :]
    weak = seasonal_strength(ts, noise)[:, 6 * DAY :]
    assert np.nanmin(strong[FS]) > 0.8
    assert np.nanmin(strong[FS_ROBUST]) > 0.8
    # At most 3/4 on four days: the lag leaves three days of products.
    assert np.nanmin(strong[ACF]) > 0.6
    assert np.nanmax(weak[FS]) < 0.5
    assert np.nanmax(weak[ACF]) < 0.3


def test_the_statistic_reads_only_history_before_the_block() -> None:
    ts, values = _series(7, 5.0, 1)
    full = seasonal_strength(ts, values)
    assert np.isnan(full[:, : 2 * DAY]).all()  # under two days of history
    for n in (5 * DAY + 7, 6 * DAY):
        np.testing.assert_array_equal(seasonal_strength(ts[:n], values[:n]), full[:, :n])
    changed = values.copy()
    changed[6 * DAY :] += 100.0  # the future does not move the past's statistic
    np.testing.assert_array_equal(seasonal_strength(ts, changed)[:, : 6 * DAY], full[:, : 6 * DAY])


def test_a_gate_pages_with_its_weak_members_only_below_tau() -> None:
    statistic = np.array([np.nan, 0.1, 0.5, 0.9])
    shares = strength_shares(statistic, 0.6, "switch")
    np.testing.assert_array_equal(shares[:, 0], [0.0, 0.5, 0.5])  # unknown: the default
    np.testing.assert_array_equal(shares[:, 1], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(shares[:, 3], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(strength_shares(statistic, 0.6, "add")[:, 2], [1 / 3] * 3)
    np.testing.assert_allclose(shares.sum(axis=0), 1.0)  # the risk is never overspent


def test_equal_shares_are_the_union_the_alarm_layer_computes() -> None:
    rng = np.random.default_rng(2)
    rows = np.abs(rng.standard_t(4.0, (3, 12 * DAY))) / 2
    ts = T0 + STEP * np.arange(rows.shape[1], dtype=np.float64)
    fits = [member_fit(ts, row, POLICY) for row in rows]
    q = POLICY.risk(STEP)
    shares = np.zeros_like(rows)
    shares[1:] = 0.5
    union = SeriesFit(tuple(fits[1:]), tuple(rows[1:])).normalized(q, POLICY.fallback)
    np.testing.assert_array_equal(
        gated_normalized(list(rows), fits, shares, q, POLICY.fallback), union
    )


def test_skill_picks_the_member_with_the_smaller_trailing_error() -> None:
    _, values = _series(6, 5.0, 3)
    seasonal = 10.0 + 5.0 * np.sin(2 * np.pi * np.arange(values.shape[0]) / DAY)
    level = np.full(values.shape[0], 10.0)
    errors = trailing_errors(values, np.stack([level, seasonal, seasonal + 0.5]))
    assert np.isnan(errors[:, :256]).all()
    shares = skill_shares(errors, "best")
    np.testing.assert_array_equal(shares[:, -1], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(skill_shares(errors, "switch")[:, -1], [0.0, 0.5, 0.5])
