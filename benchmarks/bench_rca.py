"""Root-cause ranking quality on incidents from several sources, read back from a real Prometheus.

Sources (:data:`SOURCES`), each backfilled (promtool, OpenMetrics) into its own
throw-away Prometheus:

* ``sim``: the project's own simulator (:mod:`testkit.incidents`),
  ``N`` incidents of each of its 8 fault types, 15 s steps, 1 h fetched per case;
* ``estate2``: :mod:`benchmarks.estate2`, written from a different model of an estate
  (other topology, fault mechanics and timings, distractors), 30 s steps, 3 h;
* ``petshop``: the real PetShop training issues (:mod:`benchmarks.petshop`), 5 min
  steps, 24 h; skipped with a message where ``../shared`` does not hold it.

For each case the candidates are gathered through :class:`PrometheusClient`: every
metric name in ``[noticed_s - lookback, noticed_s]``, gauges as they are and
counters (``*_total``) as ``rate(x[4 steps])`` with the metric name put back. The
symptom series is taken out of the candidates. Then every ranker of :data:`RANKERS`
ranks them.

Plugging in a ranker: append ``(name, callable, wants_dependencies)`` to
:data:`RANKERS`. The callable is a :data:`Ranker`:
``ranker(symptom, candidates, at_s, dependencies) -> [(series_name, labels), ...]``
best first, where ``dependencies`` is the source's
:class:`~plugin_backend.rca.dependencies.DependencyMap` when ``wants_dependencies``
is true, else ``None``. ``series_name`` is ``format_series_name(labels)``
(``Series.name``). A ranker that raises is counted as ranking nothing and reported.

Scoring. Hits are counted at entity level: a ranked series is a hit when it *is* the
true root-cause series, or when its ``service``/``node`` label is the root-cause
entity. ``AC@k`` is the share of cases with a hit in the top k, ``Avg@5`` the mean
of AC@1..AC@5; ``AC@1 ser`` counts only the exact root series (``n/a`` where the
source names none: PetShop). Per source, per fault type and overall; then a
summary with every source and a ``WORST`` row per ranker (the minimum of each
column over the sources). Rank times exclude the fetch, which is timed apart.

Run: ``python -m benchmarks.bench_rca [--seed N] [--n PER_FAULT] [--sources a,b]
[--petshop-at end|target]`` or ``python -m benchmarks rca`` (then the environment
variables ``BENCH_RCA_SEED``, ``BENCH_RCA_N``, ``BENCH_RCA_SOURCES`` choose; defaults
seed 1, 10 per fault for ``sim`` and 8 for ``estate2``, all sources). Choose knobs
on some sources and seeds and confirm them on the others.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import estate2, petshop
from benchmarks.common import percentile, print_table
from benchmarks.rca_case import RcaCase, RcaSource
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.rca.baro import baro_rank
from plugin_backend.rca.dependencies import DependencyMap, load_dependency_map
from plugin_backend.rca.ensemble import ensemble_rank, fuse
from plugin_backend.rca.graph_walk import graph_walk_rank
from plugin_backend.rca.methods import Ranker as MethodRanker
from plugin_backend.rca.nsigma import nsigma_rank
from plugin_backend.rca.ranking import rank_causes
from plugin_backend.types import Series, TimeRange, format_series_name
from testkit import incidents
from testkit.promserver import start_backfilled

N_PER_FAULT = 10
N_PER_FAULT_ESTATE2 = 8
SEED = 1
SIM_HISTORY_S = 2 * 3600  # backfilled history before each simulated onset
SIM_LOOKBACK_S = 3600
WINDOW_S = 1800
TOP_K = 5

# A ranker: (symptom, candidates, at_s, dependencies or None) -> ranked (name, labels).
Ranked = list[tuple[str, Mapping[str, str]]]
Ranker = Callable[[Series, Sequence[Series], float, DependencyMap | None], Ranked]


# ---------------------------------------------------------------------- rankers


def _adapt(rank: MethodRanker, **fixed: float) -> Ranker:
    """A project ranker (``plugin_backend.rca.methods.Ranker``) as a bench ranker; without
    ``window_s`` it sees all the case's data and follows the symptom's onset."""

    def ranker(
        symptom: Series, candidates: Sequence[Series], at_s: float, deps: DependencyMap | None
    ) -> Ranked:
        causes = rank(symptom, candidates, at_s=at_s, dependencies=deps, **fixed)
        return [(str(c.series), dict(c.labels)) for c in causes]

    ranker.__doc__ = rank.__doc__
    return ranker


def fusion_without_map(
    symptom: Series, candidates: Sequence[Series], at_s: float, deps: DependencyMap | None
) -> Ranked:
    """The ensemble's fusion without a map (rank_causes with plain BARO): not the default."""
    del deps
    rankings = {
        "rank_causes": rank_causes(symptom, candidates, at_s=at_s),
        "graph_walk": graph_walk_rank(symptom, candidates, at_s=at_s),
    }
    return [(str(c.series), dict(c.labels)) for c in fuse(rankings)]


