"""How good the root-cause notes are: graded by rule, per source, LLM and template apart.

Sources (those of ``python -m benchmarks rca``): ``sim`` (the project's simulator),
``estate2`` (the second generator, :mod:`benchmarks.estate2`) and ``petshop`` (the real
PetShop training issues, where ``../shared`` holds them), one incident per fault
type for the generators. Each source is backfilled into a real Prometheus and every
incident explained through :class:`ExplainService` as the API does (candidate
gathering, counters as rates, the window that follows the symptom, the source's
dependency map), with the packaged offline model writing the note in-process.

Each note is graded by rule (:func:`grade`) against the incident's truth, the
report's evidence and the source's dependency map:

``root first``
    the first entity the note names (of every entity the estate has: the map's and
    the evidence's) is the true root-cause entity;
``inside``
    it names no entity or metric of the estate that is not in the report's evidence
    (the symptom, the ranked causes, the path);
``path ok``
    it states a path consistent with the map: the entities it names, in order of first
    mention, end at the symptom's, and each lies downstream of the one before
    (a failure flowing to what needs it), or each upstream (load flowing from callers
    to what they need); ``n/a`` where the map does not know the symptom's entity;
``check``
    it says what to check first and why: a sentence with "check" naming an evidence
    name, followed by a reason (``:`` or "because").

Graded for the note used (the LLM's where it passed the checker, else the
template), for the LLM's notes alone and for the template note of every incident.
Then the share of LLM notes used, its p50/p95 latency, and the template's.

With a baseline prompt (``--baseline-prompt note_v3``) each note is written again
with it, right after, from the same report: the two prompts compared under the same
load (the machine's load moves latency far more than any prompt).

Run: ``python -m benchmarks notes`` (environment: ``BENCH_NOTES_SOURCES`` (default
``sim,estate2,petshop``), ``BENCH_NOTES_LLM=none`` for template notes only,
``BENCH_NOTES_SEED``, ``BENCH_NOTES_BASELINE_PROMPT``), or ``python -m
benchmarks.bench_notes [--sources a,b] [--no-llm] [--seed N] [--baseline-prompt V]``.
Needs Debian's prometheus and, for the model, the ``local-llm`` extra.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import bench_rca
from benchmarks.common import percentile, print_table
from benchmarks.rca_case import RcaCase, RcaSource
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.errors import BackendError
from plugin_backend.explain import ExplainService, RootCauseReport
from plugin_backend.llm.mechanism import template_note
from plugin_backend.llm.port import LLM
from plugin_backend.llm.prompting import Prompt, load_prompt
from plugin_backend.llm.writer import NoteWriter, WrittenNote
from plugin_backend.rca.dependencies import DependencyMap, load_dependency_map
from testkit.promserver import start_backfilled

SEED = 5
# Generous: on the shared 2-core machine one note takes 30-60 s; a timeout would
# censor exactly the latency this measures (the service's own default is 20 s).
NOTE_TIMEOUT_S = 120.0
SOURCE_NAMES = ("sim", "estate2", "petshop")
_REASON = re.compile(r":\s*\S|\bbecause\b", re.IGNORECASE)
_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


# ----------------------------------------------------------------------- grading


@dataclass(frozen=True)
class Grade:
    """One note, graded by rule (see the module docstring); ``path_ok`` is ``None``
    where the map cannot judge."""

    root_first: bool
    inside: bool
    path_ok: bool | None
    check: bool
    outside: tuple[str, ...] = ()  # the names that broke ``inside``


def _mentions(text: str, names: Iterable[str]) -> list[tuple[int, str]]:
    """(position of first mention, name) for each of ``names`` the text mentions, in
    order. Where names overlap the longest wins (``x_AWS::Lambda::Function`` is not a
    mention of ``x_AWS::Lambda``), and a name inside a word (``node-b`` in ``node-b2``)
    does not count. Names that differ only in case (PetShop's map has both
    ``Servi-searc...`` and ``servi-searc...``) match the same words: the one written
    exactly as the text has it wins, else the first by name, never the set's order."""
    lowered = text.casefold()
    hits: list[tuple[int, int, str]] = []
    for name in {n for n in names if n}:
        pattern = rf"(?<![\w-]){re.escape(name.casefold())}(?![\w-])"
        hits += [(m.start(), m.end(), name) for m in re.finditer(pattern, lowered)]
    first: dict[str, int] = {}
    covered = 0

    def order(hit: tuple[int, int, str]) -> tuple[int, int, bool, str]:
        start, end, name = hit
        return start, start - end, text[start:end] != name, name

    for start, end, name in sorted(hits, key=order):
        if start < covered:
            continue  # inside a longer name already taken
        covered = end
        first.setdefault(name, start)
    return sorted((pos, name) for name, pos in first.items())


