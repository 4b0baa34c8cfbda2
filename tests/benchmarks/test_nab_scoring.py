"""NAB scoring (benchmarks.nab) and the detection benchmark (benchmarks.bench_detection)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import benchmarks.bench_detection as bench_detection
from benchmarks.nab import (
    PROFILES,
    CorpusScore,
    CostMatrix,
    EventCounts,
    NabFile,
    Window,
    corpus_score,
    default_nab_root,
    event_f1,
    load_nab_corpus,
    paired_bootstrap,
    perfect_alarms,
    probation_rows,
    scaled_sigmoid,
    score_alarms,
)
from benchmarks.synthetic import QUIET_KINDS, load_quiet_corpus
from plugin_backend.scoring.base import Band, Detector
from plugin_backend.types import FloatArray
from tests.needs import missing_shared


def flags(n: int, at: Sequence[int]) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(at)] = True
    return out


def sigmoid_ref(y: float) -> float:
    return 2 / (1 + math.exp(5 * y)) - 1


# --- the scaled sigmoid and probation ----------------------------------------


def test_scaled_sigmoid_matches_nab_docstring_values() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == pytest.approx(sigmoid_ref(3.0))
    assert scaled_sigmoid(3.0001) == -1.0


@pytest.mark.parametrize(
    ("rows", "expected"), [(0, 0), (10, 1), (2500, 375), (4032, 604), (5000, 750), (10**6, 750)]
)
def test_probation_rows(rows: int, expected: int) -> None:
    assert probation_rows(rows) == expected


# --- one file, hand-computed --------------------------------------------------

N = 100
WINDOW: list[Window] = [(40, 49)]  # width 10


def raw(alarm_rows: Sequence[int], windows: Sequence[Window] = WINDOW, **kw: object) -> float:
    return score_alarms(flags(N, alarm_rows), windows, probation=0, **kw).raw  # type: ignore[arg-type]


def test_hand_computed_example() -> None:
    # Alarms at 10 (FP, no window before it), 45 and 47 (in the window: only the
    # first counts) and 52 (FP 3 rows after the window's end).
    result = score_alarms(flags(N, [10, 45, 47, 52]), WINDOW, probation=0)
    tp = sigmoid_ref(-(49 - 45 + 1) / 10) / sigmoid_ref(-1.0)  # position -0.5
    fp_after = 0.11 * sigmoid_ref((52 - 49) / (10 - 1))
    assert tp == pytest.approx(0.8597926, abs=1e-7)
    assert fp_after == pytest.approx(-0.0750487, abs=1e-7)
    assert result.raw == pytest.approx(tp - 0.11 + fp_after, abs=1e-12)
    assert result.raw == pytest.approx(0.6747438, abs=1e-7)
    assert (result.tp_windows, result.fn_windows, result.fp_rows) == (1, 0, 2)


def test_alarm_at_window_start_earns_a_full_tp() -> None:
    assert raw([40]) == pytest.approx(1.0)


def test_alarm_at_window_end_scores_small_positive() -> None:
    end = raw([49])
    assert end == pytest.approx(sigmoid_ref(-1 / 10) / sigmoid_ref(-1.0))
    assert 0 < end < 0.25
    # A longer window makes its last row worth even less.
    longer = score_alarms(flags(200, [149]), [(100, 149)], probation=0).raw
    assert 0 < longer < end


def test_earlier_in_the_window_scores_more() -> None:
    values = [raw([i]) for i in range(40, 50)]
    assert values == sorted(values, reverse=True)
    assert all(v > 0 for v in values)


def test_missed_window_costs_a_false_negative() -> None:
    assert raw([]) == -1.0
    assert raw([], costs=PROFILES["reward_low_FN_rate"]) == -2.0


def test_alarm_just_before_a_window() -> None:
    # No window precedes it: a full FP on top of the missed window.
    assert raw([39]) == pytest.approx(-1.0 - 0.11)
    # Right before a second window, the FP is measured from the first window.
    two = [(10, 19), (40, 49)]
    expected = 1.0 - 1.0 + 0.11 * sigmoid_ref((39 - 19) / 9)
    assert raw([10, 39], two) == pytest.approx(expected)
    assert raw([10, 39], two) == pytest.approx(-0.11, abs=1e-3)


def test_false_positives_just_after_a_window_cost_less() -> None:
    after = [raw([40, 49 + k]) - 1.0 for k in (1, 3, 9, 18, 27, 28, 40)]
    assert all(-0.11 <= a < 0 for a in after)
    assert after == sorted(after, reverse=True)
    assert after[0] == pytest.approx(0.11 * sigmoid_ref(1 / 9))
    assert after[-1] == pytest.approx(-0.11, abs=1e-12)  # more than 3 window widths away


def test_every_false_positive_row_counts() -> None:
    # More than 3 window widths (27 rows) after the window each costs the full A_FP.
    assert raw([40, 80, 81, 82]) == pytest.approx(1.0 - 3 * 0.11)


def test_probation_ignores_early_alarms_and_windows() -> None:
    n = 1000
    windows = [(50, 59), (500, 509)]  # probation is 150 rows: the first is not scored
    result = score_alarms(flags(n, [55, 100, 500]), windows)
    assert len(result.window_scores) == 1
    assert result.window_scores[0] == pytest.approx(1.0)
    assert result.fp_rows == 0
    # A window straddling the probation end is scored from its first scorable row.
    straddle = score_alarms(flags(n, [140, 150]), [(140, 159)])
    assert straddle.raw == pytest.approx(sigmoid_ref(-(159 - 150 + 1) / 20) / sigmoid_ref(-1))


def test_perfect_is_100_and_null_is_0() -> None:
    files = [(300, [(100, 119), (200, 219)]), (500, [(400, 449)]), (200, [])]
    null = corpus_score([(np.zeros(n, bool), w, None) for n, w in files])
    perfect = corpus_score([(perfect_alarms(n, w), w, None) for n, w in files])
    assert null.normalized == 0.0
    assert perfect.normalized == pytest.approx(100.0)
    assert perfect.perfect == pytest.approx(3.0)  # NAB: #windows * A_TP
    assert null.null == -3.0
    # Alarming at every row is much worse than never alarming.
    everything = corpus_score([(np.ones(n, bool), w, None) for n, w in files])
    assert everything.normalized < 0


def test_corpus_normalisation_sums_over_files() -> None:
    a = (flags(200, [100]), [(100, 109)], 0)  # perfect: +1
    b = (flags(200, []), [(50, 59)], 0)  # missed: -1
    score = corpus_score([a, b])
    assert (score.raw, score.null, score.perfect) == (0.0, -2.0, 2.0)
    assert score.normalized == pytest.approx(50.0)


def test_rejects_overlapping_or_out_of_range_windows() -> None:
    with pytest.raises(ValueError, match="sorted and disjoint"):
        score_alarms(flags(100, []), [(10, 20), (15, 30)])
    with pytest.raises(ValueError, match="inside"):
        score_alarms(flags(100, []), [(90, 100)])


# --- cross-check against a row-by-row port of NAB's sweeper -----------------------


def sweeper_reference(
    alarms: np.ndarray, windows: Sequence[Window], costs: CostMatrix, probation: float
) -> float:
    """NAB's calcSweepScore + calcScoreByThreshold for 0/1 scores, row by row."""
    max_tp = sigmoid_ref(-1.0)
    parts: dict[str, float] = {"fp": 0.0}
    pending = list(windows)
    cur: Window | None = None
    prev_right: int | None = None
    prev_width = 0.0
    for i, alarm in enumerate(alarms.tolist()):
        if pending and i == pending[0][0]:
            cur = pending.pop(0)
        if cur is not None:
            width = float(cur[1] - cur[0] + 1)
            y = -(cur[1] - i + 1) / width
            sweep = sigmoid_ref(y) * costs.tp / max_tp
        elif prev_right is None:
            sweep = -costs.fp
        else:
            y = abs(prev_right - i) / (prev_width - 1)
            sweep = (-1.0 if y > 3.0 else sigmoid_ref(y)) * costs.fp
        if i >= probation:
            name = None if cur is None else f"w{cur[0]}"
            if name is not None:
                parts.setdefault(name, -costs.fn)
                if alarm:
                    parts[name] = max(parts[name], sweep)
            elif alarm:
                parts["fp"] += sweep
        if cur is not None and i == cur[1]:
            prev_right, prev_width, cur = i, float(cur[1] - cur[0] + 1), None
    return sum(parts.values())


