"""Root-cause ranking quality on simulated incidents, read back from a real Prometheus.

``scenario_suite`` (:mod:`plugin_backend.devtools.incidents`) builds N incidents of
each of the 8 fault types on one shared timeline (one per 12 h slot, the same
series identities throughout); one OpenMetrics backfill holds them all. For each
case the candidates are gathered through :class:`PrometheusClient`: every metric
name in ``[noticed_s - 1h, noticed_s]``, gauges as they are and counters as
``rate(x[1m])`` (the metric name put back), at a 15 s step. The symptom series
is taken out of the candidates. Then each ranker ranks them:

* ``rank_causes`` of :mod:`plugin_backend.rca.ranking`, without and with the true
  dependency map (``load_dependency_map`` of :mod:`plugin_backend.rca.dependencies`);
  where that package is not importable a clearly labelled stand-in runs instead;
* ``naive jump``: largest relative jump of the mean (last 10 min vs the 50 min before).

Hits are counted at entity level: a ranked series is a hit when it *is* the true
root-cause series, or when its ``service``/``node`` label is the root-cause
entity. ``AC@k`` is the share of cases with a hit in the top k, ``Avg@5`` the
mean of AC@1..AC@5; ``AC@1 ser`` counts only the exact series. Rank times exclude
the fetch, which is timed separately. Run: ``python -m benchmarks.bench_rca
[--seed N] [--n PER_FAULT]`` or ``python -m benchmarks rca`` (then the environment
variables ``BENCH_RCA_SEED`` and ``BENCH_RCA_N`` choose; defaults seed 1, 10 per
fault). Tune on some seeds and confirm on others.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentile, print_table
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.devtools.incidents import (
    FAULTS,
    STEP_S,
    IncidentCase,
    dependency_map,
    merge_cases,
    scenario_suite,
)
from plugin_backend.devtools.promserver import start_backfilled
from plugin_backend.types import Series, TimeRange, format_series_name

N_PER_FAULT = 10
SEED = 1
HISTORY_S = 2 * 3600  # backfilled history before each onset (the ranking sees 1 h)
LOOKBACK_S = 3600
WINDOW_S = 1800
TOP_K = 5

# A ranker: (symptom, candidates, at_s, dependencies or None) -> ranked (name, labels).
Ranked = list[tuple[str, Mapping[str, str]]]
Ranker = Callable[[Series, Sequence[Series], float, Any], Ranked]


# --------------------------------------------------------------------- fetching


def fetch_case(client: PrometheusClient, case: IncidentCase) -> tuple[Series, list[Series]]:
    """The symptom and every other series of the estate in the hour before noticed_s."""
    tr = TimeRange(case.noticed_s - LOOKBACK_S, case.noticed_s)
    found: list[Series] = []
    for name in client.label_values("__name__", time_range=tr):
        if name.endswith("_total"):
            for s in client.query_range(f"rate({name}[1m])", tr, STEP_S):
                found.append(Series({"__name__": name, **s.labels}, s.timestamps_s, s.values))
        else:
            found.extend(client.query_range(name, tr, STEP_S))
    symptom = [s for s in found if format_series_name(s.labels) == case.symptom_series]
    if len(symptom) != 1:
        raise RuntimeError(f"symptom {case.symptom_series} not found in Prometheus")
    candidates = [s for s in found if s is not symptom[0] and len(s) > 0]
    return symptom[0], candidates


# ---------------------------------------------------------------------- rankers


def _split(s: Series, at_s: float, recent_s: float) -> tuple[np.ndarray, np.ndarray]:
    v = s.values
    ok = np.isfinite(v)
    recent = ok & (s.timestamps_s > at_s - recent_s)
    return v[ok & ~recent], v[recent]


def naive_jump(symptom: Series, candidates: Sequence[Series], at_s: float, deps: Any) -> Ranked:
    """Largest relative change of the mean: last 10 min against the 50 min before."""
    scored: list[tuple[float, str, Mapping[str, str]]] = []
    for s in candidates:
        before, recent = _split(s, at_s, 600.0)
        if before.size == 0 or recent.size == 0:
            continue
        base = float(np.mean(before))
        jump = abs(float(np.mean(recent)) - base) / max(abs(base), 1e-9)
        scored.append((jump, s.name, s.labels))
    scored.sort(key=lambda item: -item[0])
    return [(name, labels) for _, name, labels in scored]


def _entity(labels: Mapping[str, str]) -> str:
    return labels.get("service") or labels.get("node") or ""


def _reachable(graph: Mapping[str, Any], entity: str) -> set[str]:
    """Services and nodes the entity (transitively) depends on or runs on, itself included."""
    services = graph.get("services", {})
    out, todo = {entity}, [entity]
    while todo:
        spec = services.get(todo.pop(), {})
        for nxt in [*spec.get("depends_on", []), *spec.get("runs_on", [])]:
            if nxt not in out:
                out.add(nxt)
                todo.append(nxt)
    return out


def standin_rank(symptom: Series, candidates: Sequence[Series], at_s: float, deps: Any) -> Ranked:
    """STAND-IN for rca.ranking.rank_causes (only used where that is not importable).

    Robust z of the largest deviation in the last ``WINDOW_S`` against the half hour
    before, favouring earlier onsets; with a dependency map, entities the symptom's
    service cannot reach are pushed down.
    """
    reach = _reachable(deps, _entity(symptom.labels)) if deps else None
    scored: list[tuple[float, str, Mapping[str, str]]] = []
    for s in candidates:
        before, recent = _split(s, at_s, WINDOW_S)
        if before.size < 10 or recent.size == 0:
            continue
        med = float(np.median(before))
        sigma = max(1.4826 * float(np.median(np.abs(before - med))), 1e-3 * abs(med), 1e-9)
        z = np.abs(recent - med) / sigma
        peak = float(np.max(z))
        if peak < 4.0:
            continue
        first = int(np.argmax(z > 4.0))
        earliness = 1.0 - first / max(recent.size - 1, 1)
        score = min(peak, 50.0) / 50.0 + 0.5 * earliness
        if reach is not None and _entity(s.labels) not in reach:
            score *= 0.3
        scored.append((score, s.name, s.labels))
    scored.sort(key=lambda item: -item[0])
    return [(name, labels) for _, name, labels in scored]


def _project_ranker() -> tuple[str, Ranker]:
    try:
        module = importlib.import_module("plugin_backend.rca.ranking")
        rank_causes: Any = module.rank_causes
    except (ImportError, AttributeError) as exc:
        print(f"plugin_backend.rca.ranking unavailable ({exc}): using the STAND-IN ranker")
        return "STAND-IN", standin_rank

    def rank(symptom: Series, candidates: Sequence[Series], at_s: float, deps: Any) -> Ranked:
        causes = rank_causes(symptom, candidates, at_s=at_s, window_s=WINDOW_S, dependencies=deps)
        return [(str(c.series), dict(c.labels)) for c in causes]

    return "rank_causes", rank


def _project_dependencies(name: str, workdir: Path) -> tuple[Any, str]:
    """The true service graph as the ranker wants it, and how it was loaded."""
    graph = dependency_map()
    if name == "STAND-IN":
        return graph, "dict"
    try:
        module = importlib.import_module("plugin_backend.rca.dependencies")
        load: Any = module.load_dependency_map
    except (ImportError, AttributeError) as exc:
        print(f"plugin_backend.rca.dependencies unavailable ({exc}): passing the raw dict")
        return graph, "raw dict"
    try:
        return load(graph), "load_dependency_map(dict)"
    except Exception as exc:
        path = workdir / "dependencies.json"
        path.write_text(json.dumps(graph), encoding="utf-8")
        try:
            return load(path), "load_dependency_map(path)"
        except Exception:
            print(f"load_dependency_map failed on a dict ({exc}) and on a file: raw dict")
            return graph, "raw dict"


# --------------------------------------------------------------------- scoring


def first_hit(ranked: Ranked, case: IncidentCase, *, strict: bool = False) -> int | None:
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

    def ac(self, k: int) -> float:
        return sum(1 for h in self.hits if h is not None and h <= k) / max(len(self.hits), 1)

    def row(self, fault: str, ranker: str) -> list[str]:
        avg5 = sum(self.ac(k) for k in range(1, TOP_K + 1)) / TOP_K
        strict1 = sum(1 for h in self.strict if h == 1) / max(len(self.strict), 1)
        return [
            fault,
            ranker,
            str(len(self.hits)),
            f"{self.ac(1):.2f}",
            f"{self.ac(3):.2f}",
            f"{avg5:.2f}",
            f"{strict1:.2f}",
        ]


def main(n_per_fault: int | None = None, seed: int | None = None) -> None:
    if n_per_fault is None:
        n_per_fault = int(os.environ.get("BENCH_RCA_N", N_PER_FAULT))
    if seed is None:
        seed = int(os.environ.get("BENCH_RCA_SEED", SEED))
    started = time.perf_counter()
    suite = scenario_suite(n_per_fault, seed, history_s=HISTORY_S)
    merged = merge_cases(suite)
    samples = sum(s.values.size for s in merged)
    sim_s = time.perf_counter() - started
    project_name, project = _project_ranker()
    with tempfile.TemporaryDirectory(prefix="bench-rca-") as tmp:
        t0 = time.perf_counter()
        server = start_backfilled(merged, Path(tmp))
        backfill_s = time.perf_counter() - t0
        deps, deps_how = _project_dependencies(project_name, Path(tmp))
        rankers: dict[str, tuple[Ranker, Any]] = {
            project_name: (project, None),
            f"{project_name} + deps": (project, deps),
            "naive jump": (naive_jump, None),
        }
        tallies: dict[tuple[str, str], Tally] = {}
        rank_times: dict[str, list[float]] = {name: [] for name in rankers}
        fetch_times: list[float] = []
        n_candidates: list[int] = []
        failures: list[str] = []
        client = PrometheusClient(base_url=server.url)
        try:
            for case in suite:
                t0 = time.perf_counter()
                symptom, candidates = fetch_case(client, case)
                fetch_times.append(time.perf_counter() - t0)
                n_candidates.append(len(candidates))
                for name, (ranker, dep) in rankers.items():
                    t0 = time.perf_counter()
                    try:
                        ranked = ranker(symptom, candidates, case.noticed_s, dep)
                    except Exception as exc:
                        failures.append(f"{name} on {case.fault}/{case.seed}: {exc!r}")
                        ranked = []
                    rank_times[name].append(time.perf_counter() - t0)
                    for fault in (case.fault, "overall"):
                        tally = tallies.setdefault((fault, name), Tally())
                        tally.hits.append(first_hit(ranked, case))
                        tally.strict.append(first_hit(ranked, case, strict=True))
        finally:
            client.close()
            server.stop()

    rows = [
        tallies[(fault, name)].row(fault, name)
        for fault in (*FAULTS, "overall")
        for name in rankers
    ]
    print_table(
        f"RCA ranking, seed {seed}, {len(suite)} simulated incidents ({n_per_fault} per "
        "fault; hit = true series or entity; 'AC@1 ser' = exact series only)",
        ["fault", "ranker", "n", "AC@1", "AC@3", "Avg@5", "AC@1 ser"],
        rows,
    )
    time_rows = [
        [
            name,
            f"{percentile(ts, 50) * 1000:.1f}",
            f"{percentile(ts, 95) * 1000:.1f}",
        ]
        for name, ts in rank_times.items()
    ]
    time_rows.append(
        [
            "Prometheus fetch",
            f"{percentile(fetch_times, 50) * 1000:.1f}",
            f"{percentile(fetch_times, 95) * 1000:.1f}",
        ]
    )
    print_table(
        "Time per case (ranking excludes the fetch)", ["step", "p50 ms", "p95 ms"], time_rows
    )
    print(
        f"\n{len(merged)} series, {samples:,} samples; simulate {sim_s:.1f}s, "
        f"write+backfill+start {backfill_s:.1f}s; candidates per case "
        f"{min(n_candidates)}-{max(n_candidates)}; dependencies: {deps_how}"
    )
    for failure in failures[:10]:
        print(f"FAILED {failure}", file=sys.stderr)


def _cli(argv: Sequence[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="RCA ranking benchmark")
    parser.add_argument("--seed", type=int, default=None, help=f"suite seed (default {SEED})")
    parser.add_argument("--n", type=int, default=None, help="incidents per fault (default 10)")
    args = parser.parse_args(argv)
    main(args.n, args.seed)


if __name__ == "__main__":
    _cli(sys.argv[1:])
