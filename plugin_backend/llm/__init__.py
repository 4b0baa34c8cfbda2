"""LLM-written root-cause notes, kept honest.

The service ranks the causes itself (``plugin_backend.rca``); a small LLM only
phrases the top of that ranking in 1-3 sentences. The prompt is versioned data
(``prompts/note_v1.yaml``) filled with bounded, sanitised evidence
(``prompting``); the answer is JSON parsed strictly, and every name it uses must
be in the evidence (``parse``); otherwise ``NoteWriter`` uses the deterministic
template note and says why (``writer``). The model sits behind the ``LLM`` port
(``port``); adapters live in ``plugin_backend.adapters`` (``llm_openai``).

Pure: no HTTP, no web framework, no environment.
"""

from __future__ import annotations

from plugin_backend.llm.parse import Note, NoteRejected, parse_note
from plugin_backend.llm.port import LLM, Completion, Message
from plugin_backend.llm.prompting import (
    Prompt,
    allowed_names,
    build_messages,
    cause_names,
    load_prompt,
    sanitize_label_value,
)
from plugin_backend.llm.writer import NoteWriter, WrittenNote, compose_note

__all__ = [
    "LLM",
    "Completion",
    "Message",
    "Note",
    "NoteRejected",
    "NoteWriter",
    "Prompt",
    "WrittenNote",
    "allowed_names",
    "build_messages",
    "cause_names",
    "compose_note",
    "load_prompt",
    "parse_note",
    "sanitize_label_value",
]