def evidence_names(report: Mapping[str, Any]) -> set[str]:
    """Every name the report's evidence holds: the symptom's and the causes' series,
    metrics, label values and entities, and the path's entities."""
    names: set[str] = set()
    items = [report.get("symptom") or {}, *(report.get("causes") or [])]
    for item in items:
        labels = item.get("labels") or {}
        names |= {str(v) for v in labels.values()}
        names |= {str(item.get(k)) for k in ("series", "metric", "entity") if item.get(k)}
    names |= {str(e) for e in report.get("path") or []}
    return names


def grade(
    text: str,
    report: Mapping[str, Any],
    *,
    root_entity: str,
    entities: Set[str],
    metrics: Set[str],
    dependencies: DependencyMap | None,
) -> Grade:
    """Grade the note ``text`` written for ``report``: ``entities`` and ``metrics`` are
    every one the estate has (the vocabulary a note could wrongly use)."""
    evidence = evidence_names(report)
    named = [n for _, n in _mentions(text, entities | {root_entity})]
    root_first = bool(named) and named[0] == root_entity
    outside = [n for _, n in _mentions(text, entities | metrics) if n not in evidence]
    symptom_entity = (report.get("symptom") or {}).get("entity")
    return Grade(
        root_first=root_first,
        inside=not outside,
        path_ok=_path_ok(named, symptom_entity, dependencies),
        check=_gives_check(text, evidence),
        outside=tuple(outside),
    )


def _path_ok(
    named: Sequence[str], symptom: str | None, dependencies: DependencyMap | None
) -> bool | None:
    if dependencies is None or symptom not in dependencies:
        return None
    known = [n for n in named if n in dependencies]
    if not known or known[-1] != symptom:
        return False  # no mechanism ending at the symptom
    pairs = [(a, b) for a, b in itertools.pairwise(known) if a != b]
    # one direction throughout: a failure flowing to what needs it (downstream), or
    # load flowing from callers to what they need (upstream)
    return all(b in dependencies.downstream(a) for a, b in pairs) or all(
        b in dependencies.upstream(a) for a, b in pairs
    )


def _gives_check(text: str, evidence: Set[str]) -> bool:
    for sentence in _SENTENCES.split(text):
        at = sentence.casefold().find("check")
        if at < 0:
            continue
        rest = sentence[at:]
        if _mentions(rest, evidence) and _REASON.search(rest):
            return True
    return False


# ---------------------------------------------------------------------- running


class RecordingWriter(NoteWriter):
    """The note writer, keeping what each note was written from."""

    def __init__(self, llm: LLM | None) -> None:
        super().__init__(llm, timeout_s=NOTE_TIMEOUT_S)
        self.drafts: list[dict[str, Any]] = []
        self.known: list[frozenset[str]] = []

    def write(self, report: dict[str, Any], known_names: Iterable[str] = ()) -> WrittenNote:
        self.drafts.append(report)
        self.known.append(frozenset(known_names))
        return super().write(report, known_names)


@dataclass(frozen=True)
class Outcome:
    case: RcaCase
    by_llm: bool
    used: Grade  # the note in the report
    template: Grade  # the template note of the same report
    top_entity: bool  # the ranker's top cause is of the root-cause entity
    latency_s: float  # the LLM's (0 without one)
    template_s: float
    reason: str
    tokens: tuple[int, int] | None = None  # the LLM's prompt and output tokens


def _query(case: RcaCase) -> str:
    name = case.symptom_series
    if name.split("{")[0].endswith("_total"):
        return f"rate({name}[{int(4 * case.step_s)}s])"
    return name


def _outcome(
    case: RcaCase,
    report: RootCauseReport,
    draft: dict[str, Any],
    deps: DependencyMap,
    metrics: Set[str],
    written: WrittenNote | None = None,
) -> Outcome:
    """Grade the note used (``written``, else the report's) and the template note of
    ``report`` (written from ``draft``)."""
    text = written.text if written is not None else report.summary
    llm = written.to_dict() if written is not None else report.llm
    started = time.perf_counter()
    template = template_note(draft)
    template_s = time.perf_counter() - started
    entities = set(deps.entities) | {str(c.entity) for c in report.causes if c.entity}

    def graded(text: str) -> Grade:
        return grade(
            text,
            draft,
            root_entity=case.root_cause_entity,
            entities=entities,
            metrics=metrics,
            dependencies=deps,
        )

    top = report.causes[0] if report.causes else None
    return Outcome(
        case=case,
        by_llm=not llm["fallback"],
        used=graded(text),
        template=graded(template),
        top_entity=top is not None
        and case.root_cause_entity
        in (top.entity, top.labels.get("service"), top.labels.get("node")),
        latency_s=float(llm["latency_s"]),
        template_s=template_s,
        reason=str(llm.get("reason") or ""),
        tokens=(llm["prompt_tokens"], llm["completion_tokens"])
        if llm.get("prompt_tokens") is not None and llm.get("completion_tokens") is not None
        else None,
    )


