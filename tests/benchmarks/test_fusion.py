"""The combination rules the detection benchmark measures (benchmarks.fusion): what
its --fusion tables rely on."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fusion import FUSION_RULES, fused_normalized, member_fit, tail_probability
from plugin_backend.scoring.alarm_rate import DEFAULT_ALARMS_PER_DAY, RatePolicy, SeriesFit
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.windows import WindowPolicy, alarms

STEP = 300.0
DAY = 288  # points per day at a 5 min step
T0 = 1_700_006_400.0
POLICY = RatePolicy()


def _fused(rule: str, rows: np.ndarray) -> tuple[ScoredSeries, np.ndarray]:
    n = rows.shape[1]
    ts = T0 + STEP * np.arange(n, dtype=np.float64)
    zeros = np.zeros(n)
    scored = ScoredSeries(
        ts, zeros, zeros, zeros - 1, zeros + 1, np.fmax.reduce(rows, axis=0), member_scores=rows
    )
    fits = [member_fit(ts, row, POLICY) for row in rows]
    return scored, fused_normalized(rule, ts, list(rows), fits, POLICY)


def test_a_tail_probability_is_below_the_risk_exactly_where_the_score_passes_its_threshold() -> (
    None
):
    rng = np.random.default_rng(0)
    score = np.abs(rng.standard_t(4.0, 20 * DAY)) / 2
    ts = T0 + STEP * np.arange(score.shape[0], dtype=np.float64)
    fit = member_fit(ts, score, POLICY).point
    for q in (1e-4, 1e-3, 1e-2):
        threshold = fit.threshold(q, POLICY.fallback)
        fitted = np.isfinite(fit.initial)
        below = tail_probability(fit, score) < q
        np.testing.assert_array_equal(below[fitted], (score > threshold)[fitted])


def test_the_union_rule_is_what_the_alarm_layer_does() -> None:
    rng = np.random.default_rng(1)
    rows = np.abs(rng.standard_t(4.0, (2, 12 * DAY))) / 2
    scored, union = _fused("union", rows)
    fits = tuple(member_fit(scored.timestamps_s, row, POLICY) for row in rows)
    expected = SeriesFit(fits, tuple(rows)).normalized(POLICY.risk(STEP), POLICY.fallback)
    np.testing.assert_array_equal(union, expected)


@pytest.mark.parametrize("rule", FUSION_RULES)
def test_two_healthy_members_keep_about_the_promised_rate(rule: str) -> None:
    rng = np.random.default_rng(2)
    days = 90
    shared = np.abs(rng.standard_t(4.0, days * DAY))
    rows = np.stack([shared, 0.5 * shared + np.abs(rng.standard_t(4.0, days * DAY))]) / 2
    scored, normalized = _fused(rule, rows)
    fired = alarms(scored, WindowPolicy(), normalized=normalized)
    warm = 2 * 2000
    per_day = np.count_nonzero(fired[warm:]) / (days - warm / DAY)
    assert per_day <= 2 * DEFAULT_ALARMS_PER_DAY


@pytest.mark.parametrize("rule", FUSION_RULES)
def test_a_spike_only_one_member_sees_still_pages(rule: str) -> None:
    rng = np.random.default_rng(3)
    n = 30 * DAY
    rows = np.abs(rng.standard_t(4.0, (2, n))) / 2
    spike = 25 * DAY
    rows[1, spike : spike + 3] = 12.0  # the other member sees nothing there
    _, normalized = _fused(rule, rows)
    # Above its alarm threshold (whether it pages then is the window layer's call: a
    # series pages at most once per 4 h).
    assert normalized[spike] > 1


@pytest.mark.parametrize("rule", FUSION_RULES)
def test_a_fused_score_on_a_prefix_is_the_prefix_of_the_fused_score(rule: str) -> None:
    rng = np.random.default_rng(4)
    rows = np.abs(rng.standard_t(4.0, (2, 16 * DAY))) / 2
    _, full = _fused(rule, rows)
    for n in (9 * DAY + 5, 13 * DAY):
        _, part = _fused(rule, rows[:, :n])
        np.testing.assert_allclose(part, full[:n], equal_nan=True)
