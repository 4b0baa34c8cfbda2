"""The likely mechanism of an incident along the dependency path, and the template note.

The service, not the model, works out the mechanism: the path of entities from the
top cause to the symptom (``impact_path``: along the dependency map when one is
given, else the cause straight to the symptom), each hop shown by its best changed
series among the ranked causes (``hops``), and what to check first and why
(``first_check``). ``template_note`` phrases them deterministically; the LLM prompt
(``prompting``) shows the same hops for the model to phrase.

A report here is ``RootCauseReport.to_dict()``-shaped, with ``path`` (entity names
from the cause to the symptom) and ``path_from_map`` (``None``: no map; ``False``:
the map links them by no path) added by ``explain``. Every name
a note uses comes from the report: nothing outside the evidence.

Pure: plain data in, text out.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Hop",
    "effect_phrase",
    "first_check",
    "hops",
    "impact_path",
    "metric_of",
    "template_note",
]

MAX_PATH_HOPS = 6

# (keywords in the metric name, phrase when it went up, phrase when it went down);
# the first entry whose keyword occurs wins, so specific words come first. Phrases
# avoid words that name entities in many estates (cache, queue, db).
_EFFECTS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("build_info", "_event", "deployment_generation", "version"), "was deployed", "rolled back"),
    (("availability", "success"), "recovered", "availability dropped"),
    (("error", "5xx", "fail", "timeout"), "errors rose", "errors fell"),
    (("hit",), "hit rate rose", "hit rate fell"),
    (("miss",), "misses rose", "misses fell"),
    (("evict",), "evictions rose", "evictions fell"),
    (("pool", "connection", "conns"), "connections piled up", "connections dropped"),
    (("lock",), "locks piled up", "locks cleared"),
    (("queue", "depth", "pending", "backlog", "lag"), "work queued up", "its backlog drained"),
    (("gc",), "garbage collection rose", "garbage collection fell"),
    (("memory", "heap", "rss", "working_set"), "memory grew", "memory fell"),
    (("cpu", "load1", "load5", "throttl"), "CPU use rose", "CPU use fell"),
    (("disk", "io_time", "iops", "io_util"), "disk got busy", "disk load fell"),
    (
        ("latency", "duration", "seconds", "p99", "p95", "p50", "response_time"),
        "slowed down",
        "sped up",
    ),
    (
        ("request", "rps", "traffic", "calls", "qps", "throughput", "transactions", "queries"),
        "load rose",
        "traffic dropped",
    ),
)
_KIND_LABELS = ("code", "status", "status_code", "result", "outcome", "state")
_QUERY_LABEL = re.compile(r'([a-zA-Z_]\w*)\s*=~?\s*"([^"]*)"')
_QUERY_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")


@dataclass(frozen=True, slots=True)
class Hop:
    """One entity on the path (``entity``: its name, else the metric that shows it);
    ``series`` and ``change`` are its evidence, if any."""

    entity: str
    series: str | None = None
    metric: str | None = None
    effect: str | None = None  # "connections piled up"
    change: str | None = None  # "9 -> 20, 4 min before the symptom"
    lead_s: float | None = None

    @property
    def phrase(self) -> str:
        """``entity effect`` ("postgres connections piled up"), or just the entity."""
        if self.effect is None:
            return self.entity
        if self.effect.startswith(f"{self.entity} "):  # "m went up" for a nameless one
            return self.effect
        return f"{self.entity} {self.effect}"


def impact_path(start: str, goal: str, step: Callable[[str], Iterable[str]]) -> list[str] | None:
    """The shortest chain ``start, ..., goal`` following ``step``, at most
    ``MAX_PATH_HOPS`` hops (``None`` if there is none): the map's ``dependents`` (what
    needs an entity: the way a failure flows) or ``depends_on`` (the way load flows
    from callers)."""
    if start == goal:
        return [start]
    previous: dict[str, str] = {}
    queue: deque[tuple[str, int]] = deque([(start, 0)])
    seen = {start}
    while queue:
        node, depth = queue.popleft()
        if depth >= MAX_PATH_HOPS:
            continue
        for nxt in sorted(step(node)):
            if nxt in seen:
                continue
            seen.add(nxt)
            previous[nxt] = node
            if nxt == goal:
                path = [goal]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return path[::-1]
            queue.append((nxt, depth + 1))
    return None


def effect_phrase(metric: str, evidence: Mapping[str, Any] | None, kind: Iterable[str] = ()) -> str:
    """What a change of ``metric`` means, in a few words ("connections piled up");
    ``kind`` are words that say what the series counts (its ``code="5xx"`` or
    ``result="miss"`` label values), read before the metric name."""
    ev = evidence if isinstance(evidence, Mapping) else {}
    if ev.get("kind") == "change_event":
        up = ev.get("event") != "disappeared"
        if metric.endswith(("_info", "_event")):
            return "was deployed" if up else "was removed"
        return "appeared" if up else "disappeared"
    up = ev.get("direction") != "down"
    name = " ".join([*kind, metric]).lower()
    for words, rose, fell in _EFFECTS:
        if any(w in name for w in words):
            return rose if up else fell
    return f"{metric} went {'up' if up else 'down'}"


def _number(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return f"{value:.3g}"


def _lead_text(lead_s: object) -> str | None:
    if isinstance(lead_s, bool) or not isinstance(lead_s, int | float):
        return None
    if not math.isfinite(lead_s) or abs(lead_s) < 30:
        return "with the symptom" if isinstance(lead_s, int | float) else None
    minutes = max(1, round(abs(lead_s) / 60))
    return f"{minutes} min {'before' if lead_s > 0 else 'after'} the symptom"


def _change_text(item: Mapping[str, Any], with_lead: bool = True) -> str | None:
    ev = item.get("evidence")
    ev = ev if isinstance(ev, Mapping) else {}
    parts = []
    before, after = _number(ev.get("baseline")), _number(ev.get("incident_value"))
    if ev.get("kind") != "change_event" and before is not None and after is not None:
        parts.append(f"{before} -> {after}")
    lead = _lead_text(item.get("lead_s")) if with_lead else None
    if lead:
        parts.append(lead)
    return ", ".join(parts) or None


def _causes(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    causes = report.get("causes")
    return [c for c in causes if isinstance(c, Mapping)] if isinstance(causes, list) else []


def _symptom(report: Mapping[str, Any]) -> Mapping[str, Any]:
    symptom = report.get("symptom")
    return symptom if isinstance(symptom, Mapping) else {}


def metric_of(item: Mapping[str, Any]) -> str:
    """The metric name of a cause or symptom: its own, else the series' name, else the
    first metric its query selects (``rate(x_total[1m])`` has no ``__name__``)."""
    labels = item.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    metric = item.get("metric") or labels.get("__name__") or ""
    if not metric:
        metric = str(item.get("series", "")).split("{")[0]
    if not metric and isinstance(item.get("query"), str):
        found = _QUERY_METRIC.search(item["query"])
        metric = found.group(1) if found else ""
    return str(metric)


def _kind_words(item: Mapping[str, Any]) -> list[str]:
    """The values of the labels that say what a series counts; for a symptom given as
    a query (``rate(x{code="5xx"}[1m])``), those its selector matches."""
    labels = item.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    words = [str(labels[k]) for k in _KIND_LABELS if labels.get(k)]
    query = item.get("query")
    if isinstance(query, str):
        words += [m.group(2) for m in _QUERY_LABEL.finditer(query) if m.group(1) in _KIND_LABELS]
    return words


def _hop(entity: object, item: Mapping[str, Any] | None, with_lead: bool = True) -> Hop:
    if item is None:
        return Hop(str(entity))
    metric = metric_of(item)
    lead = item.get("lead_s")
    return Hop(
        entity=str(entity) if isinstance(entity, str) and entity else metric,
        series=str(item.get("series") or metric),
        metric=metric,
        effect=effect_phrase(metric, item.get("evidence"), _kind_words(item)),
        change=_change_text(item, with_lead),
        lead_s=float(lead) if isinstance(lead, int | float) and math.isfinite(lead) else None,
    )


def path_entities(report: Mapping[str, Any]) -> list[str]:
    """The report's path (cause to symptom), else the top cause's entity then the
    symptom's, without repeats."""
    path = report.get("path")
    if isinstance(path, list) and all(isinstance(e, str) and e for e in path) and path:
        return list(dict.fromkeys(path))
    causes = _causes(report)
    names = [causes[0].get("entity") if causes else None, _symptom(report).get("entity")]
    return list(dict.fromkeys(str(n) for n in names if isinstance(n, str) and n))


