"""Detection quality on nab-dev and on a seeded synthetic corpus, NAB-scored.

The synthetic corpus (:mod:`benchmarks.synthetic`: 84 operations-like series,
one labelled anomaly each, from seven kinds) needs no ``../shared`` and gives
decisions more than nab-dev's 20 windows to stand on. Each file gets a fresh
detector, scores stream through ``windows.alarms`` with the
default :class:`WindowPolicy` (nothing tuned on the labels), and the alarms are
scored with NAB's standard profile (normalised: 0 = never alarms, 100 = perfect)
and event-level precision / recall / F1. ``scored`` is the share of rows after
each file's probationary period that got a finite score (an unscored row can
never alarm: gaps, warm-ups). ``score ms`` is the detector's own time over the
corpus. Two more tables give each detector's gap to the robust z-score and to
the STL baseline on the same files with a 95% interval from resampling the
files: on a corpus of seven files one alarm moves the score by several points,
and those tables say which gaps are noise. A last table counts false alarms on
series with nothing to find (``load_quiet_corpus``, NAB's no-anomaly kinds), which
NAB's normalised score cannot show: a corpus without windows has no range.
Run: ``python -m benchmarks.bench_detection``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from benchmarks.nab import (
    CORPORA,
    STANDARD,
    CorpusScore,
    EventCounts,
    NabFile,
    corpus_score,
    default_nab_root,
    load_nab_corpus,
    paired_bootstrap,
)
from benchmarks.synthetic import (
    QUIET_KINDS,
    SYNTHETIC_CORPUS,
    load_quiet_corpus,
    load_synthetic_corpus,
)
from plugin_backend.errors import BackendError
from plugin_backend.scoring import registry
from plugin_backend.scoring.base import Detector
from plugin_backend.scoring.windows import WindowPolicy, alarms

HEADER = [
    "detector", "corpus", "NAB std", "precision", "recall", "F1", "alarms", "scored", "score ms"
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class CorpusResult:
    detector: str
    corpus: str
    nab_standard: float
    events: EventCounts
    alarms: int
    score_s: float
    failed: tuple[str, ...]
    scored_share: float = 1.0
    per_file: tuple[CorpusScore, ...] = ()

    def row(self) -> list[str]:
        failed = f" ({len(self.failed)} failed)" if self.failed else ""
        return [
            self.detector,
            self.corpus + failed,
            f"{self.nab_standard:.1f}",
            f"{self.events.precision:.2f}",
            f"{self.events.recall:.2f}",
            f"{self.events.f1:.2f}",
            str(self.alarms),
            f"{100 * self.scored_share:.1f}%",
            f"{self.score_s * 1000:.0f}",
        ]


def evaluate(
    name: str,
    make_detector: Callable[[], Detector],
    corpus: str,
    files: Sequence[NabFile],
    policy: WindowPolicy | None = None,
) -> CorpusResult:
    """Score every file with a fresh detector and NAB-score the alarms."""
    policy = policy or WindowPolicy()
    items = []
    events = EventCounts()
    total_alarms = 0
    spent = 0.0
    failed: list[str] = []
    rows_scored = rows_after_probation = 0
    for nab_file in files:
        detector = make_detector()
        started = time.perf_counter()
        try:
            scored = detector.score(nab_file.timestamps_s, nab_file.values)
        except BackendError as exc:
            failed.append(f"{nab_file.name}: {exc}")
            fired = np.zeros(len(nab_file), dtype=np.bool_)
        else:
            fired = alarms(scored, policy)
            rows_scored += int(np.count_nonzero(np.isfinite(scored.score[nab_file.probation :])))
        spent += time.perf_counter() - started
        rows_after_probation += max(len(nab_file) - nab_file.probation, 0)
        total_alarms += int(np.count_nonzero(fired))
        items.append(nab_file.scoring_input(fired))
        events = events + nab_file.events(fired)
    per_file = tuple(corpus_score([item], STANDARD) for item in items)
    score = CorpusScore(
        raw=sum(f.raw for f in per_file),
        null=sum(f.null for f in per_file),
        perfect=sum(f.perfect for f in per_file),
        files=len(per_file),
    )
    return CorpusResult(
        detector=name,
        corpus=corpus,
        nab_standard=score.normalized,
        events=events,
        alarms=total_alarms,
        score_s=spent,
        failed=tuple(failed),
        scored_share=rows_scored / max(rows_after_probation, 1),
        per_file=per_file,
    )


#: Series per anomaly kind in the benchmark's synthetic corpus (seed 1; 7 kinds).
SYNTHETIC_PER_KIND = 12
SYNTHETIC_SEED = 1


def load_corpora(root: Path | None, corpora: Sequence[str] = CORPORA) -> dict[str, list[NabFile]]:
    """The nab-dev corpora found under ``root`` (none when it is None) and the synthetic one."""
    loaded = {corpus: load_nab_corpus(root, corpus) for corpus in corpora} if root else {}
    loaded[SYNTHETIC_CORPUS] = load_synthetic_corpus(SYNTHETIC_SEED, per_kind=SYNTHETIC_PER_KIND)
    return loaded


def run(
    detectors: dict[str, Callable[[], Detector]], loaded: dict[str, list[NabFile]]
) -> list[CorpusResult]:
    return [
        evaluate(name, make, corpus, loaded[corpus])
        for name, make in detectors.items()
        for corpus in loaded
    ]


#: Seed of the quiet corpus (series without anomalies, so every alarm is a false one).
QUIET_SEED = 0


def quiet_rows(
    detectors: dict[str, Callable[[], Detector]],
    files: Sequence[NabFile],
    policy: WindowPolicy | None = None,
) -> list[list[str]]:
    """Per detector: its alarms after the probationary period on each kind of quiet
    series, then in all (a detector that fails on a file is silent there)."""
    policy = policy or WindowPolicy()
    rows = []
    for name, make in detectors.items():
        counts = dict.fromkeys(QUIET_KINDS, 0)
        for quiet in files:
            try:
                scored = make().score(quiet.timestamps_s, quiet.values)
            except BackendError:
                continue
            fired = alarms(scored, policy)[quiet.probation :]
            kind = next(k for k in QUIET_KINDS if quiet.name.endswith(k))
            counts[kind] += int(np.count_nonzero(fired))
        rows.append([name, *map(str, counts.values()), str(sum(counts.values()))])
    return rows


def _registered(names: Sequence[str] | None = None) -> dict[str, Callable[[], Detector]]:
    def factory(name: str) -> Callable[[], Detector]:
        return lambda: registry.get_detector(name)

    return {name: factory(name) for name in (names or registry.available())}


def main(names: Sequence[str] | None = None) -> None:
    root = default_nab_root()
    if root is None:
        print("\nnab-dev not found (expected ../shared/datasets/nab-dev): synthetic corpus only")
    detectors = _registered(names)
    if not detectors:
        print("\nno detectors registered, skipping")
        return
    results = run(detectors, load_corpora(root))
    print_table(
        f"Detection on {f'nab-dev ({root}) and ' if root else ''}synthetic "
        f"(seed {SYNTHETIC_SEED}), default WindowPolicy, NAB standard profile",
        HEADER,
        [r.row() for r in results],
    )
    for result in results:
        for failure in result.failed:
            print(f"  {result.detector}: {failure}")
    for baseline in BASELINES:
        rows = comparison_rows(results, baseline)
        if rows:
            print_table(
                f"Against {baseline} (file bootstrap: files resampled with replacement, "
                f"{BOOTSTRAP_DRAWS} draws; an interval across 0: the gap is noise)",
                ["detector", "corpus", "NAB std - baseline", "95% interval", "P(higher)"],
                rows,
            )
    quiet = load_quiet_corpus(QUIET_SEED)
    print_table(
        f"False alarms on {len(quiet)} series without anomalies (seed {QUIET_SEED}, "
        f"{len(quiet) // len(QUIET_KINDS)} per kind, after the probationary period)",
        ["detector", *QUIET_KINDS, "all"],
        quiet_rows(detectors, quiet),
    )
    print(f"\nThe default detector is {registry.DEFAULT_DETECTOR}.")


#: What every detector is compared with (the issue's bar: the default beats the robust
#: z-score and the STL baseline on every corpus).
BASELINES = ("robust_z", "stl")
BOOTSTRAP_DRAWS = 2000


def comparison_rows(
    results: Sequence[CorpusResult], baseline: str = BASELINES[0]
) -> list[list[str]]:
    """One row per (detector, corpus) besides the baseline: the NAB standard gap to the
    baseline on the same files and how sure it is."""
    base = {r.corpus: r for r in results if r.detector == baseline}
    rows = []
    for r in results:
        other = base.get(r.corpus)
        if r.detector == baseline or other is None or not r.per_file:
            continue
        gap, low, high, above = paired_bootstrap(r.per_file, other.per_file, draws=BOOTSTRAP_DRAWS)
        rows.append(
            [r.detector, r.corpus, f"{gap:+.1f}", f"[{low:+.1f}, {high:+.1f}]", f"{above:.2f}"]
        )
    return rows


if __name__ == "__main__":
    main()
