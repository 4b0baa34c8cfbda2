"""LLM-written root-cause notes, kept honest.

The service ranks the causes itself (``plugin_backend.rca``) and works out the
mechanism: the path from the top cause to the symptom along the dependency map,
each hop with its evidence, and what to check first and why (``mechanism``, which
also writes the deterministic template note). A small LLM only phrases that path in
one sentence. The prompt is versioned data (``prompts/note_v4.yaml``) filled with
bounded, sanitised evidence (``prompting``); the answer is parsed strictly, and it
must name the cause and nothing the service knows of outside the evidence
(``parse``); otherwise ``NoteWriter`` uses the template note and says why
(``writer``). The model sits behind the ``LLM`` port (``port``); adapters live in
``plugin_backend.adapters`` (``llm_openai``, ``llm_local``).

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
