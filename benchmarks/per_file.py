"""Where two detectors differ on one corpus, file by file and alarm by alarm.

``python -m benchmarks.per_file CORPUS DETECTOR DETECTOR [...]`` (a detector may
carry options: ``transformer:delayed_view=16,phase_days=0``; CORPUS is a nab-dev
corpus, ``synthetic`` or ``quiet``, the benchmark's quiet set). Each file is scored
once per detector, cold, and alarmed with the default ``WindowPolicy``. It prints:

* each file's NAB standard score per detector;
* the corpus score of the last detector with one file's result swapped for the
  first detector's: the file that carries a gap between them;
* for a corpus without windows (artificialNoAnomaly, ``quiet``), false alarms per
  series per week after NAB's probation instead of a score;
* every alarm per file and detector: its time, the labelled window it falls in
  (``W0``, ``W1``...; ``FP`` outside all), the value, the expected value and the
  raw score (a run-trigger alarm can carry a raw score below 1).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from benchmarks.bench_detection import (
    QUIET_SEED,
    CorpusResult,
    assess,
    load_corpora,
    policy_alarms,
)
from benchmarks.bench_detection import score_files as score_corpus
from benchmarks.common import print_table
from benchmarks.nab import CorpusScore, NabFile, default_nab_root
from benchmarks.synthetic import load_quiet_corpus
from plugin_backend.scoring import registry
from plugin_backend.scoring.base import Detector, ScoredSeries
from plugin_backend.scoring.windows import WindowPolicy, alarms

__all__ = ["alarm_rows", "main", "parse_detector", "swapped_scores"]


def parse_detector(spec: str) -> tuple[str, dict[str, object]]:
    """``name`` or ``name:key=value,key=value`` (ints and floats parsed)."""
    name, _, rest = spec.partition(":")
    options: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, text = item.partition("=")
        value: object = text
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        options[key] = value
    return name, options


def swapped_scores(base: CorpusResult, other: CorpusResult) -> list[float]:
    """``other``'s normalised corpus score with file ``i``'s result taken from ``base``."""
    out = []
    for i in range(len(other.per_file)):
        files = list(other.per_file)
        files[i] = base.per_file[i]
        out.append(
            CorpusScore(
                raw=sum(f.raw for f in files),
                null=sum(f.null for f in files),
                perfect=sum(f.perfect for f in files),
                files=len(files),
            ).normalized
        )
    return out


def alarm_rows(nab_file: NabFile, scored: ScoredSeries, policy: WindowPolicy) -> list[str]:
    """One line per alarm: time, window (or FP), value, expected, raw score."""
    rows = []
    for i in np.flatnonzero(alarms(scored, policy)).tolist():
        inside = [k for k, (lo, hi) in enumerate(nab_file.windows) if lo <= i <= hi]
        when = datetime.fromtimestamp(nab_file.timestamps_s[i], UTC).strftime("%m-%d %H:%M")
        rows.append(
            f"{when} {f'W{inside[0]}' if inside else 'FP'} value {scored.values[i]:.4g} "
            f"expected {scored.expected[i]:.4g} score {scored.score[i]:.2f}"
        )
    return rows


def _corpus_cell(result: CorpusResult) -> str:
    if result.per_file and any(f.perfect != f.null for f in result.per_file):
        return f"{result.nab_standard:.1f}"
    return f"{result.false_per_week:.2f} FA/wk"


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    corpus, specs = argv[0], list(argv[1:])
    if corpus == "quiet":
        files = load_quiet_corpus(QUIET_SEED)
    else:
        files = load_corpora(default_nab_root(), [] if corpus == "synthetic" else [corpus])[corpus]
    policy = WindowPolicy()
    results: list[CorpusResult] = []
    scored_by: list[list[ScoredSeries | None]] = []
    for spec in specs:
        name, options = parse_detector(spec)

        def make(name: str = name, options: dict[str, object] = options) -> Detector:
            return registry.get_detector(name, **options)

        scored, spent = score_corpus(make, files)
        results.append(assess(spec, corpus, scored, policy_alarms(policy), spent))
        scored_by.append([item.scored for item in scored])
    swapped = swapped_scores(results[0], results[-1])
    print_table(
        f"{corpus}: NAB standard per file (default WindowPolicy); last column: "
        f"{specs[-1]}'s corpus score with that file's result from {specs[0]}",
        ["file", "windows", *specs, "swapped"],
        [
            [
                f.name.split("/")[-1],
                str(len(f.windows)),
                *(f"{r.per_file[i].normalized:.1f}" for r in results),
                f"{swapped[i]:.1f}",
            ]
            for i, f in enumerate(files)
        ]
        + [["corpus", "", *(_corpus_cell(r) for r in results), ""]],
    )
    for i, nab_file in enumerate(files):
        print(f"\n{nab_file.name}")
        for spec, scored_list in zip(specs, scored_by, strict=True):
            item = scored_list[i]
            lines = alarm_rows(nab_file, item, policy) if item is not None else ["refused"]
            print(f"  {spec}: " + ("; ".join(lines) or "no alarm"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