@pytest.mark.parametrize("seed", range(20))
def test_matches_row_by_row_sweeper(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 1500))
    edges = np.sort(rng.choice(np.arange(n), size=2 * int(rng.integers(0, 5)), replace=False))
    windows = [(int(a), int(b)) for a, b in edges.reshape(-1, 2) if b > a]
    alarms = rng.uniform(size=n) < rng.choice([0.002, 0.01, 0.05])
    for costs in PROFILES.values():
        expected = sweeper_reference(alarms, windows, costs, min(math.floor(0.15 * n), 750.0))
        got = score_alarms(alarms, windows, costs=costs).raw
        assert got == pytest.approx(expected, abs=1e-9)


# --- event-level F1 -----------------------------------------------------------


def test_event_f1() -> None:
    windows = [(20, 29), (50, 59), (80, 89)]
    alarms = flags(100, [22, 25, 35, 36, 37, 40, 52, 95])
    counts = event_f1(alarms, windows, probation=0)
    # Hits: windows 1 and 2; FPs: runs 35-37, 40 and 95; miss: window 3.
    assert counts == EventCounts(tp=2, fp=3, fn=1)
    assert counts.precision == pytest.approx(2 / 5)
    assert counts.recall == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    # Alarms during probation count for nothing (NAB's default: 15 of 100 rows).
    assert event_f1(flags(100, [5, 22]), windows) == EventCounts(tp=1, fp=0, fn=2)
    # A run crossing into a window is an FP before it and a hit inside it.
    assert event_f1(flags(100, [18, 19, 20]), windows, probation=0) == EventCounts(1, 1, 2)