rank_causes_ranker = _adapt(rank_causes)  # the window follows the symptom
rank_causes_30m = _adapt(rank_causes, window_s=WINDOW_S, baseline_s=3600.0)  # the old fixed one


def naive_jump(
    symptom: Series, candidates: Sequence[Series], at_s: float, deps: DependencyMap | None
) -> Ranked:
    """Largest relative change of the mean: last 10 min against the 50 min before."""
    scored: list[tuple[float, str, Mapping[str, str]]] = []
    for s in candidates:
        t, v = s.timestamps_s, s.values
        ok = np.isfinite(v) & (t > at_s - 3600) & (t <= at_s)
        recent = t > at_s - 600
        before, after = v[ok & ~recent], v[ok & recent]
        if before.size == 0 or after.size == 0:
            continue
        base = float(np.mean(before))
        jump = abs(float(np.mean(after)) - base) / max(abs(base), 1e-9)
        scored.append((jump, s.name, s.labels))
    scored.sort(key=lambda item: -item[0])
    return [(name, labels) for _, name, labels in scored]


# (name, ranker, wants the dependency map): add a ranker here.
RANKERS: list[tuple[str, Ranker, bool]] = [
    # The default (explain's ensemble_rank) is rank_causes alone without a map.
    ("rank_causes (default)", rank_causes_ranker, False),
    ("ensemble + deps (default)", _adapt(ensemble_rank), True),
    ("rank_causes + deps", rank_causes_ranker, True),
    ("fusion with BARO, no map", fusion_without_map, False),
    ("rank_causes 30m", rank_causes_30m, False),
    ("BARO", _adapt(baro_rank), False),
    ("N-Sigma", _adapt(nsigma_rank), False),
    ("graph walk + deps", _adapt(graph_walk_rank), True),
    ("naive jump", naive_jump, False),
]


# ---------------------------------------------------------------------- sources


def sim_source(n_per_fault: int, seed: int) -> RcaSource:
    suite = incidents.scenario_suite(n_per_fault, seed, history_s=SIM_HISTORY_S)
    cases = [
        RcaCase(
            source="sim",
            fault=c.fault,
            name=f"{c.fault}/{c.seed}",
            noticed_s=c.noticed_s,
            symptom_series=c.symptom_series,
            root_cause_entity=c.root_cause_entity,
            root_cause_series=c.root_cause_series,
            step_s=incidents.STEP_S,
            lookback_s=SIM_LOOKBACK_S,
        )
        for c in suite
    ]
    return RcaSource(
        name="sim",
        faults=incidents.FAULTS,
        cases=cases,
        series=incidents.merge_cases(suite),
        dependencies=incidents.dependency_map(),
        note=f"the project's simulator, seed {seed}, {n_per_fault} per fault",
    )


def estate2_source(n_per_fault: int, seed: int) -> RcaSource:
    return estate2.build_source(n_per_fault, seed)


def petshop_source(at: str) -> RcaSource | None:
    if not petshop.dataset_available():
        print(f"petshop: skipped, {petshop.DATASET_DIR} not found")
        return None
    return petshop.build_source(petshop.load_dataset(), at="target" if at == "target" else "end")


# --------------------------------------------------------------------- fetching


def fetch_case(client: PrometheusClient, case: RcaCase) -> tuple[Series, list[Series]]:
    """The symptom and every other series of the estate over the case's lookback."""
    tr = TimeRange(case.noticed_s - case.lookback_s, case.noticed_s)
    rate_window = f"{int(4 * case.step_s)}s"
    found: list[Series] = []
    for name in client.label_values("__name__", time_range=tr):
        if name.endswith("_total"):
            for s in client.query_range(f"rate({name}[{rate_window}])", tr, case.step_s):
                found.append(Series({"__name__": name, **s.labels}, s.timestamps_s, s.values))
        else:
            found.extend(client.query_range(name, tr, case.step_s))
    symptom = [s for s in found if format_series_name(s.labels) == case.symptom_series]
    if len(symptom) != 1:
        raise RuntimeError(f"symptom {case.symptom_series} not found in Prometheus")
    candidates = [s for s in found if s is not symptom[0] and len(s) > 0]
    return symptom[0], candidates


