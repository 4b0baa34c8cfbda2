"""The scoring grid: a step from the range (not the panel), fetches that start on an
anchor, and panels drawn from the grid at their own step."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_backend.errors import LimitExceeded
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.timegrid import (
    ANCHOR_S,
    MAX_VIEW_POINTS,
    fetch_range,
    points_in,
    resample,
    scoring_grid,
    scoring_step,
)
from plugin_backend.types import TimeRange

END = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
DAY = 86_400.0


@pytest.mark.parametrize(
    ("duration_s", "step_s"),
    [(6 * HOUR, 15.0), (DAY, 15.0), (2 * DAY, 30.0), (7 * DAY, 60.0), (30 * DAY, 300.0)],
)
def test_the_step_is_the_finest_ladder_step_that_fits_the_range(duration_s, step_s):
    span = TimeRange(END - duration_s, END)
    assert scoring_step(span) == step_s
    assert points_in(span, step_s) <= MAX_VIEW_POINTS


def test_a_coarser_floor_is_kept_and_an_off_ladder_one_used_when_it_fits():
    six_hours = TimeRange(END - 6 * HOUR, END)
    assert scoring_step(six_hours, floor_s=60.0) == 60.0
    assert scoring_step(six_hours, floor_s=20.0) == 20.0
    assert scoring_step(TimeRange(END - 7 * DAY, END), floor_s=20.0) == 60.0


def test_a_range_too_long_for_any_step_is_refused():
    with pytest.raises(LimitExceeded):
        scoring_step(TimeRange(0.0, 40 * 365 * DAY))


def test_fetches_ending_in_the_same_anchor_period_start_together():
    # Budget-limited (the default detector's history is weeks): the start depends on
    # the end's anchor period only, so a panel and a worker cycle a minute apart agree.
    fetches = {
        fetch_range(
            TimeRange(end - hours * HOUR, end), 15.0, history_points=10**6, max_points=50_000
        ).start_s
        for end in (END - 7200.0, END - 7140.0, END - 3600.0)
        for hours in (3, 6)
    }
    assert len(fetches) == 1
    (start,) = fetches
    assert start % ANCHOR_S == 0
    assert points_in(TimeRange(start, END - 3600.0), 15.0) <= 50_000


def test_a_history_that_fits_is_fetched_whole_from_an_anchor():
    view = TimeRange(END - 6 * HOUR, END)
    fetch = fetch_range(view, 15.0, history_points=3_000, max_points=50_000)
    assert fetch.start_s % ANCHOR_S == 0
    assert view.start_s - 3_000 * 15.0 - ANCHOR_S < fetch.start_s <= view.start_s - 3_000 * 15.0
    assert fetch.end_s == view.end_s


def test_the_grid_snaps_the_range_onto_its_step():
    grid = scoring_grid(TimeRange(END - 6 * HOUR + 7, END), 15.0, history_points=0, max_points=50)
    assert grid.view.start_s % 15.0 == 0
    assert grid.fetch.start_s == grid.view.start_s  # nothing to fetch before it


def _scored(ts: np.ndarray, score: np.ndarray) -> ScoredSeries:
    values = np.arange(ts.size, dtype=np.float64)
    return ScoredSeries(ts, values, values - 0.5, values - 1.0, values + 1.0, score)


def test_a_wider_panel_step_shows_each_buckets_peak_score_and_latest_point():
    ts = END + 15.0 * np.arange(-4, 12)  # 4 points before the range
    score = np.zeros(ts.size)
    score[6] = 5.0  # END + 30 s: inside the bucket ending at END + 60 s
    shown = resample(_scored(ts, score), TimeRange(END, END + 150.0), 60.0)
    assert shown.timestamps_s.tolist() == [END, END + 60, END + 120]
    assert shown.score.tolist() == [0.0, 5.0, 0.0]
    # The latest grid point at or before each panel point: Prometheus' answer there.
    assert shown.values.tolist() == [4.0, 8.0, 12.0]
    assert shown.upper.tolist() == [5.0, 9.0, 13.0]


def test_a_panel_step_no_coarser_than_the_grid_gets_the_grid_points_in_its_range():
    ts = END + 15.0 * np.arange(-4, 12)
    shown = resample(_scored(ts, np.ones(ts.size)), TimeRange(END, END + 60.0), 10.0)
    assert shown.timestamps_s.tolist() == [END, END + 15, END + 30, END + 45, END + 60]
