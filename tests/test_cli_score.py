"""`plugin-backend score INPUT.csv --output OUT.csv`: NAB-format CSV in, scored CSV out."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from plugin_backend.cli import main


def _write_nab_csv(path, n=600, spike_at=450, duplicate_at=None, spike=40.0):
    rng = np.random.default_rng(3)
    start = datetime(2015, 9, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        value = 50 + 10 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 1)
        if spike_at <= i < spike_at + 3:
            value += spike
        stamp = (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((stamp, f"{value:.3f}"))
        if i == duplicate_at:
            rows.append((stamp, f"{value + 1:.3f}"))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(rows)
    return rows


def _read(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_scores_every_row_and_raises_alarms_at_the_spike(tmp_path, capsys):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = _write_nab_csv(source)
    assert main(["score", str(source), "--output", str(out), "--detector", "robust_z"]) == 0
    scored = _read(out)
    assert list(scored[0]) == [
        "timestamp",
        "value",
        "expected",
        "lower",
        "upper",
        "score",
        "is_anomaly",
    ]
    assert [r["timestamp"] for r in scored] == [stamp for stamp, _ in rows]
    alarm_rows = [i for i, r in enumerate(scored) if r["is_anomaly"] == "1"]
    assert alarm_rows
    assert alarm_rows[0] in (450, 451)
    assert len(alarm_rows) <= 5  # alarms, not every anomalous row
    assert "alarms" in capsys.readouterr().out


def test_missing_value_column_names_the_problem(tmp_path, capsys):
    source = tmp_path / "bad.csv"
    source.write_text("timestamp,amount\n2015-09-01 00:00:00,1\n")
    assert main(["score", str(source), "-o", str(tmp_path / "o.csv")]) == 2
    assert "value" in capsys.readouterr().err


def test_unparsable_value_names_the_line(tmp_path, capsys):
    source = tmp_path / "bad.csv"
    _write_nab_csv(source, n=50)
    lines = source.read_text().splitlines()
    lines[7] = lines[7].split(",")[0] + ",twelve"
    source.write_text("\n".join(lines) + "\n")
    assert (
        main(["score", str(source), "-o", str(tmp_path / "o.csv"), "--detector", "robust_z"]) == 2
    )
    err = capsys.readouterr().err
    assert "line 8" in err
    assert "twelve" in err


def test_duplicate_timestamps_are_accepted_with_a_warning_and_keep_their_rows(tmp_path, capsys):
    source, out = tmp_path / "dup.csv", tmp_path / "out.csv"
    rows = _write_nab_csv(source, n=100, spike_at=1000, duplicate_at=40)
    assert main(["score", str(source), "-o", str(out), "--detector", "robust_z"]) == 0
    assert "duplicate timestamp" in capsys.readouterr().err
    scored = _read(out)
    assert len(scored) == len(rows) == 101  # one output row per input row
    assert [float(r["value"]) for r in scored[40:42]] == [float(rows[40][1]), float(rows[41][1])]
    assert scored[40]["timestamp"] == scored[41]["timestamp"]
    assert scored[40]["is_anomaly"] == "0"


def test_an_export_whose_clock_stepped_back_is_scored_row_for_row(tmp_path, capsys):
    source, out = tmp_path / "clock.csv", tmp_path / "out.csv"
    _write_nab_csv(source, n=200, spike_at=150)
    # The clock steps back 55 minutes after row 119: rows 109-119's times come again,
    # with new readings; the later reading of a repeated time is kept.
    lines = source.read_text().splitlines()
    header, body = lines[0], lines[1:]
    repeats = [
        f"{line.split(',')[0]},{float(line.split(',')[1]) + 0.5:.3f}" for line in body[109:120]
    ]
    stepped = body[:120] + repeats + body[120:]
    source.write_text("\n".join([header, *stepped]) + "\n")
    assert main(["score", str(source), "-o", str(out), "--detector", "robust_z"]) == 0
    err = capsys.readouterr().err
    assert "10 row(s) out of time order" in err  # the 11th repeats the latest time
    assert "line 122 " in err  # the first stepped-back row (the header is line 1)
    assert "11 duplicate timestamp(s), keeping the later row" in err
    scored = _read(out)
    assert len(scored) == len(stepped)  # one output row per input row, in input order
    assert [r["timestamp"] for r in scored] == [line.split(",")[0] for line in stepped]
    assert [r["value"] for r in scored] == [repr(float(line.split(",")[1])) for line in stepped]
    assert all(r["is_anomaly"] == "0" for r in scored[109:120])  # replaced readings
    # the spike (input rows 150-152, output rows 161-163) scores out of band on its own rows
    scores = [float(r["score"]) if r["score"] else 0.0 for r in scored]
    assert set(sorted(range(len(scores)), key=scores.__getitem__)[-3:]) == {161, 162, 163}
    assert min(scores[161:164]) > 1


def test_config_file_sets_detector_and_window_policy(tmp_path, capsys):
    source, out, config = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "score.yaml"
    _write_nab_csv(source)
    config.write_text("detector: robust_z\nsensitivity: 0.5\nwindow:\n  min_points: 1\n")
    assert main(["score", str(source), "-o", str(out), "--config", str(config)]) == 0
    assert "robust_z" in capsys.readouterr().out
    config.write_text("detector: robust_z\nwindow:\n  min_pints: 1\n")
    assert main(["score", str(source), "-o", str(out), "--config", str(config)]) == 2
    assert "window.min_pints: unknown option" in capsys.readouterr().err
    config.write_text("window:\n  alarms_per_day: 1\n  rate_control: false\n")
    assert main(["score", str(source), "-o", str(out), "--config", str(config)]) == 0
    capsys.readouterr()
    config.write_text("window:\n  alarms_per_day: 0\n")
    assert main(["score", str(source), "-o", str(out), "--config", str(config)]) == 2
    assert "window.alarms_per_day" in capsys.readouterr().err


def test_unknown_detector_lists_available_ones(tmp_path, capsys):
    source = tmp_path / "in.csv"
    _write_nab_csv(source, n=50)
    assert main(["score", str(source), "-o", str(tmp_path / "o.csv"), "--detector", "nope"]) == 2
    assert "robust_z" in capsys.readouterr().err


def test_too_short_input_is_insufficient_data(tmp_path, capsys):
    source = tmp_path / "short.csv"
    source.write_text("timestamp,value\n2015-09-01 00:00:00,1\n2015-09-01 00:05:00,2\n")
    assert (
        main(["score", str(source), "-o", str(tmp_path / "o.csv"), "--detector", "robust_z"]) == 2
    )
    assert "need at least" in capsys.readouterr().err


@pytest.mark.slow
def test_the_console_entry_point_runs(tmp_path):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_nab_csv(source, n=300)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "plugin_backend",
            "score",
            str(source),
            "-o",
            str(out),
            "--detector",
            "stl",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(_read(out)) == 300


@pytest.mark.parametrize("detector", ["robust_z", "ensemble"])
def test_a_spike_just_before_a_gap_in_an_export_pages_once(tmp_path, capsys, detector):
    """A real export stops for 6 h right after a spike (a collector down): the normal
    rows after the gap are not the spike going on, so they page no second time."""
    source, out = tmp_path / "gap.csv", tmp_path / "out.csv"
    rows = _write_nab_csv(source, n=1800, spike_at=1400, spike=100.0)
    spike_end = 1404  # 1400-1402 are 100 up, 1403 is back: then the gap
    kept = rows[:spike_end] + rows[spike_end + 72 :]  # no rows for 6 h
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(kept)
    assert main(["score", str(source), "-o", str(out), "--detector", detector]) == 0
    warning = "1 gap(s) longer than 8 typical steps (5 min), scored as they are: "
    assert warning + "line 1406 6.1 h after line 1405" in capsys.readouterr().err
    scored = _read(out)
    assert len(scored) == len(kept)
    alarm_rows = [i for i, r in enumerate(scored) if r["is_anomaly"] == "1"]
    assert [i for i in alarm_rows if 1300 <= i < spike_end + 60] == [1400]  # none 5 h on