def hops(report: Mapping[str, Any]) -> list[Hop]:
    """The path's hops: the top cause first (its own series, whatever its entity),
    each middle entity by its best-ranked changed cause (if any), the symptom last."""
    causes = _causes(report)
    if not causes:
        return []
    symptom = _symptom(report)
    top = causes[0]
    out = [_hop(top.get("entity"), top)]
    middle = [
        e for e in path_entities(report) if e not in (top.get("entity"), symptom.get("entity"))
    ]
    for entity in middle:
        best = next((c for c in causes[1:] if c.get("entity") == entity), None)
        out.append(_hop(entity, best))
    if symptom.get("series") or symptom.get("metric"):
        out.append(_hop(symptom.get("entity"), symptom, with_lead=False))
    return out


def _hop_text(hop: Hop, first: bool, last: bool) -> str:
    if hop.effect is None:
        return hop.entity
    text = hop.phrase
    shown = hop.series if first else hop.metric
    details = [f"{shown} {hop.change}" if hop.change else shown] if shown else []
    if last:
        details.insert(0, "the symptom")
    return f"{text} ({', '.join(d for d in details if d)})" if details else text


def first_check(report: Mapping[str, Any]) -> tuple[str, str] | None:
    """What to check first (the top cause's series) and why, or ``None``."""
    causes = _causes(report)
    if not causes:
        return None
    top = causes[0]
    series = str(top.get("series") or metric_of(top))
    ev = top.get("evidence")
    ev = ev if isinstance(ev, Mapping) else {}
    lead = top.get("lead_s")
    later = _later_changes(top, causes[1:])
    if ev.get("kind") == "change_event" and metric_of(top).endswith(("_info", "_event")):
        why = "a change landed just before the trouble; compare it with the last good version"
    elif isinstance(lead, int | float) and math.isfinite(lead) and lead >= 30:
        why = f"it moved {max(1, round(lead / 60))} min before the symptom"
        if later:
            why += f" and {_changes(later)} followed it"
    else:
        why = "it is the strongest change around the symptom's onset"
        if later:
            why += f", and {_changes(later)} followed it"
    return series, why


def _changes(n: int) -> str:
    return "1 other change" if n == 1 else f"{n} other changes"


def _later_changes(top: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> int:
    onset = top.get("onset")
    if not isinstance(onset, int | float):
        return 0
    return sum(
        1
        for c in others
        if isinstance(c.get("onset"), int | float) and float(c["onset"]) > float(onset)
    )


def template_note(report: Mapping[str, Any]) -> str:
    """The deterministic note: the mechanism along the path, then what to check first
    and why (2-3 sentences), naming only what the report holds."""
    symptom = _symptom(report)
    symptom_name = str(symptom.get("series") or "the symptom")
    path = hops(report)
    check = first_check(report)
    if not path or check is None:
        return f"No candidate series changed before {symptom_name} moved; no likely cause found."
    from_map = report.get("path_from_map")
    how_text = (
        "along the dependency map"
        if from_map is True
        else "the dependency map links them by no path"
        if from_map is False
        else "no dependency map"
    )
    last = len(path) - 1
    chain = " -> ".join(_hop_text(h, i == 0, last > 0 and i == last) for i, h in enumerate(path))
    series, why = check
    sentences = [f"Likely mechanism ({how_text}): {chain}.", f"First check {series}: {why}."]
    return " ".join(sentences)