def run_source(
    source: RcaSource, llm: LLM | None, baseline: Prompt | None = None
) -> tuple[list[Outcome], list[Outcome]]:
    """Every case's outcome with the default prompt and, when ``baseline`` is given, with
    that prompt too, written right after from the same report (the same load)."""
    deps = load_dependency_map(source.dependencies)
    metrics = {s.labels.get("__name__", "") for s in source.series} - {""}
    writer = RecordingWriter(llm)
    other = NoteWriter(llm, timeout_s=NOTE_TIMEOUT_S, prompt=baseline) if llm and baseline else None
    out: list[Outcome] = []
    out_baseline: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-notes-{source.name}-") as tmp:
        server = start_backfilled(source.series, Path(tmp))
        client = PrometheusClient(base_url=server.url)
        try:
            service = ExplainService(client, dependencies=deps, writer=writer)
            for case in source.cases:
                try:
                    report = service.explain(_query(case), case.noticed_s)
                except BackendError as exc:
                    print(f"{source.name} {case.name}: explain failed: {exc.message}")
                    continue
                draft = writer.drafts[-1]
                out.append(_outcome(case, report, draft, deps, metrics))
                print(f"  {case.name}: {report.summary}", flush=True)
                if other is not None:
                    written = other.write(draft, writer.known[-1])
                    out_baseline.append(_outcome(case, report, draft, deps, metrics, written))
        finally:
            client.close()
            server.stop()
    return out, out_baseline


# ----------------------------------------------------------------------- tables


def _share(flags: Sequence[bool | None]) -> str:
    judged = [f for f in flags if f is not None]
    if not judged:
        return "n/a"
    return f"{sum(judged)}/{len(judged)}"


def grade_cells(grades: Sequence[Grade]) -> list[str]:
    """``k/n`` for each rule (``path ok`` over the notes the map can judge)."""
    return [
        str(len(grades)),
        _share([g.root_first for g in grades]),
        _share([g.inside for g in grades]),
        _share([g.path_ok for g in grades]),
        _share([g.check for g in grades]),
    ]


GRADE_HEADER = ["n", "root first", "inside evidence", "path ok", "first check"]
USE_HEADER = [
    "n",
    "LLM note used",
    "ranker top-1 entity",
    "LLM p50 s",
    "LLM p95 s",
    "template p50 ms",
    "prompt tokens p50",
    "output tokens p50",
]


def use_cells(outcomes: Sequence[Outcome]) -> list[str]:
    n = len(outcomes)
    llm = [o.latency_s for o in outcomes if o.latency_s > 0]
    used = sum(o.by_llm for o in outcomes)
    tokens = [o.tokens for o in outcomes if o.tokens is not None]
    return [
        str(n),
        f"{used}/{n} ({used / n:.0%})" if n else "0/0",
        f"{sum(o.top_entity for o in outcomes)}/{n}",
        f"{percentile(llm, 50):.1f}" if llm else "-",
        f"{percentile(llm, 95):.1f}" if llm else "-",
        f"{percentile([o.template_s for o in outcomes], 50) * 1000:.2f}" if n else "-",
        f"{percentile([t[0] for t in tokens], 50):.0f}" if tokens else "-",
        f"{percentile([t[1] for t in tokens], 50):.0f}" if tokens else "-",
    ]


def print_source(name: str, outcomes: Sequence[Outcome]) -> None:
    def yes(flag: bool | None) -> str:
        return "n/a" if flag is None else "yes" if flag else "no"

    rows = [
        [
            o.case.name,
            "llm" if o.by_llm else "template",
            yes(o.used.root_first),
            yes(o.used.inside),
            yes(o.used.path_ok),
            yes(o.used.check),
            yes(o.template.root_first),
            f"{o.latency_s:.1f}",
            o.reason[:48],
            ", ".join(o.used.outside) or "-",
        ]
        for o in outcomes
    ]
    print_table(
        f"Root-cause notes on {name}: the note used, graded by rule (with the names "
        "it uses from outside the evidence); the template's 'root first' beside it",
        [
            "case",
            "note by",
            "root first",
            "inside",
            "path ok",
            "check",
            "template root first",
            "LLM s",
            "fallback reason",
            "outside the evidence",
        ],
        rows,
    )


