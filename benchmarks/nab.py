"""NAB scoring (Numenta Anomaly Benchmark, Lavin & Ahmad 2015), reimplemented.

Follows NAB v1.1's ``nab/sweeper.py`` (which ``nab/scorer.py`` calls) for binary
detections (an anomaly score of 1 at alarm rows, 0 elsewhere):

* **Probation**: rows ``i < min(floor(0.15 * n), 0.15 * 5000)`` are ignored
  entirely (their alarms and the parts of windows in them).
* **Windows** ``[l, r]`` (row indices, both ends inclusive), width ``w = r - l + 1``.
  An alarm at row ``i`` inside scores ``A_TP * S(-(r - i + 1) / w) / S(-1)`` with the
  scaled sigmoid ``S(y) = 2 / (1 + exp(5 y)) - 1``: ``A_TP`` at the window's first
  row, ``~ A_TP * 2.5 / w`` (small, positive) at its last. A window keeps the best
  (= earliest) alarm's value; one without any costs ``-A_FN``. A window wholly in
  probation is not scored at all.
* **False positives**: every alarm row outside all windows. With no window before
  it, it costs ``-A_FP``; otherwise ``A_FP * S((i - r) / (w - 1))`` with ``r, w`` of
  the closest preceding window (``S(y) = -1`` for ``y > 3``): slightly negative
  right after a window, ``-A_FP`` far from one.
* **Normalised score** of a corpus: ``100 * (raw - null) / (perfect - null)`` with
  raw, null (never alarms) and perfect (one alarm at the first scorable row of each
  window) summed over its files. NAB itself takes perfect = ``#windows * A_TP``;
  the two agree whenever no window starts inside probation (true for nab-dev).

``event_f1`` is a simpler event-level view: a window with an alarm is a hit, each
run of consecutive alarm rows outside windows one false positive.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "CORPORA",
    "PROBATION_PERCENT",
    "PROFILES",
    "STANDARD",
    "CorpusScore",
    "CostMatrix",
    "EventCounts",
    "FileScore",
    "NabFile",
    "Window",
    "corpus_score",
    "default_nab_root",
    "event_f1",
    "load_nab_corpus",
    "nab_corpora",
    "perfect_alarms",
    "probation_rows",
    "scaled_sigmoid",
    "score_alarms",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
#: Row indices ``(first, last)`` of an anomaly window, both inclusive.
Window = tuple[int, int]

PROBATION_PERCENT = 0.15
#: NAB caps the probation at ``PROBATION_PERCENT`` of this many rows (750).
PROBATION_CAP_ROWS = 5000
CORPORA = ("realTraffic", "artificialWithAnomaly")


@dataclass(frozen=True, slots=True)
class CostMatrix:
    """A NAB application profile's weights (``A_TN`` plays no part in the score)."""

    tp: float
    fp: float
    fn: float


