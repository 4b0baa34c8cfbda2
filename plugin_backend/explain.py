"""The explain use case: gather candidate series around a symptom (and change events
such as deploys annotated in Grafana), rank the likely root causes, and report them
with their evidence and a note (the LLM writer's, or the deterministic template
whenever it fails).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from plugin_backend.errors import BackendError, InvalidQuery, UpstreamError
from plugin_backend.llm.mechanism import impact_path, metric_of, template_note
from plugin_backend.llm.writer import NoteWriter, WrittenNote
from plugin_backend.ports import ChangeEventSource, SeriesSource
from plugin_backend.promql import Matcher, vector_selectors
from plugin_backend.rca.counters import is_counter, rates_for_counters, to_rates
from plugin_backend.rca.dependencies import DependencyMap
from plugin_backend.rca.ensemble import ensemble_rank
from plugin_backend.rca.entities import entity_of
from plugin_backend.rca.evidence import DEFAULT_WINDOW_S, compute_evidence
from plugin_backend.rca.ranking import Cause
from plugin_backend.rca.window import LEAD_S, MAX_BASELINE_S, symptom_window
from plugin_backend.types import Labels, Series, TimeRange

__all__ = [
    "ExplainService",
    "RootCauseReport",
    "llm_hint",
    "render_report",
]

log = logging.getLogger(__name__)

IDENTIFYING_LABELS = ("service", "job", "instance", "node", "namespace", "pod")
MAX_CHANGE_EVENTS = 20
BASELINE_S = 3600.0  # before an explicit window
PROBE_S = MAX_BASELINE_S + 4 * LEAD_S  # the symptom's history searched for its onset
TOP_CAUSES = 10
MAX_PROBED_SELECTORS = 8  # an expression's selectors whose sampling interval is probed


@dataclass(frozen=True, slots=True)
class RootCauseReport:
    symptom: dict[str, Any]
    causes: list[Cause]
    summary: str
    candidates: int
    llm: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "symptom": self.symptom,
            "causes": [cause.to_dict() for cause in self.causes],
            "summary": self.summary,
            "candidates": self.candidates,
            "llm": self.llm,
        }


class ExplainService:
    def __init__(
        self,
        source: SeriesSource,
        *,
        dependencies: DependencyMap | None = None,
        budget: int = 300,
        identifying_labels: Sequence[str] = IDENTIFYING_LABELS,
        writer: NoteWriter | None = None,
        events: ChangeEventSource | None = None,
    ) -> None:
        self.source = source
        self.events = events
        self.writer = writer if writer is not None else NoteWriter(None)
        self.dependencies = dependencies
        self.budget = budget
        self.identifying_labels = tuple(identifying_labels)

    @property
    def writes_with_llm(self) -> bool:
        """Whether notes come from an LLM (slow: seconds), not only the template."""
        return self.writer.llm is not None

    def explain(
        self,
        query: str,
        at_s: float,
        window_s: float | None = None,
        *,
        write_note: bool = True,
    ) -> RootCauseReport:
        """Rank the causes of ``query``'s change at ``at_s``. Without ``window_s`` the
        window follows the symptom (its change-point onset, ``rca.window``); with it,
        causes are looked for in ``[at_s - window_s, at_s]`` after a 1 h baseline.
        ``write_note=False``: the note is the template, marked ``pending`` in the
        report's ``llm`` block, for ``write_note`` to upgrade later (a task queue runs
        the slow LLM apart from scoring)."""
        if window_s is None:
            probe = TimeRange(at_s - PROBE_S, at_s)
            found, probe_step_s = self._query_symptom(query, probe)
            probe_symptom = _most_changed(found, at_s=at_s, window_s=DEFAULT_WINDOW_S)
            window_s, baseline_s = symptom_window(probe_symptom, at_s=at_s, step_s=probe_step_s)
        else:
            baseline_s = BASELINE_S
        span = TimeRange(at_s - window_s - baseline_s, at_s)
        symptoms, step_s = self._query_symptom(query, span)
        symptom = _most_changed(symptoms, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
        candidates = self._candidates(symptom, span, step_s) + self._event_series(span, step_s)
        causes = ensemble_rank(
            symptom,
            candidates,
            at_s=at_s,
            window_s=window_s,
            baseline_s=baseline_s,
            dependencies=self.dependencies,
            identifying_labels=self.identifying_labels,
            step_s=step_s,
        )
        changed = [c for c in causes if c.evidence.changed][:TOP_CAUSES]
        evidence = compute_evidence(symptom, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
        symptom_info = {
            "query": query,
            "series": symptom.name,
            "labels": dict(symptom.labels),
            "at": at_s,
            "window_s": window_s,
            "evidence": evidence.to_dict(),
        }
        draft = self._note_draft(symptom_info, changed)
        known = self._known_names(candidates)
        if not write_note:
            # The note is written later (``write_note``, its own task): keep what it is
            # written from; the LLM's note replaces this ``llm`` entry.
            llm = {
                "provider": self.writer.provider,
                "model": self.writer.model,
                "pending": True,
                "fallback": True,
                "draft": draft,
                "known_names": sorted(known),
            }
            return RootCauseReport(symptom_info, changed, draft["summary"], len(candidates), llm)
        note = self.writer.write(draft, known_names=known)
        return RootCauseReport(symptom_info, changed, note.text, len(candidates), note.to_dict())

    def write_note(self, report: Mapping[str, Any]) -> WrittenNote:
        """The note of a report made with ``write_note=False`` (its ``to_dict()``): the
        LLM's, or the template whenever it fails, as ``explain`` would have written."""
        pending = report.get("llm") or {}
        draft = pending.get("draft")
        if not isinstance(draft, dict):  # stored before drafts were kept
            draft = {key: report.get(key) for key in ("symptom", "causes", "summary")}
        return self.writer.write(draft, known_names=pending.get("known_names") or ())

    def _query_symptom(self, query: str, span: TimeRange) -> tuple[list[Series], float]:
        """The symptom over ``span`` and the step it was read at: the span's step, or
        the data's own sampling interval where that is coarser (5 min CloudWatch
        exports): a finer step only repeats each sample, which shifts onsets and
        inflates the evidence."""
        step_s = _step_for(span)
        found = self.source.query_range(query, span, step_s)
        if not found:
            raise InvalidQuery(f"the symptom query {query!r} returned no data before {span.end_s}")
        sampled_s = self._sampling_interval(query, span, step_s)
        if sampled_s > step_s:
            coarser = self.source.query_range(query, span, sampled_s)
            if coarser:
                return coarser, sampled_s
        return found, step_s

    def _sampling_interval(self, query: str, span: TimeRange, step_s: float) -> float:
        """How far apart the samples under ``query`` are, where that is well over
        ``step_s``: the coarsest of its selectors' intervals (``_selector_interval``).
        An expression (``rate(x[5m])``, ``sum by (...) (x)``) has a new timestamp
        every step, so its own ``timestamp()`` cannot tell; the raw samples of the
        selectors it reads can. A query the lexer cannot follow, or one without
        selectors, is probed as a whole."""
        try:
            probes = vector_selectors(query)[:MAX_PROBED_SELECTORS] or [query]
        except InvalidQuery as exc:
            log.debug("sampling probe of %r as a whole: %s", query, exc.message)
            probes = [query]
        return max(self._selector_interval(probe, span, step_s) for probe in probes)

    def _selector_interval(self, selector: str, span: TimeRange, step_s: float) -> float:
        """Read at ``step_s``, the selector's sample timestamps (PromQL's
        ``timestamp()``) repeat, 1.5 steps a sample or more (a few repeated points do
        not matter), and then every sample is seen: the median gap between them.
        ``step_s`` otherwise, or where the source cannot tell."""
        try:
            stamps = self.source.query_range(f"timestamp({selector})", span, step_s)
        except BackendError:
            return step_s
        read = [s.values[np.isfinite(s.values)] for s in stamps]
        distinct = [np.unique(v) for v in read]
        if not read or sum(v.size for v in read) < 1.5 * sum(d.size for d in distinct):
            return step_s
        gaps = np.concatenate([np.diff(d) for d in distinct])
        return max(step_s, float(np.median(gaps))) if gaps.size else step_s

    def _note_draft(self, symptom: dict[str, Any], causes: Sequence[Cause]) -> dict[str, Any]:
        """What the note is written from: the symptom (with its entity), the causes and
        the path from the top cause's entity to the symptom's (along the map, if any)."""
        entity = entity_of(symptom["labels"], self.dependencies, self.identifying_labels)
        draft: dict[str, Any] = {
            "symptom": {**symptom, "entity": entity, "metric": metric_of(symptom)},
            "causes": [cause.to_dict() for cause in causes],
        }
        top = causes[0].entity if causes else None
        path = None
        deps = self.dependencies
        if deps is not None and top is not None and entity is not None:
            # a failure flows to what needs it; load flows from callers to what they need
            path = impact_path(top, entity, deps.dependents) or impact_path(
                top, entity, deps.depends_on
            )
        draft["path_from_map"] = None if deps is None else path is not None
        draft["path"] = path or [e for e in dict.fromkeys((top, entity)) if e]
        draft["summary"] = template_note(draft)
        return draft

    def _known_names(self, candidates: Sequence[Series]) -> set[str]:
        """Every entity and metric the service knows of (the map's, the candidates'):
        a note may name one only when the evidence shows it. A metric whose name is a
        plain word (Prometheus' own ``up``) is left out: "connections piled up" names
        no metric."""
        names = {s.metric for s in candidates if not s.metric.isalpha()}
        names |= {e for s in candidates if (e := entity_of(s.labels, self.dependencies))}
        if self.dependencies is not None:
            names |= self.dependencies.entities
        return names

    def _candidates(self, symptom: Series, span: TimeRange, step_s: float) -> list[Series]:
        """Every series when the estate fits the budget; else those sharing an identifying
        label with the symptom or belonging to an entity the dependency map relates."""
        everything = self.source.series(['{__name__=~".+"}'], span)
        chosen = everything if len(everything) <= self.budget else self._related(symptom, span)
        wanted = {_key(labels) for labels in chosen[: self.budget]}
        wanted.discard(_key(symptom.labels))
        families = sorted({labels.get("__name__", "") for labels in chosen} - {""})
        fetched: list[Series] = []
        for family in families:
            selector = "{" + str(Matcher("__name__", "=", family)) + "}"
            fetched += [
                s
                for s in self.source.query_range(selector, span, step_s)
                if _key(s.labels) in wanted
            ]
        # Counters by name (``_total``, ...) and, where the source has metadata, by the
        # type their targets declare (a counter named without the convention).
        typed = self._declared_counters()
        fetched = [to_rates(s) if s.metric in typed and not is_counter(s) else s for s in fetched]
        return rates_for_counters(fetched)

    def _declared_counters(self) -> set[str]:
        metric_types = getattr(self.source, "metric_types", None)
        if metric_types is None:
            return set()
        try:
            types: dict[str, str] = metric_types()
        except UpstreamError as exc:  # metadata is a bonus: go on by name
            log.warning("metric metadata unavailable: %s", exc.message)
            return set()
        return {metric for metric, kind in types.items() if kind == "counter"}

    def _event_series(self, span: TimeRange, step_s: float) -> list[Series]:
        """Change events (deploy annotations) as series that appear at their time, so
        the ranking weighs them like a new ``*_build_info`` version."""
        if self.events is None:
            return []
        try:
            events = self.events.change_events(span)
        except UpstreamError as exc:  # root cause goes on without them
            log.warning("change events unavailable: %s", exc.message)
            return []
        grid = np.arange(span.start_s, span.end_s + step_s / 2, step_s)
        found = []
        for n, event in enumerate(events[:MAX_CHANGE_EVENTS]):
            labels = {
                "__name__": f"{_name_part(event.kind)}_event",
                **{_name_part(k): v[:100] for k, v in event.labels.items()},
                "text": _one_line(event.text)[:80],
                "event": str(n),
            }
            values = np.where(grid >= event.time_s, 1.0, np.nan)
            if np.isfinite(values).any():
                found.append(Series(labels, grid, values))
        return found

    def _related(self, symptom: Series, span: TimeRange) -> list[Labels]:
        values: set[tuple[str, str]] = {
            (name, symptom.labels[name])
            for name in self.identifying_labels
            if name in symptom.labels
        }
        if self.dependencies is not None:
            entity = self.dependencies.entity_of(symptom.labels)
            if entity is not None:
                related = {entity, *self.dependencies.upstream(entity)}
                values |= {(label, e) for e in related for label in ("service", "node")}
        found: dict[tuple[tuple[str, str], ...], Labels] = {}
        for name, value in sorted(values):
            selector = "{" + str(Matcher(name, "=", value)) + "}"
            for labels in self.source.series([selector], span):
                found.setdefault(_key(labels), labels)
        return list(found.values())


