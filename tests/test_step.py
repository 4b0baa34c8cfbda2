import pytest

from plugin_backend.datasource.step import align_range, choose_step, points_in
from plugin_backend.errors import LimitExceeded
from plugin_backend.types import TimeRange

DAY = TimeRange(1_767_139_200.0, 1_767_225_600.0)


def test_interval_is_used_when_max_data_points_allows_it():
    step = choose_step(DAY, interval_ms=15_000, max_data_points=5_760, max_points=50_000)
    assert step == 15.0
    assert points_in(DAY, step) == 5_761


def test_max_data_points_caps_resolution():
    # A 1,000-pixel panel over a day cannot use a 15 s interval: 86,400 / 1,000 = 86.4 s.
    step = choose_step(DAY, interval_ms=15_000, max_data_points=1_000, max_points=50_000)
    assert step == 87.0
    assert points_in(DAY, step) <= 1_000


def test_sub_second_steps_are_kept_but_never_below_the_floor():
    short = TimeRange(0.0, 60.0)
    assert choose_step(short, interval_ms=100, max_data_points=None, max_points=50_000) == 1.0
    assert (
        choose_step(short, interval_ms=100, max_data_points=None, max_points=50_000, min_step_s=0.5)
        == 0.5
    )


def test_no_hints_gives_the_floor_step():
    hour = TimeRange(0.0, 3600.0)
    assert choose_step(hour, interval_ms=None, max_data_points=None, max_points=50_000) == 1.0


def test_too_many_points_is_a_named_limit():
    year = TimeRange(0.0, 365 * 86_400.0)
    with pytest.raises(LimitExceeded) as err:
        choose_step(year, interval_ms=15_000, max_data_points=None, max_points=50_000)
    assert err.value.limit == "max_points_per_series"
    assert "PLUGIN_BACKEND_MAX_POINTS_PER_SERIES" in err.value.message


def test_max_data_points_above_limit_is_refused():
    with pytest.raises(LimitExceeded, match="maxDataPoints=60000"):
        choose_step(DAY, interval_ms=None, max_data_points=60_000, max_points=50_000)


def test_align_range_snaps_start_down_to_the_step_grid():
    aligned = align_range(TimeRange(1_000.0, 2_000.0), 60.0)
    assert aligned.start_s == 960.0
    assert aligned.end_s == 2_000.0
