"""A chat model run in-process with transformers on the CPU (the ``local`` LLM).

Meant to be held by ONE process per machine (``plugin-backend llm-serve``): the
0.5B model takes ~2.5 GB and both cores while it writes, so web workers and the
background worker reach it over HTTP instead of each loading a copy.

Greedy decoding, a hard cap on new tokens and a wall-clock limit (transformers'
``max_time``); one generation at a time (a lock), and time spent waiting for the
lock counts against the caller's timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin_backend.adapters.llm_weights import MODEL_ID
from plugin_backend.errors import LLMError
from plugin_backend.llm.port import LLM, Completion, Message

__all__ = ["Completion", "LocalTransformersLLM"]


class LocalTransformersLLM:
    """Qwen2.5-Coder-0.5B-Instruct (or any causal LM folder) behind the LLM port."""

    name = "local"

    def __init__(
        self,
        model_dir: Path | str,
        threads: int = 2,
        max_new_tokens: int = 60,
        *,
        model_id: str = MODEL_ID,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads < 1 or max_new_tokens < 1:
            raise ValueError("threads and max_new_tokens must be positive")
        torch.set_num_threads(threads)
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=torch.float32, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise LLMError(
                f"local LLM: cannot load {model_dir}: {exc}", code="llm_load_failed"
            ) from exc
        model.eval()
        self._tokenizer = tokenizer
        self._model = model
        self._lock = threading.Lock()
        self.model = model_id
        self.max_new_tokens = max_new_tokens
        self.threads = threads
        eos = self._tokenizer.eos_token_id
        self._pad_id: int | None = (
            self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else eos
        )
        self._eos_ids: set[int] = _token_ids(self._model.generation_config.eos_token_id) | (
            _token_ids(eos)
        )

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
        """Answer ``messages`` (chat-template roles) with at most ``max_tokens`` new tokens.

        Raises LLMError when the lock or the generation outlasts ``timeout_s``.
        """
        import torch

        if not messages:
            raise LLMError("local LLM: no messages", code="llm_bad_request")
        limit = max(1, min(int(max_tokens), self.max_new_tokens))
        started = time.monotonic()
        if not self._lock.acquire(timeout=max(timeout_s, 0.0)):
            raise LLMError(f"local LLM busy: no slot within {timeout_s:.1f}s", code="llm_timeout")
        try:
            remaining = timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                raise LLMError(
                    f"local LLM busy: no slot within {timeout_s:.1f}s", code="llm_timeout"
                )
            inputs = self._tokenizer.apply_chat_template(
                [dict(m) for m in messages],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            prompt_len = int(inputs["input_ids"].shape[1])
            with torch.inference_mode():
                output = self._model.generate(
                    **inputs,
                    max_new_tokens=limit,
                    do_sample=False,
                    max_time=remaining,
                    pad_token_id=self._pad_id,
                )
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise LLMError(f"local LLM failed: {exc}", code="llm_failed") from exc
        finally:
            self._lock.release()
        generated = [int(t) for t in output[0, prompt_len:].tolist()]
        elapsed = time.monotonic() - started
        finished = bool(generated) and generated[-1] in self._eos_ids
        if not finished and len(generated) < limit and elapsed >= timeout_s:
            raise LLMError(
                f"local LLM timed out after {elapsed:.1f}s ({len(generated)} tokens)",
                code="llm_timeout",
            )
        text = self._tokenizer.decode(generated, skip_special_tokens=True)
        return Completion(
            text=str(text).strip(), prompt_tokens=prompt_len, completion_tokens=len(generated)
        )


def _token_ids(value: object) -> set[int]:
    if isinstance(value, int):
        return {value}
    if isinstance(value, list | tuple | set):
        return {int(v) for v in value if isinstance(v, int)}
    return set()


if TYPE_CHECKING:
    _conforms: type[LLM] = LocalTransformersLLM