# --------------------------------------------------------------------- scoring


def first_hit(
    ranked: Sequence[tuple[str, Mapping[str, str]]], case: RcaCase, *, strict: bool = False
) -> int | None:
    """1-based rank of the first hit within the top TOP_K, or None."""
    for pos, (name, labels) in enumerate(ranked[:TOP_K], start=1):
        if name == case.root_cause_series:
            return pos
        if not strict and case.root_cause_entity in (labels.get("service"), labels.get("node")):
            return pos
    return None


@dataclass
class Tally:
    hits: list[int | None] = field(default_factory=list)
    strict: list[int | None] = field(default_factory=list)
    has_series: bool = True

    def ac(self, k: int) -> float:
        return sum(1 for h in self.hits if h is not None and h <= k) / max(len(self.hits), 1)

    def avg5(self) -> float:
        return sum(self.ac(k) for k in range(1, TOP_K + 1)) / TOP_K

    def strict1(self) -> float | None:
        if not self.has_series:
            return None
        return sum(1 for h in self.strict if h == 1) / max(len(self.strict), 1)

    def cells(self) -> list[str]:
        s1 = self.strict1()
        return [
            str(len(self.hits)),
            f"{self.ac(1):.2f}",
            f"{self.ac(3):.2f}",
            f"{self.avg5():.2f}",
            "n/a" if s1 is None else f"{s1:.2f}",
        ]


@dataclass
class SourceResult:
    source: RcaSource
    tallies: dict[tuple[str, str], Tally]  # (fault or "overall", ranker) -> tally
    rank_times: dict[str, list[float]]
    fetch_times: list[float]
    n_candidates: list[int]
    backfill_s: float
    failures: list[str]


def run_source(source: RcaSource, rankers: Sequence[tuple[str, Ranker, bool]]) -> SourceResult:
    """Backfill the source, fetch each case from Prometheus and rank it with every ranker."""
    deps = load_dependency_map(source.dependencies)
    has_series = all(c.root_cause_series is not None for c in source.cases)
    tallies: dict[tuple[str, str], Tally] = {}
    rank_times: dict[str, list[float]] = {name: [] for name, _, _ in rankers}
    fetch_times: list[float] = []
    n_candidates: list[int] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-rca-{source.name}-") as tmp:
        t0 = time.perf_counter()
        server = start_backfilled(source.series, Path(tmp))
        backfill_s = time.perf_counter() - t0
        client = PrometheusClient(base_url=server.url)
        try:
            for case in source.cases:
                t0 = time.perf_counter()
                symptom, candidates = fetch_case(client, case)
                fetch_times.append(time.perf_counter() - t0)
                n_candidates.append(len(candidates))
                for name, ranker, wants_deps in rankers:
                    t0 = time.perf_counter()
                    try:
                        ranked = ranker(
                            symptom, candidates, case.noticed_s, deps if wants_deps else None
                        )
                    except Exception as exc:
                        failures.append(f"{name} on {source.name} {case.name}: {exc!r}")
                        ranked = []
                    rank_times[name].append(time.perf_counter() - t0)
                    for fault in (case.fault, "overall"):
                        tally = tallies.setdefault((fault, name), Tally(has_series=has_series))
                        tally.hits.append(first_hit(ranked, case))
                        tally.strict.append(first_hit(ranked, case, strict=True))
        finally:
            client.close()
            server.stop()
    return SourceResult(
        source, tallies, rank_times, fetch_times, n_candidates, backfill_s, failures
    )


HEADER = ["AC@1", "AC@3", "Avg@5", "AC@1 ser"]