def test_event_counts_add_and_zero_division() -> None:
    none = EventCounts()
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0)
    assert EventCounts(1, 2, 3) + EventCounts(4, 5, 6) == EventCounts(5, 7, 9)


# --- nab-dev ------------------------------------------------------------------


@pytest.fixture(scope="module")
def nab_root() -> Path:
    root = default_nab_root()
    if root is None:
        missing_shared("datasets/nab-dev")
    return root


def test_load_nab_dev(nab_root: Path) -> None:
    traffic = load_nab_corpus(nab_root, "realTraffic")
    artificial = load_nab_corpus(nab_root, "artificialWithAnomaly")
    assert len(traffic) == 7
    assert len(artificial) == 6
    assert sum(len(f.windows) for f in traffic + artificial) == 20
    for f in traffic + artificial:
        assert np.all(np.diff(f.timestamps_s) > 0), f.name
        assert len(f.windows) == len(f.raw_windows)
        assert f.probation == probation_rows(f.raw_rows)  # no duplicate before probation
        for first, last in f.windows:
            assert f.probation <= first <= last < len(f)
    art = {f.name: f for f in artificial}["artificialWithAnomaly/art_daily_jumpsup.csv"]
    assert (len(art), art.probation, art.windows) == (4032, 604, ((2787, 3189),))
    occupancy = {f.name: f for f in traffic}["realTraffic/occupancy_t4013.csv"]
    assert (occupancy.raw_rows, len(occupancy)) == (2500, 2499)
    assert occupancy.raw_windows == ((2087, 2211), (2335, 2459))
    assert occupancy.windows == ((2086, 2210), (2334, 2458))
    assert any("repeated timestamp" in w for w in occupancy.warnings)
    # Window edges land on the labelled timestamps (2015-09-16 00:59 .. 13:19 UTC).
    assert occupancy.timestamps_s[2086] == 1442365140.0
    assert occupancy.timestamps_s[2210] == 1442409540.0


def test_nab_dev_perfect_null_and_naive(nab_root: Path) -> None:
    files = load_nab_corpus(nab_root, "realTraffic")
    perfect = corpus_score(
        f.scoring_input(perfect_alarms(len(f), f.windows, probation=f.probation)) for f in files
    )
    null = corpus_score(f.scoring_input(np.zeros(len(f), bool)) for f in files)
    assert perfect.normalized == pytest.approx(100.0)
    assert null.normalized == 0.0
    assert perfect.perfect == pytest.approx(14.0)  # 14 windows in the traffic files
    # Alarming at the last row of every window earns ~0 per window instead of -1:
    # a little over half-way from null to perfect.
    late = corpus_score(
        f.scoring_input(flags(len(f), [last for _, last in f.windows])) for f in files
    )
    assert 50 < late.normalized < 55


