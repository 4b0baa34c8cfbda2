"""Prompts for the note writer: versioned data files, filled with bounded, sanitised
evidence.

The prompt never carries raw ranges: one line for the symptom and one per cause
(at most ``Prompt.max_causes``): series, direction, baseline -> incident value,
onset relative to the symptom's, score. Label values come from whoever writes
metrics, so every one is sanitised (``sanitize_label_value``): no control
characters, newlines, braces, quotes or backticks, no instruction-like phrases,
at most 80 characters. ``allowed_names`` lists exactly the names the prompt shows
(in their sanitised form): the only names a note may use.
"""

from __future__ import annotations

import functools
import math
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml

from plugin_backend.errors import ConfigError
from plugin_backend.llm.mechanism import hops
from plugin_backend.llm.port import Message

__all__ = [
    "ENTITY_LABELS",
    "Prompt",
    "allowed_names",
    "build_messages",
    "cause_names",
    "cause_terms",
    "display_series",
    "estimate_tokens",
    "load_prompt",
    "numbered_causes",
    "path_line",
    "sanitize_label_value",
    "symptom_terms",
]

ENTITY_LABELS = ("service", "job", "instance", "node", "namespace", "pod")
# The one label a compact series name keeps: the most specific entity it names.
COMPACT_LABELS = ("service", "node", "pod", "instance", "namespace", "job")
MAX_VALUE_CHARS = 80
MAX_SERIES_CHARS = 120
_VERSION = re.compile(r"[a-z0-9_]{1,40}")
_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_TAGS = re.compile(r"<\|[^<>]{0,40}\|>|<[^<>]{0,40}>|\[/?INST\]", re.IGNORECASE)
_INJECTION = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}?"
        r"\b(?:instructions?|prompts?|rules?|above|previous|prior|system|context)\b"
        r"(?:\s+(?:instructions?|prompts?|rules?|messages?|context))?",
        r"\b(?:system|assistant|user|developer)\s*(?:prompt\s*)?:",
        r"\byou\s+are\s+now\b|\bact\s+as\b|\bnew\s+instructions?\b",
        r"\b(?:say|state|claim|answer|respond|reply|output)\b.{0,20}?"
        r"\b(?:cause|culprit|answer|that|with)\b",
    )
]
_REPLACE = str.maketrans({"{": "(", "}": ")", '"': "'", "`": "'", "\\": "/", "<": " ", ">": " "})
_FILTERED = "[filtered]"


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt version: ``system`` is final, ``user_template`` has ``${symptom}``
    and ``${causes}``."""

    version: str
    system: str
    user_template: str
    output_schema: str
    max_causes: int = 5
    max_tokens: int = 160
    # ``full``: series as metric{every label}; ``compact``: metric{its entity label}, so
    # a small model that copies names into its note does not run out of tokens.
    series_style: Literal["full", "compact"] = "full"
    # ``json``: an object per ``output_schema``; ``text``: one plain sentence phrasing
    # the mechanism (``${path}``) for the service's top cause (fewer tokens, no choice).
    answer: Literal["json", "text"] = "json"
    # Worked examples, user and assistant turns alternating, shown before the evidence:
    # a small model follows one example better than any instruction. Their names are
    # not evidence, so a note that copies them is rejected.
    example: tuple[str, ...] = ()
    example_names: frozenset[str] = frozenset()  # never evidence: a note naming one fails


@functools.lru_cache(maxsize=8)
def load_prompt(version: str = "note_v4") -> Prompt:
    """The prompt ``plugin_backend/llm/prompts/<version>.yaml`` (package data)."""
    if not _VERSION.fullmatch(version):
        raise ConfigError(f"invalid prompt version {version!r} (expected e.g. 'note_v1')")
    resource = resources.files("plugin_backend.llm").joinpath("prompts", f"{version}.yaml")
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read prompt {version!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"prompt {version!r} is not a mapping")
    fields = ("system", "user_template", "output_schema")
    missing = [k for k in fields if not isinstance(data.get(k), str) or not data[k].strip()]
    if missing:
        raise ConfigError(f"prompt {version!r} lacks {', '.join(missing)}")
    template = data["user_template"]
    answer = data.get("answer", "json")
    if answer not in ("json", "text"):
        raise ConfigError(f"prompt {version!r}: answer must be json or text")
    # a JSON answer names its cause from the lines; a sentence phrases the path
    needed = ("${symptom}", "${causes}") if answer == "json" else ("${path}",)
    for placeholder in needed:
        if placeholder not in template:
            raise ConfigError(f"prompt {version!r}: user_template lacks {placeholder}")
    example = data.get("example", [])
    if not (
        isinstance(example, list)
        and len(example) % 2 == 0
        and all(isinstance(turn, str) and turn.strip() for turn in example)
    ):
        raise ConfigError(f"prompt {version!r}: example must be user/answer pairs of text")
    example_names = data.get("example_names", [])
    if not (isinstance(example_names, list) and all(isinstance(n, str) for n in example_names)):
        raise ConfigError(f"prompt {version!r}: example_names must be a list of names")
    schema = " ".join(data["output_schema"].split())
    system = string.Template(data["system"]).safe_substitute(schema=schema)
    max_causes = data.get("max_causes", 5)
    max_tokens = data.get("max_tokens", 160)
    if not (isinstance(max_causes, int) and 1 <= max_causes <= 10):
        raise ConfigError(f"prompt {version!r}: max_causes must be 1..10")
    if not (isinstance(max_tokens, int) and 16 <= max_tokens <= 2048):
        raise ConfigError(f"prompt {version!r}: max_tokens must be 16..2048")
    style = data.get("series_style", "full")
    if style not in ("full", "compact"):
        raise ConfigError(f"prompt {version!r}: series_style must be full or compact")
    return Prompt(
        version=str(data.get("version", version)),
        system=system.strip(),
        user_template=template,
        output_schema=schema,
        max_causes=max_causes,
        max_tokens=max_tokens,
        series_style=style,
        answer=answer,
        example=tuple(" ".join(turn.split()) for turn in example),
        example_names=frozenset(example_names),
    )


def sanitize_label_value(value: object, max_len: int = MAX_VALUE_CHARS) -> str:
    """``value`` made safe to show inside a prompt, between double quotes.

    Control and format characters (newlines, zero-width, bidi overrides) become
    spaces; tag-like text (``<script>``, ``<|im_start|>``) goes; braces become
    parentheses and quotes, backticks and backslashes harmless look-alikes, so the
    value can break neither the series notation nor a JSON answer; instruction-like
    phrases become ``[filtered]``; whitespace collapses; at most ``max_len``
    characters (cut ones end in ``...``).
    """
    text = unicodedata.normalize("NFKC", str(value))
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = _TAGS.sub(" ", text)
    text = text.translate(_REPLACE)
    text = " ".join(text.split())
    for pattern in _INJECTION:
        text = pattern.sub(_FILTERED, text)
    text = " ".join(text.split())
    if len(text) > max_len:
        text = text[: max(max_len - 3, 1)].rstrip() + "..."
    return text


def _metric_name(value: object) -> str:
    return _METRIC_CHARS.sub("_", str(value))[:MAX_VALUE_CHARS]


def display_series(metric: str, labels: Mapping[str, object]) -> str:
    """``metric{a="x", b="y"}`` with sanitised values, labels sorted, cut to about
    ``MAX_SERIES_CHARS`` by leaving trailing labels out (it still selects the series)."""
    name = _metric_name(metric)
    parts: list[str] = []
    size = len(name) + 2
    for key in sorted(k for k in labels if k != "__name__"):
        part = f'{_LABEL_CHARS.sub("_", str(key))[:40]}="{sanitize_label_value(labels[key])}"'
        if parts and size + len(part) + 2 > MAX_SERIES_CHARS:
            break
        parts.append(part)
        size += len(part) + 2
    if not parts:
        return name or "{}"
    return f"{name}{{{', '.join(parts)}}}"


@dataclass(frozen=True, slots=True)
class _Shown:
    """One series as the prompt shows it, and the names it brings into the evidence."""

    series: str
    names: frozenset[str]
    entity: str | None


def _shown(item: Mapping[str, Any], style: str = "full") -> _Shown:
    labels = item.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    metric = item.get("metric") or labels.get("__name__") or ""
    if style == "compact" and metric:
        key = next((k for k in COMPACT_LABELS if labels.get(k)), None)
        series = display_series(str(metric), {key: labels[key]} if key else {})
    elif labels or metric:
        series = display_series(str(metric), labels)
    else:
        series = sanitize_label_value(item.get("series", "?"), MAX_SERIES_CHARS)
    names = {series}
    if metric:
        names.add(_metric_name(metric))
    for key in ENTITY_LABELS:
        if labels.get(key):
            names.add(sanitize_label_value(labels[key]))
    entity = item.get("entity")
    shown_entity = sanitize_label_value(entity) if entity else None
    if shown_entity:
        names.add(shown_entity)
    names.discard("")
    return _Shown(series, frozenset(names), shown_entity)


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:.4g}" if math.isfinite(value) else "?"


def _change(evidence: object) -> str:
    if not isinstance(evidence, Mapping):
        return "changed"
    if evidence.get("kind") == "change_event":
        return "disappeared" if evidence.get("event") == "disappeared" else "appeared"
    direction = "down" if evidence.get("direction") == "down" else "up"
    baseline = _number(evidence.get("baseline"))
    incident = _number(evidence.get("incident_value"))
    return f"{direction} {baseline} -> {incident}"


def _onset(lead_s: object) -> str:
    if isinstance(lead_s, bool) or not isinstance(lead_s, int | float):
        return "onset unknown"
    if not math.isfinite(lead_s):
        return "onset unknown"
    if abs(lead_s) < 30:
        return "with the symptom"
    minutes = max(1, round(abs(lead_s) / 60))
    return f"{minutes} min {'before' if lead_s > 0 else 'after'} the symptom"


def _causes(report: Mapping[str, Any], limit: int) -> list[Mapping[str, Any]]:
    causes = report.get("causes")
    if not isinstance(causes, list):
        return []
    return [c for c in causes if isinstance(c, Mapping)][:limit]


def _symptom(report: Mapping[str, Any]) -> Mapping[str, Any]:
    symptom = report.get("symptom")
    return symptom if isinstance(symptom, Mapping) else {}


def allowed_names(report: Mapping[str, Any], prompt: Prompt) -> set[str]:
    """Every name the prompt for ``report`` shows: series (as shown), metric names,
    entities and identifying label values of the symptom and the shown causes."""
    names: set[str] = set(_names(_symptom(report), prompt))
    for cause in _causes(report, prompt.max_causes):
        names |= _names(cause, prompt)
    for hop in hops(report):  # the path's entities and the series that show them
        names.add(sanitize_label_value(hop.entity))
        if hop.metric:
            names.add(_metric_name(hop.metric))
    names.discard("")
    return names


def numbered_causes(report: Mapping[str, Any], prompt: Prompt) -> list[str]:
    """The shown causes' series (in full), in the order of their numbered lines."""
    return [_shown(c).series for c in _causes(report, prompt.max_causes)]


