import math

import numpy as np
import orjson

from plugin_backend.datasource.render import (
    legend_name,
    metric_find_values,
    table_frame,
    timeseries_frame,
)
from plugin_backend.types import Series, format_series_name


def _series(labels, values, start=1_000.0, step=15.0):
    ts = start + step * np.arange(len(values))
    return Series(labels, ts, np.asarray(values, dtype=float))


def test_series_name_is_prometheus_notation_with_sorted_labels():
    labels = {"__name__": "up", "job": "api", "instance": "a:9100"}
    assert format_series_name(labels) == 'up{instance="a:9100", job="api"}'
    assert format_series_name({"__name__": "up"}) == "up"
    assert format_series_name({"job": "x"}) == '{job="x"}'
    assert format_series_name({}) == "{}"


def test_label_values_are_escaped_in_names():
    assert format_series_name({"__name__": "m", "p": 'a"b\\c'}) == 'm{p="a\\"b\\\\c"}'


def test_legend_template_substitutes_labels():
    labels = {"__name__": "up", "service": "checkout", "instance": "c-0"}
    assert legend_name(labels, "{{service}} on {{ instance }}") == "checkout on c-0"
    assert legend_name(labels, "{{missing}}x") == "x"
    assert legend_name(labels, "") == 'up{instance="c-0", service="checkout"}'


def test_timeseries_frame_serialises_nan_and_inf_as_null_with_ms_timestamps():
    frame = timeseries_frame("s", _series({"__name__": "s"}, [1.5, math.nan, math.inf, -math.inf]))
    decoded = orjson.loads(orjson.dumps(frame, option=orjson.OPT_SERIALIZE_NUMPY))
    assert decoded["target"] == "s"
    assert decoded["datapoints"] == [
        [1.5, 1_000_000.0],
        [None, 1_015_000.0],
        [None, 1_030_000.0],
        [None, 1_045_000.0],
    ]


def test_table_frame_has_time_label_and_value_columns_and_array_rows():
    a = _series({"__name__": "m", "svc": "a"}, [1.0, 2.0])
    b = _series({"__name__": "m", "svc": "b", "zone": "z1"}, [3.0, math.nan])
    table = table_frame([a, b])
    assert [c["text"] for c in table["columns"]] == ["Time", "__name__", "svc", "zone", "Value"]
    assert table["type"] == "table"
    assert table["rows"][0] == [1_000_000, "m", "a", "", 1.0]
    assert [1_015_000, "m", "b", "z1", None] in table["rows"]
    assert [row[0] for row in table["rows"]] == sorted(row[0] for row in table["rows"])


def test_variable_values_carry_both_spellings():
    assert metric_find_values(["a"]) == [{"__text": "a", "__value": "a", "text": "a", "value": "a"}]
