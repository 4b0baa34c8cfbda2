"""The per-file diagnosis: options parsed, the gap's file found, alarms placed."""

from __future__ import annotations

import dataclasses

import numpy as np

from benchmarks import bench_detection, per_file
from benchmarks.nab import NabFile
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.windows import WindowPolicy


def _file() -> NabFile:
    n = 600
    index = np.arange(n, dtype=np.int64)
    return NabFile(
        name="synthetic/flat.csv",
        timestamps_s=1.4e9 + 300.0 * np.arange(n, dtype=np.float64),
        values=np.ones(n),
        windows=((400, 460),),
        probation=90,
        raw_rows=n,
        raw_index=index,
        raw_windows=((400, 460),),
    )


def _scored(nab_file: NabFile, spikes: list[int]) -> ScoredSeries:
    n = len(nab_file)
    values = nab_file.values.copy()
    score = np.full(n, 0.1)
    for i in spikes:
        values[i] = 50.0
        score[i] = 40.0
    ones = np.ones(n)
    return ScoredSeries(nab_file.timestamps_s, values, ones, ones - 1, ones + 1, score)


def test_parse_detector_reads_typed_options() -> None:
    assert per_file.parse_detector("robust_z") == ("robust_z", {})
    name, options = per_file.parse_detector("transformer:delayed_view=16,sensitivity=1.5")
    assert name == "transformer"
    assert options == {"delayed_view": 16, "sensitivity": 1.5}


def test_alarm_rows_place_each_alarm_in_its_window_or_as_false() -> None:
    nab_file = _file()
    rows = per_file.alarm_rows(nab_file, _scored(nab_file, [200, 410]), WindowPolicy())
    assert [row.split()[2] for row in rows] == ["FP", "W0"]


def test_swapped_scores_find_the_file_that_carries_the_gap() -> None:
    hit, miss = _file(), dataclasses.replace(_file(), name="synthetic/other.csv")
    fire = bench_detection.policy_alarms(WindowPolicy())
    good = [
        bench_detection.ScoredFile(f, _scored(f, [410])) for f in (hit, miss)
    ]  # both windows caught
    bad = [
        bench_detection.ScoredFile(hit, _scored(hit, [410])),
        bench_detection.ScoredFile(miss, _scored(miss, [])),  # the second one missed
    ]
    base = bench_detection.assess("good", "c", good, fire)
    other = bench_detection.assess("bad", "c", bad, fire)
    swapped = per_file.swapped_scores(base, other)
    assert swapped[0] == other.nab_standard  # the first file scores the same in both
    assert swapped[1] == base.nab_standard  # the second carries the whole gap
    assert other.nab_standard < base.nab_standard


def test_a_corpus_without_windows_reports_false_alarms_per_week() -> None:
    quiet = dataclasses.replace(_file(), windows=(), raw_windows=())
    fire = bench_detection.policy_alarms(WindowPolicy())
    result = bench_detection.assess(
        "d", "quiet", [bench_detection.ScoredFile(quiet, _scored(quiet, [200]))], fire
    )
    weeks = (quiet.timestamps_s[-1] - quiet.timestamps_s[quiet.probation]) / (7 * 86_400)
    assert per_file._corpus_cell(result) == f"{1 / weeks:.2f} FA/wk"
