"""The alarm threshold's history is a span of time at the scrape step too: a panel at
15 s scores days before its range, and a fault that recurs 6 h later pages again. And a
panel's alarms are those ``plugin-backend score`` raises on the same points."""

from __future__ import annotations

import numpy as np

from plugin_backend.config import Settings
from plugin_backend.detection import DetectionService, DetectOptions, alarm_lookback_points
from plugin_backend.scoring.alarm_rate import RatePolicy
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.registry import get_detector
from plugin_backend.scoring.windows import find_windows, pager_policy
from plugin_backend.types import Series, TimeRange

STEP = 15.0
DAY = 86_400.0
END = 1_767_225_600.0  # a multiple of every block on the grid
START = END - 6 * DAY
SECOND_FAULT = END - 2 * 3600
FIRST_FAULT = SECOND_FAULT - 6 * 3600


class _Source:
    """One gauge at 15 s: noise and the same 30 min fault twice, 6 h apart."""

    def __init__(self) -> None:
        self.ts = np.arange(START, END + STEP, STEP)
        self.values = 50.0 + np.random.default_rng(3).normal(0.0, 1.0, self.ts.size)
        for start in (FIRST_FAULT, SECOND_FAULT):
            self.values[(self.ts >= start) & (self.ts < start + 1800)] += 15.0

    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        assert step_s == STEP
        inside = (self.ts >= time_range.start_s) & (self.ts <= time_range.end_s)
        return [Series({"__name__": "gauge"}, self.ts[inside], self.values[inside])]


def test_the_lookback_is_days_at_15_s() -> None:
    policy = pager_policy()
    assert alarm_lookback_points(policy, STEP) * STEP > 3 * DAY
    assert alarm_lookback_points(policy, 300.0) == 2000 + 64 + 8  # 5 min: as before
    assert RatePolicy().points_per_sample(300.0) == 1


def test_a_fault_six_hours_after_the_same_fault_pages_on_a_15_s_panel() -> None:
    # With its default budget, the one the server's settings default to: 11,000 points
    # (the old default) held under two days at 15 s, not the threshold's window.
    service = DetectionService(_Source())
    assert service.max_history_points == Settings.model_fields["max_points_per_series"].default
    span = TimeRange(END - 3 * 3600, END)
    (found,) = service.detect("gauge", span, DetectOptions("robust_z"))
    assert found.step_s == STEP
    # The threshold was fitted on days of scores before the range, not 8 h.
    assert found.known.timestamps_s[0] <= span.start_s - 3 * DAY
    assert any(SECOND_FAULT <= w.start_s < SECOND_FAULT + 1800 for w in found.windows)


class _DailyGauge:
    """A gauge at 5 min with a daily shape, noise and a 40 min excursion near the end."""

    def __init__(self) -> None:
        self.ts = np.arange(END - 12 * DAY, END + 300.0, 300.0)
        rng = np.random.default_rng(11)
        self.values = 50 + 10 * np.sin(2 * np.pi * self.ts / DAY) + rng.normal(0, 1, self.ts.size)
        self.values[(self.ts >= END - 5 * 3600) & (self.ts < END - 5 * 3600 + 2400)] += 12.0

    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        inside = (self.ts >= time_range.start_s) & (self.ts <= time_range.end_s)
        return [Series({"__name__": "gauge"}, self.ts[inside], self.values[inside])]


class _Spiky:
    """A daily gauge at 5 min with heavy-tailed noise: the ensemble's members disagree
    on how far out its spikes are."""

    def __init__(self, seed: int) -> None:
        self.ts = np.arange(END - 20 * DAY, END + 300.0, 300.0)
        rng = np.random.default_rng(seed)
        daily = 10.0 * np.sin(2 * np.pi * self.ts / DAY)
        self.values = 100.0 + daily + rng.standard_t(2.5, self.ts.size)

    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        inside = (self.ts >= time_range.start_s) & (self.ts <= time_range.end_s)
        return [Series({"__name__": "gauge"}, self.ts[inside], self.values[inside])]


def test_a_served_ensemble_pages_on_each_members_own_threshold_as_the_cli_does() -> None:
    """The served path judges each member against its own threshold, as `plugin-backend
    score` and the benchmark do: the same windows in the range as on the whole series."""
    source = _DailyGauge()
    service = DetectionService(source, max_history_points=50_000, scrape_s=300.0)
    span = TimeRange(END - DAY, END)
    (found,) = service.detect("gauge", span, DetectOptions("ensemble"))
    assert found.step_s == 300.0
    whole = get_detector("ensemble").score(source.ts, source.values)  # an export of it all
    assert whole.member_scores is not None
    cli = [w for w in find_windows(whole, pager_policy()) if w.end_s >= span.start_s]
    assert cli  # the excursion pages
    assert found.windows == cli


def test_a_panel_pages_where_plugin_backend_score_does_with_an_ensemble() -> None:
    """Each member of an ensemble gets its own alarm threshold (``scoring.alarm_rate``)
    in the service too, not one fitted on the largest of their scores."""
    source = _Spiky(seed=4)
    span = TimeRange(END - 7 * DAY, END)
    service, options = DetectionService(source), DetectOptions("ensemble")
    (found,) = service.detect("gauge", span, options, floor_s=300.0)
    # What ``plugin-backend score`` does with the same points.
    fetched = source.ts >= service.grid(span, options, floor_s=300.0).fetch.start_s
    ts, values = source.ts[fetched], source.values[fetched]
    scored = get_detector("ensemble").score(ts, values)
    assert scored.member_scores is not None
    first = int(np.searchsorted(scored.timestamps_s, found.known.timestamps_s[0]))
    np.testing.assert_array_equal(scored.score[first:], found.known.score)
    known = ScoredSeries(
        *(
            getattr(scored, f)[first:]
            for f in ("timestamps_s", "values", "expected", "lower", "upper", "score")
        ),
        member_scores=scored.member_scores[:, first:],
    )
    everything = find_windows(known, pager_policy())
    assert found.windows == [w for w in everything if w.end_s >= span.start_s]
    assert found.windows
