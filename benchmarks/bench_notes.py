"""How good the LLM-written root-cause notes are, with the default offline model.

For each incident of the demo estate over two days (known root causes): rank the
causes, have the packaged local model write the note in-process, and count how
often its own note is used (not the template), how often the note names the true
root cause, and its latency. Needs the `local-llm` extra (make test installs it).
"""

from __future__ import annotations

import time

from benchmarks.common import percentile, print_table
from plugin_backend.adapters.demo import DemoSource, incidents_between
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
    service = ExplainService(DemoSource(seed=7), writer=NoteWriter(llm, timeout_s=30))
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
        f"Root-cause notes, {n} demo incidents, offline model {llm.model} (load {load_s:.1f} s)",
        ["fault", "note by", "names true cause", "latency s", "fallback reason"],
        rows,
    )
    print_table(
        "Summary",
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