def cause_names(report: Mapping[str, Any], prompt: Prompt) -> set[str]:
    """The names of the shown causes only (what a note's ``cause`` may be)."""
    names: set[str] = set()
    for cause in _causes(report, prompt.max_causes):
        names |= _names(cause, prompt)
    return names


def symptom_terms(report: Mapping[str, Any]) -> set[str]:
    """How a note reaches the symptom: its entity, unless it is the top cause's own
    (then naming the cause is enough); empty when the symptom has no entity."""
    entity = _symptom(report).get("entity")
    causes = _causes(report, 1)
    if not entity or (causes and causes[0].get("entity") == entity):
        return set()
    return {sanitize_label_value(entity)}


def cause_terms(report: Mapping[str, Any], prompt: Prompt) -> set[str]:
    """How a note may name the top cause: its series (as shown and in full), its
    metric and its entity."""
    causes = _causes(report, 1)
    if not causes:
        return set()
    shown, compact = _shown(causes[0]), _shown(causes[0], prompt.series_style)
    terms = {shown.series, compact.series}
    metric = causes[0].get("metric")
    if metric:
        terms.add(_metric_name(metric))
    if shown.entity:
        terms.add(shown.entity)
    terms.discard("")
    return terms


def _names(item: Mapping[str, Any], prompt: Prompt) -> frozenset[str]:
    """The names ``item`` brings into the evidence: as shown, and in full."""
    return _shown(item).names | _shown(item, prompt.series_style).names