# --- the detection benchmark, with a stand-in detector ---------------------------------


class LastValueDetector(Detector):
    """Expects the previous value, band +-3 rolling standard deviations."""

    name = "last_value"

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        n = values.shape[0]
        expected = np.full(n, np.nan)
        expected[1:] = values[:-1]
        width = np.full(n, np.nan)
        diffs = np.abs(np.diff(values))
        for i in range(20, n):
            width[i] = 3.0 * float(np.nanstd(diffs[i - 20 : i - 1])) + 1e-9
        return Band(expected, expected - width, expected + width)

    def history_points(self, step_s: float) -> int:
        return 21


def synthetic_file() -> NabFile:
    n = 1000
    rng = np.random.default_rng(0)
    values = np.sin(np.arange(n) / 20) + rng.normal(0, 0.05, n)
    values[600:610] += 5.0
    index = np.arange(n, dtype=np.int64)
    return NabFile(
        name="synthetic/spike.csv",
        timestamps_s=1.4e9 + 300.0 * np.arange(n, dtype=np.float64),
        values=values,
        windows=((580, 640),),
        probation=150,
        raw_rows=n,
        raw_index=index,
        raw_windows=((580, 640),),
    )


def test_benchmark_evaluate_with_stand_in_detector() -> None:
    result = bench_detection.evaluate(
        "last_value", LastValueDetector, "synthetic", [synthetic_file()]
    )
    assert result.events.tp == 1
    assert result.events.fn == 0
    assert result.nab_standard > 0
    assert result.failed == ()
    assert result.scored_share == 1.0  # the last value is known on every row after probation
    row = result.row()
    assert len(row) == len(bench_detection.HEADER)


def test_benchmark_counts_failures_as_silence() -> None:
    short = synthetic_file()
    tiny = NabFile(
        name="synthetic/tiny.csv",
        timestamps_s=short.timestamps_s[:5],
        values=short.values[:5],
        windows=(),
        probation=0,
        raw_rows=5,
        raw_index=np.arange(5, dtype=np.int64),
        raw_windows=(),
    )
    result = bench_detection.evaluate("last_value", LastValueDetector, "synthetic", [tiny, short])
    assert len(result.failed) == 1
    assert "tiny" in result.failed[0]
    scored = len(short) - short.probation  # every row of short after probation, none of tiny
    assert result.scored_share == pytest.approx(scored / (scored + len(tiny)))


def test_benchmark_skips_without_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_detection, "default_nab_root", lambda: None)
    bench_detection.main(["robust_z"])
    out = capsys.readouterr().out
    assert "nab-dev not found" in out
    assert "synthetic corpus only" in out
    rows = [line for line in out.splitlines() if line.lstrip().startswith("robust_z")]
    assert len(rows) == 3  # its synthetic score, the per-corpus summary, the quiet series
    assert "synthetic" in rows[0]
    assert "without anomalies" in out
    assert "Leave one corpus out" not in out  # one corpus: nothing to hold out


def test_benchmark_run_on_nab_dev(nab_root: Path) -> None:
    loaded = bench_detection.load_corpora(nab_root)
    results = bench_detection.run({"last_value": LastValueDetector}, loaded)
    assert [r.corpus for r in results] == [
        "artificialNoAnomaly",
        "artificialWithAnomaly",
        "realAdExchange",
        "realTraffic",
        "realTweets",
        "synthetic",
    ]
    for r in results:
        # No windows in artificialNoAnomaly: NAB is undefined there, false alarms are not.
        assert math.isfinite(r.nab_standard) == (r.corpus != "artificialNoAnomaly")
        assert math.isfinite(r.false_per_week) == (r.corpus == "artificialNoAnomaly")
        assert r.failed == ()


def _file_scores(raws: list[float]) -> list[CorpusScore]:
    """Files with null -1 and perfect +1 (one window each) and the given raw scores."""
    return [CorpusScore(raw=r, null=-1.0, perfect=1.0, files=1) for r in raws]


