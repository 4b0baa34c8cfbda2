"""The one HTTP layer of the adapters (Prometheus, the OpenAI-compatible LLM, Grafana).

A small client over a ``requests.Session``. It sends a request, retries what a second
try can fix (no connection, a refused or dropped one, the retryable statuses), and
maps every failure to the adapter's exception from ``errors.py`` once, here:

* no connection in time, refused, dropped, TLS failed: ``cannot reach <where>: ...``
* no answer in time: ``<where> did not answer within <t>s`` (never retried: the
  server may still be working on it)
* an error status: ``<where> answered HTTP <status>: <the body's message>``
* a body that is not JSON: ``<where> answered a body that is not JSON (HTTP <status>)``

Each failure carries ``maybe_applied`` (the request may have reached the server and
taken effect) and ``retryable`` (trying again later may succeed); the adapter's error
factory turns it into its exception class (``PrometheusTimeout``, ``LLMError``,
``GrafanaError(in_doubt=..., retryable=...)``). Adapters keep only what is theirs:
paths, payloads, and the error bodies their API defines. Timeouts honour the
request's deadline (``deadline.py``); messages name no credential.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import requests
from urllib3.exceptions import ReadTimeoutError

from plugin_backend.deadline import bounded_timeout, remaining_s
from plugin_backend.errors import BackendError

__all__ = ["HttpAnswer", "HttpClient", "HttpFailure", "RetryPolicy"]

FailureKind = Literal[
    "connect_timeout", "connect", "timeout", "tls", "transport", "status", "not_json", "budget"
]
SNIPPET_CHARS = 200


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """Why an exchange failed: what the adapter's error factory is given."""

    kind: FailureKind
    message: str
    #: the request may have reached the server and taken effect (timeouts, dropped
    #: connections, 5xx answers to writes)
    maybe_applied: bool
    #: trying again later may succeed (transport failures, 5xx, 408, 429)
    retryable: bool
    status: int | None = None
    retry_after_s: float | None = None


