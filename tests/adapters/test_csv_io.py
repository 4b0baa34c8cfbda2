"""The CLI's CSV format (plugin_backend.adapters.csv_io)."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from plugin_backend.adapters.csv_io import (
    SCORED_HEADER,
    load_series_csv,
    parse_timestamp,
    read_series_csv,
    write_scored_csv,
)
from plugin_backend.errors import RequestError
from plugin_backend.scoring.base import ScoredSeries


def write(tmp_path: Path, text: str, name: str = "series.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def epoch(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def test_nab_format(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,value\n2015-09-01 11:30:00,13.56\n2015-09-01 11:35:00,8.33\n"
        "2015-09-01 11:40:00,\n2015-09-01 11:45:00,NaN\n",
    )
    ts, values, warnings = read_series_csv(path)
    assert ts.dtype == np.float64
    assert values.dtype == np.float64
    assert ts.tolist() == [epoch(2015, 9, 1, 11, m) for m in (30, 35, 40, 45)]
    assert values[:2].tolist() == [13.56, 8.33]
    assert np.isnan(values[2:]).all()
    assert warnings == []


def test_extra_columns_any_order_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(
        b"\xef\xbb\xbfhost,Value,Timestamp\na,1.5,2015-09-01T11:30:00Z\nb,2,1441107300\n"
    )
    ts, values, _ = read_series_csv(path)
    assert ts.tolist() == [epoch(2015, 9, 1, 11, 30), epoch(2015, 9, 1, 11, 35)]
    assert values.tolist() == [1.5, 2.0]


def test_epoch_seconds_and_milliseconds(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,value\n1441107000,1\n1441107300.5,2\n1441107600000,3\n")
    ts, _, _ = read_series_csv(path)
    assert ts.tolist() == [1441107000.0, 1441107300.5, 1441107600.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-09-01 11:30:00", epoch(2015, 9, 1, 11, 30)),
        ("2015-09-01T11:30:00", epoch(2015, 9, 1, 11, 30)),
        ("2015-09-01T11:30:00Z", epoch(2015, 9, 1, 11, 30)),
        ("2015-09-01T13:30:00+02:00", epoch(2015, 9, 1, 11, 30)),
        ("2015-09-01 06:30:00-05:00", epoch(2015, 9, 1, 11, 30)),
        ("2015-09-01 11:30:00.250000", epoch(2015, 9, 1, 11, 30) + 0.25),
        ("1441107000", 1441107000.0),
        ("1441107000000", 1441107000.0),
        (" 1441107000.25 ", 1441107000.25),
    ],
)
def test_parse_timestamp(text: str, expected: float) -> None:
    assert parse_timestamp(text) == pytest.approx(expected, abs=1e-6)


def test_duplicate_timestamp_keeps_later_row_with_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,value\n2015-09-10 05:28:00,1\n2015-09-10 05:33:00,2\n"
        "2015-09-10 05:33:00,3\n2015-09-10 05:38:00,4\n",
    )
    series = load_series_csv(path)
    assert series.values.tolist() == [1.0, 3.0, 4.0]
    assert len(series.timestamps_s) == 3
    assert series.timestamp_text == [
        "2015-09-10 05:28:00",
        "2015-09-10 05:33:00",
        "2015-09-10 05:38:00",
    ]
    (warning,) = series.warnings
    assert warning.startswith("1 duplicate timestamp(s), keeping the later row: line 3")
    assert "also on line 4" in warning


def test_rows_out_of_time_order_are_scored_in_time_order_with_a_warning(tmp_path: Path) -> None:
    # A real export whose clock stepped back 55 minutes at line 5.
    path = write(
        tmp_path,
        "timestamp,value\n2015-09-01 11:30:00,1\n2015-09-01 11:40:00,2\n"
        "2015-09-01 12:40:00,3\n2015-09-01 11:45:00,4\n2015-09-01 12:40:00,5\n"
        "2015-09-01 12:45:00,6\n",
    )
    series = load_series_csv(path)
    assert series.timestamp_text == [
        "2015-09-01 11:30:00",
        "2015-09-01 11:40:00",
        "2015-09-01 11:45:00",
        "2015-09-01 12:40:00",
        "2015-09-01 12:45:00",
    ]
    assert series.values.tolist() == [1.0, 2.0, 4.0, 5.0, 6.0]  # 12:40 keeps the later row
    assert np.all(np.diff(series.timestamps_s) > 0)
    order, dup = series.warnings
    assert order.startswith("1 row(s) out of time order")
    assert "line 5 ('2015-09-01 11:45:00', before line 4's '2015-09-01 12:40:00')" in order
    assert "line 4 ('2015-09-01 12:40:00', also on line 6)" in dup
    # every input row maps back, in input order; only kept rows can alarm
    assert series.row_timestamp_text[3] == "2015-09-01 11:45:00"
    assert series.row_index.tolist() == [0, 1, 3, 2, 3, 4]
    assert series.row_kept.tolist() == [True, True, False, True, True, True]


def test_warnings_name_the_first_lines_and_count_the_rest(tmp_path: Path) -> None:
    body = "".join(f"1441107000,{i}\n" for i in range(30))
    (warning,) = load_series_csv(write(tmp_path, "timestamp,value\n" + body)).warnings
    assert warning.startswith("29 duplicate timestamp(s)")
    assert warning.count("also on line 31") == 10
    assert warning.endswith("and 19 more")


def test_gaps_longer_than_eight_steps_are_scored_with_a_warning_naming_them(
    tmp_path: Path,
) -> None:
    minutes = [*range(20), *range(25, 40), *range(160, 180)]  # a 6 min hole, then 2 h
    body = "".join(f"{1441107000 + 60 * m},{m}\n" for m in minutes)
    series = load_series_csv(write(tmp_path, "timestamp,value\n" + body))
    assert series.timestamps_s.shape == (len(minutes),)  # every row kept, none invented
    (warning,) = series.warnings
    assert warning == (
        "1 gap(s) longer than 8 typical steps (1 min), scored as they are: "
        "line 37 2.0 h after line 36"
    )


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("time,value\n1,2\n", 1, "no timestamp column"),
        ("timestamp,val\n1,2\n", 1, "no value column"),
        ("timestamp,value\n2015-09-01 11:30:00,1\nyesterday,2\n", 3, "cannot parse timestamp"),
        ("timestamp,value\n2015-09-01 11:30:00,1\n2015-09-01 11:35:00,abc\n", 3, "value 'abc'"),
        ("timestamp,value\n1441107000,1\n1441107300\n", 3, "expected at least 2 columns"),
        ("timestamp,value\n1441107000,1\nnan,2\n", 3, "cannot parse timestamp"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = write(tmp_path, text, "bad.csv")
    with pytest.raises(RequestError) as info:
        read_series_csv(path)
    message = str(info.value)
    assert "bad.csv" in message
    assert f"line {line}" in message
    assert what in message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,value\n\n1441107000,1\n\n1441107300,x\n")
    with pytest.raises(RequestError, match="line 5"):
        read_series_csv(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="empty"):
        read_series_csv(write(tmp_path, ""))
    with pytest.raises(RequestError, match="cannot read"):
        read_series_csv(tmp_path / "nope.csv")
    ts, values, warnings = read_series_csv(write(tmp_path, "timestamp,value\n"))
    assert ts.shape == values.shape == (0,)
    assert warnings == []


def _scored(ts: list[float], values: list[float]) -> ScoredSeries:
    v = np.asarray(values, dtype=np.float64)
    expected = np.array([math.nan, 0.1, 1 / 3], dtype=np.float64)
    return ScoredSeries(
        timestamps_s=np.asarray(ts, dtype=np.float64),
        values=v,
        expected=expected,
        lower=expected - 1e-7,
        upper=expected + 12345.678,
        score=np.array([math.nan, 2.5, 1e-300]),
    )


def test_write_keeps_timestamp_text_and_round_trips_numbers(tmp_path: Path) -> None:
    src = write(
        tmp_path,
        "timestamp,value\n2015-09-01 11:30:00,\n2015-09-01 11:35:00,0.3\n2015-09-01 11:40:00,-7\n",
    )
    series = load_series_csv(src)
    scored = _scored(series.timestamps_s.tolist(), series.values.tolist())
    out = tmp_path / "out.csv"
    write_scored_csv(out, scored, [False, True, False], timestamp_text=series.timestamp_text)
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == SCORED_HEADER
    assert [r[0] for r in rows[1:]] == series.timestamp_text
    assert rows[1][1:6] == ["", "", "", "", ""]  # NaN -> empty
    assert [r[6] for r in rows[1:]] == ["0", "1", "0"]
    for row, i in zip(rows[2:], (1, 2), strict=True):
        assert float(row[1]) == scored.values[i]
        assert float(row[2]) == scored.expected[i]
        assert float(row[3]) == scored.lower[i]
        assert float(row[4]) == scored.upper[i]
        assert float(row[5]) == scored.score[i]
    assert rows[2][1] == "0.3"
    # What was written reads back as the same series.
    ts, values, _ = read_series_csv(out)
    assert ts.tolist() == series.timestamps_s.tolist()
    np.testing.assert_array_equal(values, series.values)


def test_write_to_file_object_without_text_uses_iso_utc() -> None:
    scored = _scored([1441107000.0, 1441107300.0, 1441107600.5], [1.0, 2.0, 3.0])
    buffer = io.StringIO()
    write_scored_csv(buffer, scored, np.array([0, 0, 1], dtype=bool))
    lines = buffer.getvalue().splitlines()
    assert lines[0] == ",".join(SCORED_HEADER)
    assert lines[1].startswith("2015-09-01T11:30:00Z,1.0,")
    assert lines[3].startswith("2015-09-01T11:40:00.500000Z,3.0,")


def test_write_rejects_mismatched_lengths() -> None:
    scored = _scored([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="is_anomaly"):
        write_scored_csv(io.StringIO(), scored, [True])
    with pytest.raises(ValueError, match="timestamp_text"):
        write_scored_csv(io.StringIO(), scored, [True] * 3, timestamp_text=["a"])