def path_line(report: Mapping[str, Any]) -> str:
    """The mechanism path, one hop per entity: ``postgres connections piled up ->
    checkout slowed down -> frontend slowed down (the symptom)``."""
    found = hops(report)
    parts = []
    for i, hop in enumerate(found):
        text = sanitize_label_value(hop.phrase)
        if len(found) > 1 and i == len(found) - 1:
            text += " (the symptom)"
        parts.append(text)
    return " -> ".join(parts) if parts else "(none)"


def _cause_line(rank: int, cause: Mapping[str, Any], style: str, plain: bool = False) -> str:
    shown = _shown(cause, style)
    if plain:  # one unnumbered cause, no score: what a one-sentence answer needs
        return f"{shown.series} {_change(cause.get('evidence'))}, {_onset(cause.get('lead_s'))}"
    entity = f", entity {shown.entity}" if shown.entity else ""
    return (
        f"{rank}. {shown.series} {_change(cause.get('evidence'))}, "
        f"{_onset(cause.get('lead_s'))}, score {_number(cause.get('score'))}{entity}"
    )


def build_messages(report: Mapping[str, Any], prompt: Prompt) -> list[Message]:
    """The system and user messages for ``report`` (``RootCauseReport.to_dict()``)."""
    symptom = _symptom(report)
    style = prompt.series_style
    symptom_line = f"{_shown(symptom, style).series} {_change(symptom.get('evidence'))}"
    causes = _causes(report, prompt.max_causes)
    plain = prompt.answer == "text"
    lines = [_cause_line(i, c, style, plain) for i, c in enumerate(causes, 1)]
    user = string.Template(prompt.user_template).safe_substitute(
        symptom=symptom_line,
        causes="\n".join(lines) if lines else "(none)",
        path=path_line(report),
    )
    shots = [
        Message(role="user" if i % 2 == 0 else "assistant", content=turn)
        for i, turn in enumerate(prompt.example)
    ]
    return [
        Message(role="system", content=prompt.system),
        *shots,
        Message(role="user", content=user.strip()),
    ]


def estimate_tokens(messages: Iterable[Message]) -> int:
    """A rough token count (about 4 characters a token), for logs and budgets."""
    return sum(math.ceil(len(m["content"]) / 4) for m in messages)
