"""The LLM port: what the note writer needs from a chat model, nothing more.

Adapters (``plugin_backend.adapters.llm_openai``) implement it; every failure
leaves as ``plugin_backend.errors.LLMError`` (timeouts included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, runtime_checkable

__all__ = ["LLM", "Completion", "Message"]


class Message(TypedDict):
    """One chat message: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The model's answer; token counts are ``None`` when the server does not report them."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class LLM(Protocol):
    """A chat-completion model. ``name`` is a short, bounded provider name for
    metrics labels (``openai``, ``local``); ``model`` the model's name."""

    name: str
    model: str

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
        """Answer ``messages`` greedily within ``timeout_s``; raise ``LLMError`` on failure."""
        ...
