"""Strict parsing of the model's note: JSON against a schema, and every name checked
against the evidence.

A note passes only when its ``cause`` (one of the shown causes, when
``cause_names`` is given), every ``chain`` entry and ``first_check`` are names
from the evidence, and its text names nothing else: every ``name{...}`` mention
must select a series of the evidence, every identifier-like token (``snake_case``
or ``ns:metric``) and every double-quoted or backticked span must be an evidence
name, and no ``known_names`` outside the evidence may appear. Anything else raises
``NoteRejected`` with the precise reason; the writer then falls back to the
template note.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from plugin_backend.errors import LLMError

__all__ = [
    "MAX_NOTE_WORDS",
    "MAX_SENTENCES",
    "Note",
    "NoteRejected",
    "parse_note",
    "parse_text_note",
]

MAX_NOTE_WORDS = 60
MAX_SENTENCES = 3
MAX_ANSWER_CHARS = 20_000
_SERIES = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^{}]*)\}")
_PAIR = re.compile(r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*(?:"([^"]*)"|'([^']*)')\s*(?:,|$)""")
_IDENT = re.compile(r"(?<![\w:.\-/])[a-zA-Z_:][a-zA-Z0-9_:]*")
_QUOTED = re.compile(r'"([^"\n]{1,200})"|`([^`\n]{1,200})`')
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

_Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class NoteRejected(LLMError):
    """The model's answer is not a valid note for this evidence."""

    code = "llm_note_rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(f"LLM note rejected: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Note:
    cause: str
    chain: tuple[str, ...]
    note: str
    first_check: str


class _NoteModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    # v1 names the cause; v2 gives the number of its evidence line (fewer tokens).
    cause: _Name | Annotated[int, Field(ge=1, le=10)]
    chain: list[_Name] = Field(default_factory=list, max_length=6)
    note: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=600)]
    first_check: _Name | None = None


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# Small models often leave the quotes of a series name unescaped inside "note". For the
# two-field v2 answer the value is still unambiguous: from the first quote after
# "note": to the last quote before the closing brace. Its content is checked as usual.
_V2_UNESCAPED = re.compile(
    r'^\s*\{\s*"cause"\s*:\s*(\d+)\s*,\s*"note"\s*:\s*"(.*)"\s*\}\s*$', re.DOTALL
)


def _first_json_object(text: str) -> dict[str, Any]:
    if len(text) > MAX_ANSWER_CHARS:
        raise NoteRejected(f"answer too long ({len(text)} characters)")
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    repaired = _V2_UNESCAPED.search(text)
    if repaired is not None:  # {"cause": 1, "note": "...unescaped "quotes"..."}
        return {"cause": int(repaired.group(1)), "note": repaired.group(2)}
    raise NoteRejected("no JSON object in the answer")


def _pairs(body: str) -> frozenset[tuple[str, str]] | None:
    """The label pairs of a selector body, or ``None`` when it is not one."""
    pairs: set[tuple[str, str]] = set()
    pos = 0
    body = body.strip()
    while pos < len(body):
        match = _PAIR.match(body, pos)
        if match is None or match.end() == pos:
            return None
        value = match.group(2) if match.group(2) is not None else match.group(3)
        pairs.add((match.group(1), " ".join(value.split())))
        pos = match.end()
    return frozenset(pairs)


class _Evidence:
    """The allowed names, indexed for matching."""

    def __init__(self, names: Iterable[str]) -> None:
        self.plain: set[str] = set()
        self.series: dict[str, list[frozenset[tuple[str, str]]]] = {}
        self.tokens: set[str] = set()
        #: Names and label values as spelled: two entities may differ only in case.
        self.exact: set[str] = set()
        for raw in names:
            name = " ".join(raw.split())
            if not name:
                continue
            self.plain.add(name.casefold())
            self.exact.add(name)
            match = _SERIES.fullmatch(name)
            pairs = _pairs(match.group(2)) if match else None
            if match is not None and pairs is not None:
                self.series.setdefault(match.group(1) or "", []).append(pairs)
                self.tokens.add((match.group(1) or "").casefold())
                self.exact.add(match.group(1) or "")
                for key, value in pairs:
                    self.tokens |= {key.casefold(), value.casefold()}
                    self.exact.add(value)

    def allows(self, raw: str) -> bool:
        name = " ".join(raw.split())
        if name.casefold() in self.plain:
            return True
        match = _SERIES.fullmatch(name)
        if match is None:
            return False
        pairs = _pairs(match.group(2))
        if pairs is None:
            return False
        metric = match.group(1)
        pools = [self.series.get(metric, [])] if metric else list(self.series.values())
        return any(pairs <= known for pool in pools for known in pool)

    def allows_token(self, token: str) -> bool:
        return token.casefold() in self.plain or token.casefold() in self.tokens


def _check_text(note: str, evidence: _Evidence, known_names: Set[str]) -> None:
    for match in _SERIES.finditer(note):
        if not evidence.allows(match.group(0)):
            raise NoteRejected(f"note names a series not in the evidence: {_short(match[0])}")
    prose = _SERIES.sub(" ", note)
    for match in _QUOTED.finditer(prose):
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        if not evidence.allows(quoted):
            raise NoteRejected(f"note quotes a name not in the evidence: {_short(quoted)}")
    for match in _IDENT.finditer(prose):
        token = match.group(0).rstrip(":")
        if ("_" in token or ":" in token) and not evidence.allows_token(token):
            raise NoteRejected(f"note names {_short(token)}, which is not in the evidence")
    _check_known_names(prose, evidence, known_names)
    words = len(note.split())
    if words > MAX_NOTE_WORDS:
        raise NoteRejected(f"note has {words} words, at most {MAX_NOTE_WORDS} allowed")
    sentences = [s for s in _SENTENCE_END.split(prose.strip()) if s.strip()]
    if len(sentences) > MAX_SENTENCES:
        raise NoteRejected(f"note has {len(sentences)} sentences, at most {MAX_SENTENCES} allowed")


