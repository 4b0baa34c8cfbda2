"""A tiny OpenAI-compatible HTTP server holding the ONE local model of a machine.

``plugin-backend llm-serve`` runs it; the web workers and the background worker
reach it through the OpenAI-compatible client like any other endpoint, so the
~2.5 GB model is loaded once per machine, not once per gunicorn worker.

Endpoints (JSON in and out, errors as ``{"error": {"message", "type", "code"}}``):

* ``POST /v1/chat/completions``: ``messages`` (required), ``max_tokens``
  (capped by the server), ``model``/``temperature``/``top_p`` accepted and
  ignored (decoding is greedy), ``stream`` refused;
* ``GET /v1/models``; ``GET /healthz``.

Stdlib ``ThreadingHTTPServer``: each request gets a thread, and they queue on the
model's lock; a request that cannot start within the server's timeout gets 504.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from plugin_backend.errors import ConfigError, LLMError
from plugin_backend.llm.port import Completion, Message

__all__ = ["ChatModel", "make_server", "running_model", "serve_llm"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
MAX_MESSAGES = 64
ROLES = frozenset({"system", "user", "assistant"})


class ChatModel(Protocol):
    """What the server needs from a model (``LocalTransformersLLM`` fits)."""

    @property
    def model(self) -> str: ...

    @property
    def max_new_tokens(self) -> int: ...

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion: ...


class _BadRequest(Exception):
    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _LLMHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], llm: ChatModel, timeout_s: float) -> None:
        super().__init__(address, _Handler)
        self.llm = llm
        self.request_timeout_s = timeout_s
        self.started = time.time()


def make_server(
    llm: ChatModel, host: str = "127.0.0.1", port: int = 8091, *, timeout_s: float = 30.0
) -> ThreadingHTTPServer:
    """A bound (not yet serving) server around ``llm``; ``port=0`` picks a free port."""
    return _LLMHTTPServer((host, port), llm, timeout_s)


def serve_llm(
    host: str = "127.0.0.1",
    port: int = 8091,
    cache_dir: Path | None = None,
    *,
    threads: int = 2,
    max_new_tokens: int = 60,
    timeout_s: float = 30.0,
) -> int:
    """Prepare the packaged weights (first start: minutes), load them, serve until SIGTERM/^C.

    Where an llm-serve already answers on ``host:port`` (a second ``make run``), it is
    reused: nothing is loaded and 0 is returned at once. Raises ConfigError (weights not
    installed, or the port held by something else) or LLMError (checksum, conversion,
    load) before binding the port, so nothing listens with a broken model.
    """
    from plugin_backend.adapters.llm_local import LocalTransformersLLM
    from plugin_backend.adapters.llm_weights import ensure_local_model

    running = running_model(host, port)
    if running is not None:  # one model per machine: reuse it, never load a second
        log.warning(
            "llm-serve: %s already answers on http://%s:%s/v1; reusing it (nothing started)",
            running,
            host,
            port,
        )
        return 0
    started = time.monotonic()
    model_dir = ensure_local_model(cache_dir)
    llm = LocalTransformersLLM(model_dir, threads=threads, max_new_tokens=max_new_tokens)
    server = make_server(llm, host, port, timeout_s=timeout_s)
    bound_host, bound_port = server.server_address[:2]
    log.info(
        "llm-serve: %s ready on http://%s:%s/v1 after %.1fs",
        llm.model,
        bound_host,
        bound_port,
        time.monotonic() - started,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("llm-serve: stopping")
    finally:
        server.server_close()
    return 0


def running_model(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """The model an llm-serve already serving on ``host:port`` holds; ``None`` when the
    port is free. Raises ``ConfigError`` when something else holds the port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError:
        return None  # nothing listens: ours to bind
    try:
        url = f"http://{host}:{port}/healthz"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.loads(response.read(64 * 1024))
        model = body.get("model") if isinstance(body, dict) else None
        if body.get("status") == "ok" and isinstance(model, str) and model:
            return model
    except (OSError, ValueError, AttributeError):
        pass
    raise ConfigError(
        f"llm-serve: port {port} on {host} is in use by something that is not llm-serve; "
        "stop it or pass --port"
    )


def _raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


class _Handler(BaseHTTPRequestHandler):
    server: _LLMHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "plugin-backend-llm"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/healthz":
            self._send(HTTPStatus.OK, {"status": "ok", "model": self.server.llm.model})
        elif path == "/v1/models":
            self._send(
                HTTPStatus.OK,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self.server.llm.model,
                            "object": "model",
                            "created": int(self.server.started),
                            "owned_by": "plugin-backend",
                        }
                    ],
                },
            )
        elif path == "/v1/chat/completions":
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST", "method_not_allowed")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route {path or '/'}", "not_found")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            self._drain()
            self._error(HTTPStatus.NOT_FOUND, f"no route {path or '/'}", "not_found")
            return
        try:
            messages, max_tokens = _parse_chat(self._read_json())
        except _BadRequest as exc:
            self._error(exc.status, exc.message, "invalid_request_error")
            return
        llm = self.server.llm
        try:
            result = llm.complete(
                messages, max_tokens=max_tokens, timeout_s=self.server.request_timeout_s
            )
        except LLMError as exc:
            status = (
                HTTPStatus.GATEWAY_TIMEOUT
                if exc.code == "llm_timeout"
                else HTTPStatus.INTERNAL_SERVER_ERROR
            )
            self._error(status, exc.message, exc.code)
            return
        limit = min(max_tokens, llm.max_new_tokens)
        prompt_tokens = result.prompt_tokens or 0
        completion_tokens = result.completion_tokens or 0
        self._send(
            HTTPStatus.OK,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": llm.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": ("length" if completion_tokens >= limit else "stop"),
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _read_json(self) -> Any:
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self.close_connection = True
            raise _BadRequest("Content-Length is required", HTTPStatus.LENGTH_REQUIRED)
        try:
            length = int(raw_length)
        except ValueError:
            self.close_connection = True
            raise _BadRequest("bad Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _BadRequest(
                f"body over {MAX_BODY_BYTES} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            )
        body = self.rfile.read(length)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _BadRequest(f"body is not JSON: {exc}") from None

    def _drain(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _error(self, status: HTTPStatus, message: str, code: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(status, {"error": {"message": message, "type": kind, "code": code}})

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("llm-serve %s: " + format, self.address_string(), *args)


def _parse_chat(body: Any) -> tuple[list[Message], int]:
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    if body.get("stream"):
        raise _BadRequest("stream is not supported")
    if body.get("n", 1) != 1:
        raise _BadRequest("only n=1 is supported")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _BadRequest("messages must be a non-empty list")
    if len(raw) > MAX_MESSAGES:
        raise _BadRequest(f"at most {MAX_MESSAGES} messages")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _BadRequest(f"messages[{i}] must be an object")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise _BadRequest(f"messages[{i}].role must be one of {sorted(ROLES)}")
        if not isinstance(content, str):
            raise _BadRequest(f"messages[{i}].content must be a string")
        messages.append(Message(role=str(role), content=content))
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = 1 << 30  # the server's own cap applies
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _BadRequest("max_tokens must be a positive integer")
    return messages, max_tokens
