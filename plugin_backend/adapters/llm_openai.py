"""The ``LLM`` port over an OpenAI-compatible chat-completions endpoint: Ollama,
vLLM, a llama.cpp server, a hosted API.

``POST {base_url}/v1/chat/completions`` (``base_url`` with or without ``/v1``),
greedy (``temperature`` 0), ``max_tokens`` bounded; ``response_format`` JSON mode
only when ``json_mode=True`` (many local servers reject it). Connection errors and
5xx/429 answers are retried ``retries`` times within the call's time budget; read
timeouts and other 4xx answers never are. Every failure leaves as ``LLMError`` with
a message that names the problem and never the API key (nor URL credentials).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
from urllib3.exceptions import ReadTimeoutError

from plugin_backend import __version__
from plugin_backend.deadline import remaining_s
from plugin_backend.errors import ConfigError, LLMError
from plugin_backend.llm.port import Completion, Message

__all__ = ["OpenAICompatibleLLM", "chat_completions_url"]

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_BACKOFF_S = 0.1
_SNIPPET = 200


def chat_completions_url(base_url: str) -> str:
    """``base_url`` + ``/v1/chat/completions`` (``/v1`` not doubled)."""
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"LLM base URL must be http(s)://host[:port][/path], got {_safe(base)}")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


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
        session: requests.Session | None = None,
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
        self._session = session if session is not None else requests.Session()
        self._where = _safe(self.url)

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
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"plugin-backend/{__version__}",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        budget = min(float(timeout_s), self.timeout_s)
        request_left = remaining_s()  # the HTTP request's own budget, when inside one
        if request_left is not None:
            budget = min(budget, max(request_left - 0.5, 0.0))  # leave time to answer
        deadline = time.monotonic() + budget
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LLMError(f"LLM at {self._where} did not answer within {budget:g}s")
            result, retryable = self._attempt(body, headers, remaining)
            if isinstance(result, Completion):
                return result
            attempt += 1
            if not retryable or attempt > self.retries:
                raise result
            time.sleep(min(_BACKOFF_S * attempt, max(deadline - time.monotonic(), 0.0)))

    def _attempt(
        self, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[Completion | LLMError, bool]:
        try:
            response = self._session.post(
                self.url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False
            )
        except requests.RequestException as exc:
            return self._transport_error(exc, timeout_s)
        try:
            if response.status_code != 200:
                detail = self._redact(response.text[:65536])[:_SNIPPET]
                message = f"LLM at {self._where} answered HTTP {response.status_code}"
                return (
                    LLMError(f"{message}: {detail}" if detail.strip() else message),
                    response.status_code in _RETRY_STATUS,
                )
            return self._completion(response.content), False
        finally:
            response.close()

    def _transport_error(
        self, exc: requests.RequestException, timeout_s: float
    ) -> tuple[LLMError, bool]:
        if isinstance(exc, requests.ConnectTimeout):
            return LLMError(f"cannot reach LLM at {self._where}: no connection in time"), True
        if isinstance(exc, requests.Timeout) or isinstance((*exc.args, None)[0], ReadTimeoutError):
            return LLMError(f"LLM at {self._where} did not answer within {timeout_s:.3g}s"), False
        if isinstance(exc, requests.ConnectionError):
            return LLMError(f"cannot reach LLM at {self._where}: connection failed"), True
        return LLMError(f"request to LLM at {self._where} failed: {type(exc).__name__}"), False

    def _completion(self, content: bytes) -> Completion:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise LLMError(f"LLM at {self._where} answered a body that is not JSON") from None
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

    def _redact(self, text: str) -> str:
        text = " ".join(text.split())
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return text


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