PROFILES = {
    "standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": CostMatrix(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": CostMatrix(tp=1.0, fp=0.11, fn=2.0),
}
STANDARD = PROFILES["standard"]


def scaled_sigmoid(y: float) -> float:
    """NAB's ``2 * sigmoid(-5 y) - 1``: ~1 at ``y = -1``, 0 at 0, ~-1 at 1, -1 past 3."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def _scaled_sigmoid_array(y: FloatArray) -> FloatArray:
    capped = np.minimum(y, 4.0)  # > 3 is -1 anyway; avoids exp overflow
    out: FloatArray = 2.0 / (1.0 + np.exp(5.0 * capped)) - 1.0
    return np.where(y > 3.0, -1.0, out)


def probation_rows(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Index of the first scored row: NAB's ``min(floor(p * n), p * 5000)``, rounded up."""
    return int(min(math.floor(percent * n_rows), math.ceil(percent * PROBATION_CAP_ROWS)))


def _check(alarms: npt.ArrayLike, windows: Sequence[Window]) -> BoolArray:
    flags = np.asarray(alarms, dtype=np.bool_)
    if flags.ndim != 1:
        raise ValueError(f"alarms must be 1-D, got shape {flags.shape}")
    n = int(flags.shape[0])
    previous_end = -1
    for first, last in windows:
        if not 0 <= first <= last < n:
            raise ValueError(f"window {(first, last)} is not inside rows 0..{n - 1}")
        if first <= previous_end:
            raise ValueError(f"windows must be sorted and disjoint, got {list(windows)}")
        previous_end = last
    return flags


@dataclass(frozen=True, slots=True)
class FileScore:
    """One file's raw NAB score and its parts."""

    raw: float
    tp_windows: int
    fn_windows: int
    fp_rows: int
    fp_score: float
    window_scores: tuple[float, ...]


def score_alarms(
    alarms: npt.ArrayLike,
    windows: Sequence[Window],
    *,
    probation: int | None = None,
    costs: CostMatrix = STANDARD,
) -> FileScore:
    """NAB's raw score of boolean ``alarms`` (one per row) against ``windows``.

    ``probation``: first scored row; NAB's default for ``len(alarms)`` rows if None.
    """
    flags = _check(alarms, windows)
    n = int(flags.shape[0])
    start = probation_rows(n) if probation is None else int(probation)
    scorable = flags.copy()
    scorable[: max(start, 0)] = False

    in_window = np.zeros(n, dtype=np.bool_)
    max_tp = scaled_sigmoid(-1.0)
    window_scores: list[float] = []
    for first, last in windows:
        in_window[first : last + 1] = True
        if last < start:
            continue  # wholly in probation: NAB does not score it
        width = last - first + 1
        lo = max(first, start)
        hits = np.flatnonzero(scorable[lo : last + 1])
        best = -costs.fn
        if hits.size:
            relative = -(last - (lo + int(hits[0])) + 1) / width
            best = max(best, scaled_sigmoid(relative) * costs.tp / max_tp)
        window_scores.append(best)

    fp_idx = np.flatnonzero(scorable & ~in_window)
    fp_score = 0.0
    if fp_idx.size:
        ends = np.asarray([last for _, last in windows], dtype=np.int64)
        widths = np.asarray([last - first + 1 for first, last in windows], dtype=np.int64)
        preceding = np.searchsorted(ends, fp_idx, side="left") - 1
        weights = np.full(fp_idx.shape[0], -1.0)
        has_prev = preceding >= 0
        if np.any(has_prev):
            prev = preceding[has_prev]
            span = (widths[prev] - 1).astype(np.float64)
            distance = (fp_idx[has_prev] - ends[prev]).astype(np.float64)
            with np.errstate(divide="ignore"):
                # A one-row window divides by zero in NAB; treat what follows as far.
                position = np.where(span > 0, distance / np.maximum(span, 1.0), np.inf)
            weights[has_prev] = _scaled_sigmoid_array(position)
        fp_score = float(np.sum(weights)) * costs.fp

    tp_windows = sum(1 for s in window_scores if s > -costs.fn)
    return FileScore(
        raw=float(sum(window_scores)) + fp_score,
        tp_windows=tp_windows,
        fn_windows=len(window_scores) - tp_windows,
        fp_rows=int(fp_idx.shape[0]),
        fp_score=fp_score,
        window_scores=tuple(window_scores),
    )


def perfect_alarms(
    n_rows: int, windows: Sequence[Window], *, probation: int | None = None
) -> BoolArray:
    """The perfect detector: one alarm at the first scorable row of each window."""
    start = probation_rows(n_rows) if probation is None else int(probation)
    flags = np.zeros(n_rows, dtype=np.bool_)
    for first, last in windows:
        if last >= start:
            flags[max(first, start)] = True
    return flags


@dataclass(frozen=True, slots=True)
class CorpusScore:
    """Raw, null and perfect NAB scores summed over a corpus' files."""

    raw: float
    null: float
    perfect: float
    files: int

    @property
    def normalized(self) -> float:
        """``100 * (raw - null) / (perfect - null)``: 0 = never alarms, 100 = perfect."""
        if self.perfect == self.null:
            return math.nan
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def paired_bootstrap(
    a: Sequence[CorpusScore],
    b: Sequence[CorpusScore],
    *,
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """How sure is "detector a beats b on this corpus"? ``a`` and ``b`` hold each
    file's score (the same files, in the same order). Files are resampled with
    replacement (the same draw for both) and the corpora re-normalised. Returns
    (difference of normalised scores, 2.5% and 97.5% quantiles of the resampled
    difference, share of draws where a scores higher). A corpus of a few files
    moves by several points per alarm: a gap inside the interval is noise."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs the same non-empty list of files for a and b")
    ra, rb = (np.array([(f.raw, f.null, f.perfect) for f in side]) for side in (a, b))

    def normalised(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        raw, null, perfect = rows[..., 0].sum(-1), rows[..., 1].sum(-1), rows[..., 2].sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(100.0 * (raw - null) / (perfect - null), dtype=np.float64)

    idx = np.random.default_rng(seed).integers(0, len(a), size=(draws, len(a)))
    diff = normalised(ra[idx]) - normalised(rb[idx])
    diff = diff[np.isfinite(diff)]
    point = float(normalised(ra) - normalised(rb))
    if diff.size == 0:
        return point, math.nan, math.nan, math.nan
    low, high = np.quantile(diff, (0.025, 0.975))
    return point, float(low), float(high), float(np.mean(diff > 0))


def corpus_score(
    results: Iterable[tuple[npt.ArrayLike, Sequence[Window], int | None]],
    costs: CostMatrix = STANDARD,
) -> CorpusScore:
    """Score ``(alarms, windows, probation)`` per file and normalise over them all."""
    raw = null = perfect = 0.0
    files = 0
    for alarms, windows, probation in results:
        flags = np.asarray(alarms, dtype=np.bool_)
        n = int(flags.shape[0])
        raw += score_alarms(flags, windows, probation=probation, costs=costs).raw
        null += score_alarms(
            np.zeros(n, dtype=np.bool_), windows, probation=probation, costs=costs
        ).raw
        best = perfect_alarms(n, windows, probation=probation)
        perfect += score_alarms(best, windows, probation=probation, costs=costs).raw
        files += 1
    return CorpusScore(raw=raw, null=null, perfect=perfect, files=files)


@dataclass(frozen=True, slots=True)
class EventCounts:
    """Event-level counts; undefined ratios are 0 (sklearn's ``zero_division=0``)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def event_f1(
    alarms: npt.ArrayLike, windows: Sequence[Window], *, probation: int | None = None
) -> EventCounts:
    """Hits (windows with an alarm), false alarms (runs of consecutive alarm rows
    outside windows) and misses, all after probation (NAB's default if None)."""
    flags = _check(alarms, windows)
    n = int(flags.shape[0])
    start = probation_rows(n) if probation is None else int(probation)
    scorable = flags.copy()
    scorable[: max(start, 0)] = False
    in_window = np.zeros(n, dtype=np.bool_)
    tp = fn = 0
    for first, last in windows:
        in_window[first : last + 1] = True
        if last < start:
            continue
        if np.any(scorable[max(first, start) : last + 1]):
            tp += 1
        else:
            fn += 1
    outside = scorable & ~in_window
    run_starts = outside.copy()
    run_starts[1:] &= ~outside[:-1]
    return EventCounts(tp=tp, fp=int(np.count_nonzero(run_starts)), fn=fn)


# --- the nab-dev data ---------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class NabFile:
    """One NAB data file, ready for a detector and for scoring.

    ``timestamps_s``/``values`` have repeated timestamps collapsed (the later row
    kept), since detectors need strictly increasing time; ``windows`` and
    ``probation`` are row indices into those arrays. ``score``/``events`` map
    alarms back onto the file's raw rows, so scores match NAB's exactly.
    """

    name: str
    timestamps_s: FloatArray
    values: FloatArray
    windows: tuple[Window, ...]
    probation: int
    raw_rows: int
    raw_index: IntArray = field(repr=False)
    raw_windows: tuple[Window, ...] = field(repr=False)
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def to_raw(self, alarms: npt.ArrayLike) -> BoolArray:
        flags = np.asarray(alarms, dtype=np.bool_)
        if flags.shape != (len(self),):
            raise ValueError(f"{self.name}: alarms have shape {flags.shape}, want ({len(self)},)")
        raw = np.zeros(self.raw_rows, dtype=np.bool_)
        raw[self.raw_index] = flags
        return raw

    def score(self, alarms: npt.ArrayLike, costs: CostMatrix = STANDARD) -> FileScore:
        return score_alarms(self.to_raw(alarms), self.raw_windows, costs=costs)

    def events(self, alarms: npt.ArrayLike) -> EventCounts:
        return event_f1(self.to_raw(alarms), self.raw_windows)

    def scoring_input(self, alarms: npt.ArrayLike) -> tuple[BoolArray, tuple[Window, ...], None]:
        """An item for :func:`corpus_score`."""
        return self.to_raw(alarms), self.raw_windows, None


def default_nab_root() -> Path | None:
    """``../shared/datasets/nab-dev`` beside the repository (or ``shared/`` in it)."""
    repo = Path(__file__).resolve().parents[1]
    for candidate in (
        repo.parent / "shared" / "datasets" / "nab-dev",
        repo / "shared" / "datasets" / "nab-dev",
    ):
        if (candidate / "labels" / "combined_windows.json").is_file():
            return candidate
    return None


def nab_corpora(root: Path) -> list[str]:
    """The corpora (``data/`` sub-folders) present under ``root``."""
    data = root / "data"
    return sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []


def _parse_time(text: str) -> float:
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _read_rows(path: Path) -> tuple[FloatArray, FloatArray]:
    stamps: list[float] = []
    values: list[float] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [c.strip().lower() for c in next(reader)]
        t_col, v_col = header.index("timestamp"), header.index("value")
        for row in reader:
            if not row:
                continue
            try:
                stamps.append(_parse_time(row[t_col]))
                text = row[v_col].strip()
                values.append(float(text) if text else math.nan)
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path} line {reader.line_num}: {exc}") from exc
    ts = np.asarray(stamps, dtype=np.float64)
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        raise ValueError(f"{path}: timestamps are not in time order")
    return ts, np.asarray(values, dtype=np.float64)


def _window_rows(ts: FloatArray, start_s: float, end_s: float) -> Window | None:
    # NAB enters a window at the row whose timestamp equals its start and leaves
    # it at the first row equal to its end; for limits between rows fall back to
    # the rows inside [start, end].
    first = int(np.searchsorted(ts, start_s, side="left"))
    last = int(np.searchsorted(ts, end_s, side="left"))
    if last >= ts.shape[0] or ts[last] != end_s:
        last -= 1
    return (first, last) if first <= last else None


def load_nab_corpus(root: Path, corpus: str) -> list[NabFile]:
    """Every ``data/<corpus>/*.csv`` under ``root`` with its labelled windows."""
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    folder = root / "data" / corpus
    if not folder.is_dir():
        raise FileNotFoundError(f"no NAB corpus {corpus!r} under {root}")
    files: list[NabFile] = []
    for path in sorted(folder.glob("*.csv")):
        name = f"{corpus}/{path.name}"
        raw_ts, raw_values = _read_rows(path)
        n_raw = int(raw_ts.shape[0])
        warnings: list[str] = []
        raw_windows: list[Window] = []
        for start_text, end_text in labels.get(name, []):
            rows = _window_rows(raw_ts, _parse_time(start_text), _parse_time(end_text))
            if rows is None:
                warnings.append(f"window {start_text} .. {end_text} holds no rows, ignored")
            else:
                raw_windows.append(rows)
        keep = np.ones(n_raw, dtype=np.bool_)
        keep[:-1] = raw_ts[:-1] != raw_ts[1:]  # of a repeated timestamp keep the later row
        raw_index = np.flatnonzero(keep).astype(np.int64)
        if raw_index.shape[0] != n_raw:
            warnings.append(f"{n_raw - raw_index.shape[0]} repeated timestamp(s), kept later rows")
        windows: list[Window] = []
        for first, last in raw_windows:
            lo = int(np.searchsorted(raw_index, first, side="left"))
            hi = int(np.searchsorted(raw_index, last, side="right")) - 1
            if lo <= hi:
                windows.append((lo, hi))
        probation = int(np.searchsorted(raw_index, probation_rows(n_raw), side="left"))
        files.append(
            NabFile(
                name=name,
                timestamps_s=raw_ts[raw_index],
                values=raw_values[raw_index],
                windows=tuple(windows),
                probation=probation,
                raw_rows=n_raw,
                raw_index=raw_index,
                raw_windows=tuple(raw_windows),
                warnings=tuple(warnings),
            )
        )
    return files
