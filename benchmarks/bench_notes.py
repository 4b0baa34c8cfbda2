"""How good the LLM-written root-cause notes are, with the default offline model.

Two sets of incidents with known root causes: the demo estate's over two days,
and the incident simulator's (one of each of its 8 fault types, backfilled into a
real Prometheus and explained through the same service as the API, so candidate
gathering, counters as rates and the prompt all run as in production). For each:
rank the causes, have the packaged local model write the note in-process, and
count how often its own note is used (not the template), how often the note names
the true root cause (its metric or its entity), how often the ranker's top cause
is right, and the note's latency. Needs the `local-llm` extra (make test installs
it) and, for the simulated set, Debian's prometheus.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import percentile, print_table
from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.devtools.incidents import merge_cases, scenario_suite
from plugin_backend.devtools.promserver import start_backfilled
from plugin_backend.errors import BackendError
from plugin_backend.explain import ExplainService
from plugin_backend.llm.writer import NoteWriter

DAY_START_S = 1_767_225_600
DAYS = 2


def main() -> None:
    try:
        from plugin_backend.adapters.llm_local import LocalTransformersLLM
        from plugin_backend.adapters.llm_weights import ensure_local_model

        started = time.perf_counter()
        llm = LocalTransformersLLM(ensure_local_model())
        load_s = time.perf_counter() - started
    except BackendError as exc:
        print(f"\nlocal LLM unavailable ({exc.message}), skipping")
        return
    writer = NoteWriter(llm, timeout_s=30)
    _demo(llm.model, load_s, writer)
    _simulated(llm.model, writer)


def _demo(model: str, load_s: float, writer: NoteWriter) -> None:
    service = ExplainService(DemoSource(seed=7), writer=writer)
    rows, latencies, used, names_cause, ranked_first = [], [], 0, 0, 0
    incidents = incidents_between(DAY_START_S, DAY_START_S + DAYS * 86_400, seed=7)
    for incident in incidents:
        report = service.explain(incident.symptom_series[0], incident.start_s + 600, 1800)
        llm_info = report.llm
        metric = incident.root_cause_series.split("{")[0]
        top_ok = bool(report.causes) and report.causes[0].series == incident.root_cause_series
        ranked_first += top_ok
        used += not llm_info["fallback"]
        names_cause += metric in report.summary
        latencies.append(float(llm_info["latency_s"]))
        rows.append(
            [
                incident.fault,
                "llm" if not llm_info["fallback"] else "template",
                "yes" if metric in report.summary else "no",
                f"{llm_info['latency_s']:.1f}",
                (llm_info.get("reason") or "")[:40],
            ]
        )
    n = len(incidents)
    print_table(
        f"Root-cause notes, {n} demo incidents, offline model {model} (load {load_s:.1f} s)",
        ["fault", "note by", "names true cause", "latency s", "fallback reason"],
        rows,
    )
    _summary("Summary", n, used, names_cause, ranked_first, latencies)


def _summary(
    title: str, n: int, used: int, names_cause: int, ranked_first: int, latencies: list[float]
) -> None:
    print_table(
        title,
        ["LLM note used", "note names true cause", "ranker top-1 right", "p50 s", "p95 s"],
        [
            [
                f"{used}/{n} ({used / n:.0%})",
                f"{names_cause}/{n}",
                f"{ranked_first}/{n}",
                f"{percentile(latencies, 50):.1f}",
                f"{percentile(latencies, 95):.1f}",
            ]
        ],
    )


SIM_SEED = 5


def _simulated(model: str, writer: NoteWriter) -> None:
    cases = scenario_suite(1, SIM_SEED)
    rows, latencies, used, names_cause, ranked_first = [], [], 0, 0, 0
    with tempfile.TemporaryDirectory(prefix="bench-notes-") as tmp:
        server = start_backfilled(merge_cases(cases), Path(tmp))
        try:
            service = ExplainService(PrometheusClient(base_url=server.url), writer=writer)
            for case in cases:
                name = case.symptom_series
                query = f"rate({name}[1m])" if name.split("{")[0].endswith("_total") else name
                report = service.explain(query, case.noticed_s, 1800)
                info = report.llm
                metric = case.root_cause_series.split("{")[0]
                # the symptom's own name may contain the entity: look outside it
                text = report.summary.replace(str(report.symptom["series"]), "")
                named = metric in text or f'"{case.root_cause_entity}"' in text
                top = report.causes[0] if report.causes else None
                top_ok = top is not None and (
                    top.series == case.root_cause_series
                    or case.root_cause_entity in top.labels.values()
                )
                used += not info["fallback"]
                names_cause += named
                ranked_first += top_ok
                latencies.append(float(info["latency_s"]))
                rows.append(
                    [
                        case.fault,
                        "llm" if not info["fallback"] else "template",
                        "yes" if named else "no",
                        "yes" if top_ok else "no",
                        f"{info['latency_s']:.1f}",
                        (info.get("reason") or "")[:40],
                    ]
                )
        finally:
            server.stop()
    n = len(cases)
    print_table(
        f"Root-cause notes, {n} simulated incidents (one per fault type, real Prometheus), "
        f"offline model {model}",
        ["fault", "note by", "names true cause", "top-1 right", "latency s", "fallback reason"],
        rows,
    )
    _summary("Summary (simulated)", n, used, names_cause, ranked_first, latencies)