def _name_part(text: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", text)[:40] or "change"
    return cleaned if not cleaned[0].isdigit() else f"_{cleaned}"


def _one_line(text: str) -> str:
    return " ".join(re.sub(r"<[^>]*>", " ", text).split())


def _key(labels: Labels) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _step_for(span: TimeRange) -> float:
    return max(15.0, round(span.duration_s / 600))


def _most_changed(
    series: list[Series], *, at_s: float, window_s: float, baseline_s: float = BASELINE_S
) -> Series:
    def magnitude(s: Series) -> float:
        ev = compute_evidence(s, at_s=at_s, window_s=window_s, baseline_s=baseline_s)
        return ev.magnitude if np.isfinite(ev.magnitude) else -1.0

    return max(series, key=magnitude)


def llm_hint(llm: dict[str, Any]) -> str | None:
    """One line for the user when the note is the template because no LLM answered
    (``None`` when the model wrote it, or no LLM was wanted: provider ``none``)."""
    reason = llm.get("reason")
    if not llm.get("fallback") or not isinstance(reason, str) or "cannot reach" not in reason:
        return None
    if llm.get("provider") == "local":
        how = "start the packaged model with `plugin-backend llm-serve` and run this again"
    else:
        how = "check PLUGIN_BACKEND_LLM_URL (or run `plugin-backend llm-serve` and use it)"
    why = reason.removeprefix("LLM failed: ")
    return f"the note is the template: no LLM answered ({why}); {how}."


def render_report(report: dict[str, Any]) -> str:
    """A readable plain-text report of ``RootCauseReport.to_dict()``."""
    symptom = report["symptom"]
    lines = [
        f"Symptom: {symptom['series']}",
        f"  query {symptom['query']!r}, window {symptom['window_s']:.0f} s",
        "",
        report["summary"],
        "",
        f"{'#':>2}  {'score':>5}  {'lead':>7}  cause",
    ]
    for rank, cause in enumerate(report["causes"], start=1):
        lead = cause.get("lead_s")
        lead_text = f"{lead / 60:+.1f}m" if isinstance(lead, int | float) else "n/a"
        lines.append(f"{rank:>2}  {cause['score']:>5.2f}  {lead_text:>7}  {cause['series']}")
    lines.append("")
    lines.append(f"{report['candidates']} candidate series examined.")
    return "\n".join(lines)
