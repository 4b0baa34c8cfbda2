"""How good the LLM-written root-cause notes are, with the default offline model.

Two sets of incidents with known root causes: the demo estate's over two days,
and the incident simulator's (one of each of its 8 fault types, backfilled into a
real Prometheus and explained through the same service as the API, so candidate
gathering, counters as rates and the prompt all run as in production). For each:
rank the causes, have the packaged local model write the note in-process, and
count how often its own note is used (not the template), how often the note names
the true root cause (its metric or its entity) -- for the LLM's notes and the
template fallbacks apart, since a template names the ranker's top cause by
construction -- how often the ranker's top cause is the true series and how often
it is at least of the true entity (service or node), and the note's latency. Needs
the `local-llm` extra (make test installs it) and, for the simulated set, Debian's
prometheus.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import percentile, print_table
from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.errors import BackendError
from plugin_backend.explain import ExplainService
from plugin_backend.llm.writer import NoteWriter
from testkit.incidents import merge_cases, scenario_suite
from testkit.promserver import start_backfilled

DAY_START_S = 1_767_225_600
DAYS = 2


@dataclass(frozen=True)
class NoteOutcome:
    """One incident's note, judged against the known root cause."""

    by_llm: bool  # the LLM's own note was used, not the template fallback
    names_cause: bool
    top_series: bool  # the ranker's top cause is the true root-cause series
    top_entity: bool  # ... or at least a series of the root cause's service or node
    latency_s: float


SUMMARY_HEADER = [
    "LLM note used",
    "LLM notes naming true cause",
    "template notes naming true cause",
    "ranker top-1 series",
    "ranker top-1 entity",
    "p50 s",
    "p95 s",
]


def summary_row(outcomes: Sequence[NoteOutcome]) -> list[str]:
    """Counts as ``k/of``: naming the cause is counted within LLM notes and within
    template notes apart."""
    n = len(outcomes)
    llm = [o for o in outcomes if o.by_llm]
    template = [o for o in outcomes if not o.by_llm]
    latencies = [o.latency_s for o in outcomes]
    return [
        f"{len(llm)}/{n} ({len(llm) / n:.0%})",
        f"{sum(o.names_cause for o in llm)}/{len(llm)}",
        f"{sum(o.names_cause for o in template)}/{len(template)}",
        f"{sum(o.top_series for o in outcomes)}/{n}",
        f"{sum(o.top_entity for o in outcomes)}/{n}",
        f"{percentile(latencies, 50):.1f}",
        f"{percentile(latencies, 95):.1f}",
    ]


def entity_of(series: str) -> str:
    """The ``service`` (else ``node``) label value of a series name, '' if neither."""
    for key in ("service", "node"):
        found = re.search(rf'\b{key}="([^"]*)"', series)
        if found:
            return found.group(1)
    return ""


ROW_HEADER = [
    "fault",
    "note by",
    "names true cause",
    "top-1 series",
    "top-1 entity",
    "latency s",
    "fallback reason",
]


def _row(fault: str, outcome: NoteOutcome, info: dict[str, object]) -> list[str]:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    return [
        fault,
        "llm" if outcome.by_llm else "template",
        yes(outcome.names_cause),
        yes(outcome.top_series),
        yes(outcome.top_entity),
        f"{outcome.latency_s:.1f}",
        str(info.get("reason") or "")[:40],
    ]


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
    rows, outcomes = [], []
    incidents = incidents_between(DAY_START_S, DAY_START_S + DAYS * 86_400, seed=7)
    for incident in incidents:
        report = service.explain(incident.symptom_series[0], incident.start_s + 600, 1800)
        info = report.llm
        metric = incident.root_cause_series.split("{")[0]
        top = report.causes[0] if report.causes else None
        outcome = NoteOutcome(
            by_llm=not info["fallback"],
            names_cause=metric in report.summary,
            top_series=top is not None and top.series == incident.root_cause_series,
            top_entity=top is not None
            and entity_of(incident.root_cause_series) in top.labels.values(),
            latency_s=float(info["latency_s"]),
        )
        outcomes.append(outcome)
        rows.append(_row(incident.fault, outcome, info))
    print_table(
        f"Root-cause notes, {len(incidents)} demo incidents, offline model {model} "
        f"(load {load_s:.1f} s)",
        ROW_HEADER,
        rows,
    )
    print_table("Summary", SUMMARY_HEADER, [summary_row(outcomes)])


SIM_SEED = 5


def _simulated(model: str, writer: NoteWriter) -> None:
    cases = scenario_suite(1, SIM_SEED)
    rows, outcomes = [], []
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
                top = report.causes[0] if report.causes else None
                outcome = NoteOutcome(
                    by_llm=not info["fallback"],
                    names_cause=metric in text or f'"{case.root_cause_entity}"' in text,
                    top_series=top is not None and top.series == case.root_cause_series,
                    top_entity=top is not None
                    and case.root_cause_entity
                    in (top.labels.get("service"), top.labels.get("node")),
                    latency_s=float(info["latency_s"]),
                )
                outcomes.append(outcome)
                rows.append(_row(case.fault, outcome, info))
        finally:
            server.stop()
    print_table(
        f"Root-cause notes, {len(cases)} simulated incidents (one per fault type, real "
        f"Prometheus), offline model {model}",
        ROW_HEADER,
        rows,
    )
    print_table("Summary (simulated)", SUMMARY_HEADER, [summary_row(outcomes)])