def print_summary(results: Mapping[str, Sequence[Outcome]]) -> None:
    rows: list[list[str]] = []
    for name, outcomes in results.items():
        rows.append([name, "used", *grade_cells([o.used for o in outcomes])])
        rows.append([name, "LLM only", *grade_cells([o.used for o in outcomes if o.by_llm])])
        rows.append([name, "template", *grade_cells([o.template for o in outcomes])])
    print_table(
        "Notes graded by rule, per source: the note used, the LLM's notes alone, and "
        "the template note of every incident",
        ["source", "notes", *GRADE_HEADER],
        rows,
    )
    print_table(
        "LLM notes used and latency, per source (timings on a loaded shared machine)",
        ["source", *USE_HEADER],
        [[name, *use_cells(outcomes)] for name, outcomes in results.items()],
    )


# -------------------------------------------------------------------------- main


def _sources(names: Sequence[str], seed: int) -> list[RcaSource]:
    found: list[RcaSource] = []
    for name in names:
        if name == "sim":
            found.append(bench_rca.sim_source(1, seed))
        elif name == "estate2":
            found.append(bench_rca.estate2_source(1, seed))
        elif name == "petshop":
            petshop = bench_rca.petshop_source("end")
            if petshop is not None:
                found.append(petshop)
        else:
            raise SystemExit(f"unknown source {name!r}; choose from {', '.join(SOURCE_NAMES)}")
    return found


def _load_llm() -> LLM | None:
    try:
        from plugin_backend.adapters.llm_local import LocalTransformersLLM
        from plugin_backend.adapters.llm_weights import ensure_local_model

        started = time.perf_counter()
        llm = LocalTransformersLLM(ensure_local_model())
    except BackendError as exc:
        print(f"\nlocal LLM unavailable ({exc.message}): template notes only")
        return None
    print(f"offline model {llm.model} loaded in {time.perf_counter() - started:.1f} s")
    return llm


def main(
    sources: Sequence[str] | None = None,
    *,
    use_llm: bool | None = None,
    seed: int | None = None,
    baseline: str | None = None,
) -> None:
    if sources is None:
        sources = os.environ.get("BENCH_NOTES_SOURCES", ",".join(SOURCE_NAMES)).split(",")
    if use_llm is None:
        use_llm = os.environ.get("BENCH_NOTES_LLM", "local") != "none"
    if seed is None:
        seed = int(os.environ.get("BENCH_NOTES_SEED", SEED))
    if baseline is None:
        baseline = os.environ.get("BENCH_NOTES_BASELINE_PROMPT") or None
    prompt = load_prompt(baseline) if baseline else None
    llm = _load_llm() if use_llm else None
    results: dict[str, list[Outcome]] = {}
    compared: dict[str, list[Outcome]] = {}
    for source in _sources(sources, seed):
        print(f"\n{source.name}: {len(source.cases)} incidents ({source.note})", flush=True)
        results[source.name], compared[source.name] = run_source(source, llm, prompt)
        print_source(source.name, results[source.name])
    print_summary(results)
    if prompt is not None and llm is not None:
        print_comparison(load_prompt().version, prompt.version, results, compared)


def print_comparison(
    default: str,
    baseline: str,
    results: Mapping[str, Sequence[Outcome]],
    compared: Mapping[str, Sequence[Outcome]],
) -> None:
    rows = []
    for name in results:
        for version, outcomes in ((default, results[name]), (baseline, compared[name])):
            grades = grade_cells([o.used for o in outcomes])
            rows.append([name, version, *grades[1:], *use_cells(outcomes)])
    print_table(
        f"The default prompt {default} against {baseline}, each case written by both in "
        "turn (the same load): the note used, graded, and the model's use and latency",
        ["source", "prompt", *GRADE_HEADER[1:], *USE_HEADER],
        rows,
    )


def _cli(argv: Sequence[str]) -> None:
    args = list(argv)
    sources = None
    if "--sources" in args:
        at = args.index("--sources")
        sources = args[at + 1].split(",")
        del args[at : at + 2]
    seed = None
    if "--seed" in args:
        at = args.index("--seed")
        seed = int(args[at + 1])
        del args[at : at + 2]
    baseline = None
    if "--baseline-prompt" in args:
        at = args.index("--baseline-prompt")
        baseline = args[at + 1]
        del args[at : at + 2]
    main(sources, use_llm=False if "--no-llm" in args else None, seed=seed, baseline=baseline)


if __name__ == "__main__":
    _cli(sys.argv[1:])
