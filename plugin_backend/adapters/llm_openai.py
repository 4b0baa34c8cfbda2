"""The ``LLM`` port over an OpenAI-compatible chat-completions endpoint: Ollama,
vLLM, a llama.cpp server, a hosted API.

``POST {base_url}/v1/chat/completions`` (``base_url`` with or without ``/v1``),
greedy (``temperature`` 0), ``max_tokens`` bounded; ``response_format`` JSON mode
only when ``json_mode=True`` (many local servers reject it). Transport goes through
``adapters/http.py``: connection errors and 5xx/429 answers are retried ``retries``
times within the call's time budget; read timeouts and other 4xx answers never are.
Every failure leaves as ``LLMError`` with a message that names the problem and never
the API key (nor URL credentials).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from plugin_backend import __version__
from plugin_backend.adapters.http import HttpClient, HttpFailure, RetryPolicy
from plugin_backend.deadline import remaining_s
from plugin_backend.errors import BackendError, ConfigError, LLMError
from plugin_backend.llm.port import Completion, Message

__all__ = ["OpenAICompatibleLLM", "chat_completions_url", "models_url"]

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_BACKOFF_S = 0.1


def chat_completions_url(base_url: str) -> str:
    """``base_url`` + ``/v1/chat/completions`` (``/v1`` not doubled)."""
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"LLM base URL must be http(s)://host[:port][/path], got {_safe(base)}")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def models_url(base_url: str) -> str:
    """``base_url`` + ``/v1/models`` (``/v1`` not doubled): what the health probe asks."""
    base = base_url.strip().rstrip("/")
    return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"


def _safe(url: str) -> str:
    """``url`` without user info, query or fragment (they may hold credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class OpenAICompatibleLLM:
    """``complete()`` over ``POST …/v1/chat/completions``; see the module docstring.

    ``timeout_s`` caps every call (the smaller of it and the call's ``timeout_s``
    applies), retries included.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 20.0,
        retries: int = 1,
        json_mode: bool = False,
        name: str = "openai",
    ) -> None:
        if not model.strip():
            raise ConfigError("LLM model name must not be empty")
        if not timeout_s > 0:
            raise ConfigError(f"LLM timeout must be positive, got {timeout_s}")
        if retries < 0:
            raise ConfigError(f"LLM retries must be >= 0, got {retries}")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.name = name
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.json_mode = json_mode
        self._api_key = api_key or None
        self._where = _safe(self.url)
        self.models_url = _safe(models_url(base_url))
        headers = {"Accept": "application/json", "User-Agent": f"plugin-backend/{__version__}"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._models_url = models_url(base_url)
        self._http = HttpClient(
            where=f"LLM at {self._where}",
            error=_llm_error,
            timeout_s=self.timeout_s,
            retry=RetryPolicy(retries, _BACKOFF_S, _RETRY_STATUS),
            headers=headers,
            secrets=[self._api_key] if self._api_key else [],
            use_deadline=False,  # complete() draws its own budget from the deadline
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM(url={self._where!r}, model={self.model!r})"

    def describe(self) -> str:
        """For the start-up log: endpoint and model, no secrets."""
        auth = "with an API key" if self._api_key else "without an API key"
        return f"OpenAI-compatible LLM at {self._where}, model {self.model!r}, {auth}"

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": 0,
            "max_tokens": int(max_tokens),
            "stream": False,
        }
        if self.json_mode:
            payload["response_format"] = {"type": "json_object"}
        budget = min(float(timeout_s), self.timeout_s)
        request_left = remaining_s()  # the HTTP request's own budget, when inside one
        if request_left is not None:
            budget = min(budget, max(request_left - 0.5, 0.0))  # leave time to answer
        answer = self._http.request(
            "POST",
            self.url,
            data=orjson.dumps(payload),
            headers={"Content-Type": "application/json"},
            timeout_s=budget,
            budget_s=budget,
        )
        if answer.status != 200:
            raise self._http.fail(self._http.status_failure(answer, "POST"))
        return self._completion(self._http.decode_json(answer, "POST"))

    def check_ready(self, timeout_s: float) -> None:
        """``GET …/v1/models`` answers 200 within ``timeout_s`` (one try)."""
        where = f"LLM at {self.models_url}"
        answer = self._http.request(
            "GET", self._models_url, timeout_s=timeout_s, retries=0, where=where
        )
        if answer.status != 200:
            raise self._http.fail(self._http.status_failure(answer, where=where))

    def _completion(self, data: Any) -> Completion:
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(
                f"LLM at {self._where} answered without choices[0].message.content"
            ) from None
        if not isinstance(text, str):
            raise LLMError(f"LLM at {self._where} answered a non-text message content")
        usage = data.get("usage") if isinstance(data, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            text=text,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
        )


def _llm_error(failure: HttpFailure) -> BackendError:
    return LLMError(failure.message)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