def print_source(result: SourceResult, rankers: Sequence[tuple[str, Ranker, bool]]) -> None:
    src = result.source
    faults = [f for f in src.faults if any(c.fault == f for c in src.cases)]
    rows = [
        [fault, name, *result.tallies[(fault, name)].cells()]
        for fault in (*faults, "overall")
        for name, _, _ in rankers
    ]
    print_table(
        f"RCA ranking on {src.name}: {len(src.cases)} incidents ({src.note}); entity-level "
        "hit = a series of the root-cause entity; 'AC@1 ser' = exact root series only",
        ["fault", "ranker", "n", *HEADER],
        rows,
    )
    print(
        f"{len(src.series)} series, {sum(s.values.size for s in src.series):,} samples; "
        f"write+backfill+start {result.backfill_s:.1f}s; candidates per case "
        f"{min(result.n_candidates)}-{max(result.n_candidates)}"
    )


def print_summary(
    results: Sequence[SourceResult], rankers: Sequence[tuple[str, Ranker, bool]]
) -> None:
    rows: list[list[str]] = []
    for name, _, _ in rankers:
        overall = [r.tallies[("overall", name)] for r in results]
        for r, tally in zip(results, overall, strict=True):
            rows.append([r.source.name, name, *tally.cells()])
        strict = [s for s in (t.strict1() for t in overall) if s is not None]
        worst = [
            "-",
            f"{min(t.ac(1) for t in overall):.2f}",
            f"{min(t.ac(3) for t in overall):.2f}",
            f"{min(t.avg5() for t in overall):.2f}",
            f"{min(strict):.2f}" if strict else "n/a",
        ]
        rows.append(["WORST", name, *worst])
    print_table(
        "RCA ranking, every source (overall rows) and the WORST source per ranker "
        "(minimum of each column over the sources)",
        ["source", "ranker", "n", *HEADER],
        rows,
    )
    time_rows = [
        [name, f"{percentile(ts, 50) * 1000:.1f}", f"{percentile(ts, 95) * 1000:.1f}"]
        for name, _, _ in rankers
        for ts in [[t for r in results for t in r.rank_times[name]]]
    ]
    fetches = [t for r in results for t in r.fetch_times]
    time_rows.append(
        [
            "Prometheus fetch",
            f"{percentile(fetches, 50) * 1000:.1f}",
            f"{percentile(fetches, 95) * 1000:.1f}",
        ]
    )
    print_table(
        "Time per case, all sources (ranking excludes the fetch)",
        ["step", "p50 ms", "p95 ms"],
        time_rows,
    )


SOURCE_NAMES = ("sim", "estate2", "petshop")


def main(
    n_per_fault: int | None = None,
    seed: int | None = None,
    sources: Sequence[str] | None = None,
    petshop_at: str = "end",
) -> None:
    env_n = os.environ.get("BENCH_RCA_N")
    if n_per_fault is None and env_n:
        n_per_fault = int(env_n)
    if seed is None:
        seed = int(os.environ.get("BENCH_RCA_SEED", SEED))
    if sources is None:
        sources = os.environ.get("BENCH_RCA_SOURCES", ",".join(SOURCE_NAMES)).split(",")
    unknown = [s for s in sources if s not in SOURCE_NAMES]
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; choose from {', '.join(SOURCE_NAMES)}")
    results: list[SourceResult] = []
    for name in sources:
        t0 = time.perf_counter()
        if name == "sim":
            source: RcaSource | None = sim_source(n_per_fault or N_PER_FAULT, seed)
        elif name == "estate2":
            source = estate2_source(n_per_fault or N_PER_FAULT_ESTATE2, seed)
        else:
            source = petshop_source(petshop_at)
        if source is None:
            continue
        build_s = time.perf_counter() - t0
        result = run_source(source, RANKERS)
        print_source(result, RANKERS)
        print(f"built in {build_s:.1f}s")
        for failure in result.failures[:10]:
            print(f"FAILED {failure}", file=sys.stderr)
        results.append(result)
    if results:
        print_summary(results, RANKERS)


def _cli(argv: Sequence[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="RCA ranking benchmark")
    parser.add_argument("--seed", type=int, default=None, help=f"suite seed (default {SEED})")
    parser.add_argument(
        "--n", type=int, default=None, help="incidents per fault (default 10 sim, 8 estate2)"
    )
    parser.add_argument("--sources", default=None, help=f"comma list of {','.join(SOURCE_NAMES)}")
    parser.add_argument(
        "--petshop-at",
        choices=("end", "target"),
        default="end",
        help="rank PetShop issues at the issue's last row (default) or at target.timestamp",
    )
    args = parser.parse_args(argv)
    main(args.n, args.seed, args.sources.split(",") if args.sources else None, args.petshop_at)


if __name__ == "__main__":
    _cli(sys.argv[1:])