def test_paired_bootstrap_says_when_a_gap_is_noise() -> None:
    same = _file_scores([0.5, -1.0, 0.9, 0.2])
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0, 0.0)
    better = _file_scores([0.9, 0.8, 0.95, 0.9])  # ahead on every file
    gap, low, high, above = paired_bootstrap(better, same, draws=500)
    assert gap == pytest.approx(100 * (3.55 + 4) / 8 - 100 * (0.6 + 4) / 8)
    assert 0 < low <= gap <= high
    assert above == 1.0
    mixed = _file_scores([0.9, -1.0, 0.95, -1.0])  # ahead on two files, behind on two
    _gap, low, high, above = paired_bootstrap(mixed, same, draws=500)
    assert low < 0 < high
    assert 0 < above < 1
    assert paired_bootstrap(mixed, same, draws=500) == paired_bootstrap(mixed, same, draws=500)
    with pytest.raises(ValueError, match="same non-empty"):
        paired_bootstrap(mixed, same[:2])


def test_benchmark_compares_every_detector_with_the_robust_z_score() -> None:
    files = [synthetic_file()]
    results = [
        bench_detection.evaluate(name, LastValueDetector, "synthetic", files)
        for name in ("robust_z", "last_value")
    ]
    (row,) = bench_detection.comparison_rows(results)
    assert row[:3] == ["last_value", "synthetic", "+0.0"]  # the same alarms on the same file
    assert bench_detection.comparison_rows(results[1:]) == []  # no baseline: nothing to compare
    (row,) = bench_detection.comparison_rows(results, "last_value")
    assert row[:3] == ["robust_z", "synthetic", "+0.0"]


class AlarmsOnceDetector(Detector):
    """Expects each value exactly, except one row far after the probationary period."""

    name = "once"

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        expected = np.where(np.arange(values.shape[0]) == 3000, values + 1e6, values)
        return Band(expected, expected - 1.0, expected + 1.0)

    def history_points(self, step_s: float) -> int:
        return 0


def test_the_quiet_corpus_has_nothing_to_find_and_counts_every_alarm_as_false() -> None:
    files = load_quiet_corpus(0)
    assert len(files) == 3 * len(QUIET_KINDS)
    assert all(f.windows == () and len(f) == 14 * 288 for f in files)
    np.testing.assert_array_equal(files[4].values, load_quiet_corpus(0)[4].values)  # seeded
    flat = next(f for f in files if f.name.endswith("flatline"))
    assert np.ptp(flat.values) == 0
    (row,) = bench_detection.quiet_rows({"once": AlarmsOnceDetector}, files)
    # One alarm per series; 15 over 15 series of 14 days less probation (~11.9 days).
    assert row == ["once", "3", "3", "3", "3", "3", "15", "0.59"]


def test_leave_one_corpus_out_scores_the_held_out_corpus_with_the_others_choice() -> None:
    scored, _ = bench_detection.score_files(LastValueDetector, [synthetic_file()])
    scores = dict.fromkeys(("a", "b", "c"), (scored, 0.0))
    rows = bench_detection.loco_rows(scores, "last_value")
    assert [row[1] for row in rows] == ["a", "b", "c", "worst held-out"]
    for row in rows[:-1]:  # the same file everywhere: held out scores what the others chose
        assert row[3] == row[4]
    assert rows[-1][4] == min(row[4] for row in rows[:-1])
    assert bench_detection.loco_rows({"a": (scored, 0.0)}, "last_value") == []


def test_every_file_is_scored_with_cold_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    cleared: list[int] = []
    monkeypatch.setattr(bench_detection, "clear_forecast_caches", lambda: cleared.append(1))
    bench_detection.score_files(LastValueDetector, [synthetic_file()] * 3)
    assert len(cleared) == 3


def test_false_alarms_per_week_on_a_corpus_without_windows() -> None:
    (quiet,) = [f for f in load_quiet_corpus(0) if f.name.endswith("flatline")][:1]
    scored, _ = bench_detection.score_files(AlarmsOnceDetector, [quiet])
    result = bench_detection.assess("once", "quiet", scored, lambda item: flags(len(quiet), [3000]))
    weeks = (quiet.timestamps_s[-1] - quiet.timestamps_s[quiet.probation]) / (7 * 86_400)
    assert math.isnan(result.nab_standard)
    assert result.false_per_week == pytest.approx(1 / weeks)
