"""The note writer: an LLM phrases the ranked report; the template note stands in
whenever it cannot (no LLM, a failure or timeout, an answer that fails the check).

Observer events, ``observer(event, latency_s, info)``:

``call``      the LLM answered (``info``: provider, model, prompt_tokens, completion_tokens)
``failure``   the LLM call failed (``info["reason"]``)
``rejected``  the answer failed the strict check (``info["reason"]``)
``fallback``  the template note was used (``info["kind"]``: ``no_llm``, ``no_causes``,
              ``llm_error``, ``rejected``; a bounded value for metrics labels)

An observer that raises is logged and ignored: metrics never break a note.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from plugin_backend.errors import LLMError
from plugin_backend.llm.mechanism import first_check, path_entities
from plugin_backend.llm.parse import Note, NoteRejected, parse_note, parse_text_note
from plugin_backend.llm.port import LLM, Completion
from plugin_backend.llm.prompting import (
    Prompt,
    allowed_names,
    build_messages,
    cause_names,
    cause_terms,
    load_prompt,
    numbered_causes,
    symptom_terms,
)

__all__ = ["NoteObserver", "NoteWriter", "WrittenNote", "compose_note"]

logger = logging.getLogger(__name__)

NoteObserver = Callable[[str, float, dict[str, Any]], None]
Fallback = Callable[[dict[str, Any]], str]


@dataclass(frozen=True, slots=True)
class WrittenNote:
    """The note for a report and how it was made. ``reason`` says why the template
    was used (``None`` when the LLM's note passed)."""

    text: str
    provider: str
    model: str | None
    latency_s: float
    fallback: bool
    reason: str | None = None
    prompt_version: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    note: Note | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``llm`` block."""
        return {
            "provider": self.provider,
            "model": self.model,
            "latency_s": round(self.latency_s, 3),
            "fallback": self.fallback,
            "reason": self.reason,
            "prompt_version": self.prompt_version,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def _report_summary(report: dict[str, Any]) -> str:
    summary = report.get("summary")
    return summary if isinstance(summary, str) else "No note available."


def compose_note(note: Note, why: str | None = None) -> str:
    """The note's text, ending with the first check (and ``why``, the service's reason
    from the evidence) unless it already names it."""
    text = note.note.strip()
    if text and text[-1] not in ".!?":
        text += "."
    if note.first_check not in text:
        reason = f": {why}" if why else ""
        text += f" First check {note.first_check}{reason}."
    return text


class NoteWriter:
    """Writes the note of a ``RootCauseReport.to_dict()`` with ``llm`` (or none)."""

    def __init__(
        self,
        llm: LLM | None,
        fallback: Fallback = _report_summary,
        *,
        observer: NoteObserver | None = None,
        prompt: Prompt | None = None,
        timeout_s: float = 20.0,
        max_tokens: int | None = None,
        known_names: Iterable[str] = (),
    ) -> None:
        self.llm = llm
        self.fallback = fallback
        self.observer = observer
        self.prompt = prompt if prompt is not None else load_prompt()
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens if max_tokens is not None else self.prompt.max_tokens
        self.known_names = frozenset(known_names)

    @property
    def provider(self) -> str:
        return self.llm.name if self.llm is not None else "none"

    @property
    def model(self) -> str | None:
        return self.llm.model if self.llm is not None else None

    def write(self, report: dict[str, Any], known_names: Iterable[str] = ()) -> WrittenNote:
        """The note for ``report``; ``known_names`` (entities and metrics the service
        knows of) are added to the writer's own: a note naming one outside the evidence
        is rejected."""
        if self.llm is None:
            return self._fallback(report, "no LLM configured", "no_llm")
        causes = report.get("causes")
        if not isinstance(causes, list) or not causes:
            return self._fallback(report, "no candidate causes to phrase", "no_causes")
        messages = build_messages(report, self.prompt)
        started = time.perf_counter()
        try:
            completion = self.llm.complete(
                messages, max_tokens=self.max_tokens, timeout_s=self.timeout_s
            )
        except LLMError as exc:
            return self._failed(report, started, f"LLM failed: {exc.message}")
        except Exception as exc:  # a misbehaving adapter must not break the report
            logger.warning("LLM adapter %s raised %r", self.provider, exc)
            return self._failed(report, started, f"LLM failed: {type(exc).__name__}")
        latency = time.perf_counter() - started
        tokens = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        }
        self._observe("call", latency, tokens)
        try:
            known = self.known_names | self.prompt.example_names | frozenset(known_names)
            note = self._parse(report, completion, known)
        except NoteRejected as exc:
            self._observe("rejected", latency, {"reason": exc.reason, **tokens})
            return self._fallback(
                report, f"note rejected: {exc.reason}", "rejected", latency, tokens
            )
        check = first_check(report)
        why = check[1] if check is not None and check[0] == note.first_check else None
        return WrittenNote(
            text=compose_note(note, why),
            provider=self.provider,
            model=self.model,
            latency_s=latency,
            fallback=False,
            reason=None,
            prompt_version=self.prompt.version,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            note=note,
        )

    def _parse(self, report: dict[str, Any], completion: Completion, known: Set[str]) -> Note:
        if self.prompt.answer == "text":
            return parse_text_note(
                completion.text,
                allowed_names(report, self.prompt),
                cause=numbered_causes(report, self.prompt)[0],
                cause_terms=cause_terms(report, self.prompt),
                symptom_terms=symptom_terms(report),
                known_names=known,
                chain=path_entities(report),
                truncated=(completion.completion_tokens or 0) >= self.max_tokens,
            )
        return parse_note(
            completion.text,
            allowed_names(report, self.prompt),
            cause_names=cause_names(report, self.prompt),
            known_names=known,
            numbered=numbered_causes(report, self.prompt),
        )

    def _failed(self, report: dict[str, Any], started: float, reason: str) -> WrittenNote:
        latency = time.perf_counter() - started
        self._observe("failure", latency, {"reason": reason})
        return self._fallback(report, reason, "llm_error", latency)

    def _fallback(
        self,
        report: dict[str, Any],
        reason: str,
        kind: str,
        latency_s: float = 0.0,
        tokens: Mapping[str, int | None] | None = None,
    ) -> WrittenNote:
        self._observe("fallback", latency_s, {"reason": reason, "kind": kind})
        tokens = tokens or {}
        return WrittenNote(
            text=self.fallback(report),
            provider=self.provider,
            model=self.model,
            latency_s=latency_s,
            fallback=True,
            reason=reason,
            prompt_version=self.prompt.version if self.llm is not None else None,
            prompt_tokens=tokens.get("prompt_tokens"),
            completion_tokens=tokens.get("completion_tokens"),
        )

    def _observe(self, event: str, latency_s: float, info: Mapping[str, Any]) -> None:
        if self.observer is None:
            return
        payload = {"provider": self.provider, "model": self.model, **info}
        try:
            self.observer(event, latency_s, payload)
        except Exception as exc:
            logger.warning("note observer failed on %s: %r", event, exc)