def _check_known_names(prose: str, evidence: _Evidence, known_names: Set[str]) -> None:
    """Reject a mention of a known entity (the dependency map's) that the evidence lacks."""
    lowered = prose.casefold()
    for known in sorted(known_names):
        if not known.strip():
            continue
        if evidence.allows(known):
            # Allowed only through its case: another entity (PetShop's map has
            # ``Servi-searc…`` beside ``servi-searc…``), named when spelled as it is.
            if known not in evidence.exact and re.search(
                rf"(?<![\w-]){re.escape(known)}(?![\w-])", prose
            ):
                raise NoteRejected(
                    f"note names {_short(known)}, which is not in the evidence "
                    "(only a name differing from it in case is)"
                )
            continue
        if re.search(rf"(?<![\w-]){re.escape(known.casefold())}(?![\w-])", lowered):
            raise NoteRejected(f"note names {_short(known)}, which is not in the evidence")


def parse_note(
    text: str,
    allowed_names: Set[str],
    *,
    cause_names: Set[str] | None = None,
    known_names: Set[str] = frozenset(),
    numbered: Sequence[str] = (),
) -> Note:
    """The note in the model's answer ``text``; raise ``NoteRejected`` unless it is
    valid and names only ``allowed_names`` (see the module docstring).

    ``cause_names`` (the shown causes) narrows what ``cause`` may be;
    ``known_names`` are names the service knows (entities of the dependency map)
    that the note must not mention unless they are in the evidence. ``numbered``
    are the shown causes in order, for answers that give the cause's line number
    (its series is then also the first thing to check).
    """
    if not isinstance(text, str) or not text.strip():
        raise NoteRejected("empty answer")
    data = _first_json_object(text)
    try:
        model = _NoteModel.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise NoteRejected(f"answer does not match the schema ({problems})") from None
    evidence = _Evidence(allowed_names)
    causes = _Evidence(cause_names) if cause_names is not None else evidence
    if isinstance(model.cause, int):
        if model.cause > len(numbered):
            raise NoteRejected(f"cause {model.cause} is not a line of the evidence")
        cause = numbered[model.cause - 1]
    else:
        cause = model.cause
        if not causes.allows(cause):
            raise NoteRejected(f"cause {_short(cause)} is not a cause in the evidence")
    for entry in model.chain:
        if not evidence.allows(entry):
            raise NoteRejected(f"chain entry {_short(entry)} is not in the evidence")
    first_check = model.first_check if model.first_check is not None else cause
    if not evidence.allows(first_check):
        raise NoteRejected(f"first_check {_short(first_check)} is not in the evidence")
    _check_text(model.note, evidence, known_names)
    return Note(
        cause=" ".join(cause.split()),
        chain=tuple(" ".join(c.split()) for c in model.chain),
        note=" ".join(model.note.split()),
        first_check=" ".join(first_check.split()),
    )


def _names_one_of(text: str, terms: Iterable[str]) -> bool:
    lowered = text.casefold()
    return any(
        re.search(rf"(?<![\w-]){re.escape(term.casefold())}(?![\w-])", lowered)
        for term in terms
        if term.strip()
    )


def _answer_text(text: str) -> str:
    """The sentence of a plain answer; a model used to JSON notes may wrap it in one
    (``{"note": "..."}``): its ``note`` is the sentence."""
    if text.lstrip().startswith("{"):
        try:
            value = json.JSONDecoder().raw_decode(text.lstrip())[0]
        except json.JSONDecodeError:
            return text
        if isinstance(value, dict) and isinstance(value.get("note"), str):
            return str(value["note"])
    return text


_SENTENCE_CLOSE = re.compile(r"[.!?](?=\s|$)")


def parse_text_note(
    text: str,
    allowed_names: Set[str],
    *,
    cause: str,
    cause_terms: Set[str],
    symptom_terms: Set[str] = frozenset(),
    known_names: Set[str] = frozenset(),
    chain: Sequence[str] = (),
    truncated: bool = False,
) -> Note:
    """The plain-sentence note in ``text`` (prompts with ``answer: text``) for the
    service's top cause ``cause``; raise ``NoteRejected`` unless it names the cause
    (one of ``cause_terms``: its series, metric or entity), reaches the symptom (one
    of ``symptom_terms``, when given: its entity) and names nothing outside the
    evidence (as ``parse_note``). An answer cut off by the token limit (``truncated``)
    keeps its complete sentences; one with none is rejected."""
    if not isinstance(text, str) or not text.strip():
        raise NoteRejected("empty answer")
    if len(text) > MAX_ANSWER_CHARS:
        raise NoteRejected(f"answer too long ({len(text)} characters)")
    note = " ".join(_answer_text(text).split()).strip("\"'` ")
    ends = [m.end() for m in _SENTENCE_CLOSE.finditer(note)]
    if truncated and not (ends and ends[-1] == len(note)):
        if not ends:
            raise NoteRejected("answer cut off before its first sentence ended")
        note = note[: ends[-1]]
    elif not ends or ends[-1] != len(note):
        note += "."
    if not _names_one_of(note, cause_terms):
        raise NoteRejected("note does not name the cause")
    if symptom_terms and not _names_one_of(note, symptom_terms):
        raise NoteRejected("note does not reach the symptom")
    _check_text(note, _Evidence(allowed_names), known_names)
    return Note(cause=cause, chain=tuple(chain), note=note, first_check=cause)
