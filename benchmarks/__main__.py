"""Run every benchmark and print its table: ``python -m benchmarks [NAME ...]``."""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import (
    bench_dashboard,
    bench_detection,
    bench_load,
    bench_notes,
    bench_query,
    bench_rca,
    bench_scale,
    bench_scoring,
    bench_worker,
)

BENCHMARKS = {
    "query": bench_query.main,
    "detection": bench_detection.main,
    "scoring": bench_scoring.main,
    "dashboard": bench_dashboard.main,
    "rca": bench_rca.main,
    "notes": bench_notes.main,
    "worker": bench_worker.main,
    "load": bench_load.main,
    "scale": bench_scale.main,
    "scale-state": bench_scale.state_main,
}


def main(argv: list[str]) -> int:
    """``python -m benchmarks [query|detection ...] [--detectors a,b] [--ablations]
    [--fusion] [--season] [--rules N] [--detector D]`` (the last two: ``scale``)."""
    detectors: list[str] | None = None
    ablations = "--ablations" in argv
    fusion = "--fusion" in argv
    season = "--season" in argv
    argv = [a for a in argv if a not in ("--ablations", "--fusion", "--season")]
    if "--detectors" in argv:
        at = argv.index("--detectors")
        detectors = argv[at + 1].split(",")
        argv = argv[:at] + argv[at + 2 :]
    scale: dict[str, Any] = {}
    for flag, key, kind in (("--rules", "count", int), ("--detector", "detector", str)):
        if flag in argv:
            at = argv.index(flag)
            scale[key] = kind(argv[at + 1])
            argv = argv[:at] + argv[at + 2 :]
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        if name == "detection":
            bench_detection.main(detectors, ablations=ablations, fusion=fusion, season=season)
        elif name == "scale":
            bench_scale.main(**scale)
        else:
            BENCHMARKS[name]()
    return 0


raise SystemExit(main(sys.argv[1:]))
