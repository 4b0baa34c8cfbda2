"""The detection benchmark's synthetic corpus: seeded, labelled like NAB, anomalies visible."""

from __future__ import annotations

import numpy as np

from benchmarks.nab import NabFile, probation_rows
from benchmarks.synthetic import ANOMALY_KINDS, load_synthetic_corpus


def test_same_seed_same_corpus_other_seed_other_corpus() -> None:
    a, b = load_synthetic_corpus(3, per_kind=1), load_synthetic_corpus(3, per_kind=1)
    c = load_synthetic_corpus(4, per_kind=1)
    assert [f.name for f in a] == [f.name for f in b]
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, b, strict=True))
    assert any(
        x.values.shape != y.values.shape or not np.array_equal(x.values, y.values)
        for x, y in zip(a, c, strict=True)
    )


def test_every_kind_once_per_round_with_one_scorable_window() -> None:
    files = load_synthetic_corpus(0, per_kind=2)
    kinds = [f.name.split("_", 1)[1] for f in files]
    assert sorted(kinds) == sorted(ANOMALY_KINDS * 2)
    for f in files:
        n = len(f)
        assert np.all(np.diff(f.timestamps_s) > 0)
        assert np.all(np.isfinite(f.values))
        assert f.values.min() >= 0
        ((first, last),) = f.windows
        assert probation_rows(n) < first < last < n
        # NAB's window: 10% of the rows, centred on the anomaly's start
        assert abs((last - first + 1) - 0.1 * n) <= 2


def _inside_vs_before(f: NabFile) -> tuple[np.ndarray, np.ndarray]:
    """Rows from the anomaly's start to the window's end, and rows before the window."""
    first, last = f.windows[0]
    centre = (first + last) // 2
    return f.values[centre : last + 1], f.values[:first]


def test_the_labelled_anomalies_are_in_the_data() -> None:
    for f in load_synthetic_corpus(0, per_kind=3):
        kind = f.name.split("_", 1)[1]
        after, before = _inside_vs_before(f)
        if kind == "drop_to_zero":
            assert (after == 0).sum() >= 10
        elif kind == "stuck":
            runs = np.flatnonzero(np.diff(after) == 0)
            assert runs.size >= 59  # the exporter repeated one value for an hour or more
        elif kind == "level_shift":
            shift = abs(np.median(after[: len(after) // 2]) - np.median(before[-200:]))
            spread = np.median(np.abs(np.diff(before))) + 1e-9
            assert shift > 2 * spread