ErrorFactory = Callable[[HttpFailure], BackendError]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts after the first; the pause before retry ``n`` is
    ``backoff_s * 2 ** (n - 1)``, never past the call's budget or the request deadline."""

    retries: int = 0
    backoff_s: float = 0.25
    statuses: frozenset[int] = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A complete answer (body read, connection released)."""

    status: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class HttpClient:
    """Requests to one service; see the module docstring.

    ``where`` names the service in messages (``Prometheus at http://prom:9090``);
    ``error`` builds the adapter's exception from an ``HttpFailure``; ``secrets`` are
    blanked out of any body quoted in a message. ``use_deadline=False`` leaves the
    request deadline to the caller (a budget of its own, or timeouts it keeps as they
    are); ``follow_redirects=False`` hands a redirect back as the answer.
    """

    def __init__(
        self,
        *,
        where: str,
        error: ErrorFactory,
        timeout_s: float,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        secrets: Sequence[str] = (),
        use_deadline: bool = True,
        follow_redirects: bool = True,
    ) -> None:
        self.where = where
        self.timeout_s = float(timeout_s)
        self.retry = retry if retry is not None else RetryPolicy()
        self.sleep: Callable[[float], None] = time.sleep
        self._error = error
        self._verify = verify
        self._secrets = tuple(s for s in secrets if s)
        self._use_deadline = use_deadline
        self._follow_redirects = follow_redirects
        self._session = requests.Session()
        self._session.headers.update(headers or {})
        if auth is not None:
            self._session.auth = auth

    def close(self) -> None:
        self._session.close()

    # --- sending ------------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        data: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        budget_s: float | None = None,
        retries: int | None = None,
        retry_answer: Callable[[HttpAnswer], bool] | None = None,
        where: str | None = None,
    ) -> HttpAnswer:
        """The final answer, whatever its status (see ``status_failure``, ``decode_json``).

        ``timeout_s`` bounds each attempt; ``budget_s`` all of them together, pauses
        included. An answer with a status of the retry policy is tried again unless
        ``retry_answer`` says it is final (a server that gave up on the query itself).
        Raises the adapter's error for transport failures and an exhausted budget.
        """
        where = where or self.where
        per_attempt = self.timeout_s if timeout_s is None else float(timeout_s)
        attempts = 1 + (self.retry.retries if retries is None else retries)
        ends_at = None if budget_s is None else time.monotonic() + budget_s
        attempt = 0
        while True:
            attempt += 1
            timeout = per_attempt
            if ends_at is not None:
                left = ends_at - time.monotonic()
                if left <= 0:
                    raise self.fail(
                        HttpFailure(
                            "budget",
                            f"{where} did not answer within {budget_s:.3g}s",
                            maybe_applied=attempt > 1,
                            retryable=True,
                        )
                    )
                timeout = min(timeout, left)
            if self._use_deadline:
                timeout = bounded_timeout(timeout, where)
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json,
                    headers=dict(headers or {}),
                    timeout=timeout,
                    verify=self._verify,
                    allow_redirects=self._follow_redirects,
                )
            except requests.RequestException as exc:
                failure = _transport_failure(exc, where, timeout, method)
                if not failure.retryable or attempt >= attempts:
                    raise self.fail(failure) from exc
            else:
                try:
                    answer = HttpAnswer(
                        response.status_code, response.content, response.headers, attempt
                    )
                finally:
                    response.close()
                if answer.status not in self.retry.statuses or attempt >= attempts:
                    return answer
                # Only an answer that would be retried is read (a body may be megabytes).
                if retry_answer is not None and not retry_answer(answer):
                    return answer
            self.sleep(self._pause(attempt, ends_at))

    def _pause(self, attempt: int, ends_at: float | None) -> float:
        pause: float = self.retry.backoff_s * 2.0 ** (attempt - 1)
        if ends_at is not None:
            pause = min(pause, max(ends_at - time.monotonic(), 0.0))
        left = remaining_s() if self._use_deadline else None
        return pause if left is None else max(0.0, min(pause, left - 0.1))

    # --- reading answers --------------------------------------------------------------
    def status_failure(
        self, answer: HttpAnswer, method: str = "GET", *, where: str | None = None
    ) -> HttpFailure:
        """The failure an error status stands for, quoting the body's message; raise
        ``fail(...)`` of it, or enrich it first (a hint the adapter knows)."""
        status = answer.status
        tries = f" after {answer.attempts} attempts" if answer.attempts > 1 else ""
        detail = self.snippet(answer)
        message = f"{where or self.where} answered HTTP {status}{tries}"
        retry_after: float | None = None
        if status == 429:
            try:
                retry_after = float(answer.headers.get("Retry-After", ""))
            except ValueError:
                retry_after = None
        return HttpFailure(
            "status",
            f"{message}: {detail}" if detail else message,
            maybe_applied=status >= 500 and method.upper() != "GET",
            retryable=status >= 500 or status in (408, 429),
            status=status,
            retry_after_s=retry_after,
        )

    def decode_json(
        self, answer: HttpAnswer, method: str = "GET", *, where: str | None = None
    ) -> Any:
        """The answer's JSON; the adapter's error when it is not JSON."""
        try:
            return orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            raise self.fail(
                HttpFailure(
                    "not_json",
                    f"{where or self.where} answered a body that is not JSON "
                    f"(HTTP {answer.status})",
                    maybe_applied=method.upper() != "GET",
                    retryable=False,
                    status=answer.status,
                )
            ) from None

    def snippet(self, answer: HttpAnswer) -> str:
        """The body's ``message`` or ``error`` text, else its start: one line, short,
        secrets blanked."""
        text = answer.content[:65536].decode("utf-8", "replace")
        try:
            body = orjson.loads(answer.content) if answer.content[:1] in (b"{", b"[") else None
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            said = body.get("message", body.get("error"))
            if isinstance(said, str) and said.strip():
                text = said
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return " ".join(text.split())[:SNIPPET_CHARS]

    def fail(self, failure: HttpFailure) -> BackendError:
        """The adapter's exception for ``failure``."""
        return self._error(failure)


def _transport_failure(
    exc: requests.RequestException, where: str, timeout: float, method: str
) -> HttpFailure:
    """Classify a failed exchange: what happened, whether it may have taken effect (a
    read never does), and whether an immediate retry may help."""
    writes = method.upper() not in ("GET", "HEAD")
    if isinstance(exc, requests.ConnectTimeout):
        return HttpFailure(
            "connect_timeout",
            f"cannot reach {where}: no connection in {timeout:.3g}s",
            maybe_applied=False,
            retryable=True,
        )
    if isinstance(exc, requests.Timeout) or isinstance((*exc.args, None)[0], ReadTimeoutError):
        return HttpFailure(
            "timeout",
            f"{where} did not answer within {timeout:.3g}s",
            maybe_applied=writes,
            retryable=False,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        hint = "check the CA file and TLS verification settings"
        return HttpFailure(
            "tls",
            f"cannot reach {where}: TLS failed ({hint}): {_reason(exc)}",
            maybe_applied=False,
            retryable=False,
        )
    if isinstance(exc, requests.ConnectionError):
        reason = _reason(exc)
        # refused before sending is certain; a connection dropped after sending is not
        refused = "refused" in reason.lower() or "Failed to establish" in str(exc)
        return HttpFailure(
            "connect",
            f"cannot reach {where}: {reason}",
            maybe_applied=writes and not refused,
            retryable=True,
        )
    return HttpFailure(
        "transport",
        f"request to {where} failed: {_reason(exc)}",
        maybe_applied=writes,
        retryable=False,
    )


def _reason(exc: requests.RequestException) -> str:
    """urllib3's reason without the connection object's repr (it may hold the URL)."""
    inner: object = exc.args[0] if exc.args else exc
    text = str(getattr(inner, "reason", inner)) or type(exc).__name__
    if text.startswith(("HTTPConnection", "HTTPSConnection", "<urllib3")) and "): " in text:
        text = text.split("): ", 1)[1]
    return text[:300]
