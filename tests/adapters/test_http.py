"""The adapters' one HTTP layer against a real HTTP server on 127.0.0.1: retries, and
how each transport failure, error status and non-JSON body reaches the exception tree."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from plugin_backend.adapters.http import HttpAnswer, HttpClient, HttpFailure, RetryPolicy
from plugin_backend.deadline import deadline
from plugin_backend.errors import BackendError, DeadlineExceeded, UpstreamError

DROP = "drop"  # close the connection without answering


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass
class Server:
    url: str = ""
    replies: list[Reply] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            server.seen.append((self.command, self.path))
            reply = server.replies.pop(0) if server.replies else Reply()
            if reply.delay_s:
                server.release.wait(reply.delay_s)
            if reply.drop:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                pass  # the client gave up (timeout tests)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@dataclass
class Recorder:
    """The error factory an adapter passes: keeps every failure it is given."""

    failures: list[HttpFailure] = field(default_factory=list)

    def __call__(self, failure: HttpFailure) -> BackendError:
        self.failures.append(failure)
        return UpstreamError(failure.message)


def _client(
    errors: Recorder, sleeps: list[float], *, retries: int = 2, timeout_s: float = 2.0, **kw: Any
) -> HttpClient:
    client = HttpClient(
        where="Thing at test",
        error=errors,
        timeout_s=timeout_s,
        retry=RetryPolicy(retries=retries, backoff_s=0.25),
        **kw,
    )
    client.sleep = sleeps.append
    return client


def _check(client: HttpClient, answer: HttpAnswer, method: str = "GET") -> None:
    """What adapters do with an answer: an error status raises their exception."""
    if answer.status >= 400:
        raise client.fail(client.status_failure(answer, method))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_retried_with_backoff_then_named() -> None:
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps)
    with pytest.raises(UpstreamError, match=r"cannot reach Thing at test: .*refused"):
        client.request("POST", f"http://127.0.0.1:{_closed_port()}/x", json={"a": 1})
    (failure,) = errors.failures
    assert failure.kind == "connect"
    assert failure.retryable
    assert not failure.maybe_applied  # refused: nothing was sent
    assert sleeps == [0.25, 0.5]


def test_a_5xx_is_retried_until_an_answer_comes(server: Server) -> None:
    server.replies = [Reply(503, b"starting"), Reply(502, b"bad gateway"), Reply(200, b"[1]")]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps)
    answer = client.request("GET", server.url + "/api")
    assert (answer.status, answer.attempts) == (200, 3)
    assert client.decode_json(answer) == [1]
    assert len(server.seen) == 3
    assert sleeps == [0.25, 0.5]
    assert errors.failures == []


def test_a_5xx_that_stays_is_an_error_quoting_the_body_after_all_attempts(
    server: Server,
) -> None:
    server.replies = [Reply(500, b'{"message": "disk full"}') for _ in range(3)]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps)
    answer = client.request("POST", server.url + "/api", data=b"x")
    with pytest.raises(UpstreamError) as caught:
        _check(client, answer, "POST")
    assert caught.value.message == "Thing at test answered HTTP 500 after 3 attempts: disk full"
    (failure,) = errors.failures
    assert (failure.kind, failure.status, failure.retryable) == ("status", 500, True)
    assert failure.maybe_applied  # a 5xx to a write may have been applied
    assert len(server.seen) == 3


def test_a_5xx_the_adapter_calls_final_is_not_retried(server: Server) -> None:
    server.replies = [Reply(503, b'{"errorType": "timeout"}')]
    errors, sleeps = Recorder(), list[float]()
    answer = _client(errors, sleeps).request(
        "GET", server.url + "/q", retry_answer=lambda a: b"timeout" not in a.content
    )
    assert (answer.status, answer.attempts) == (503, 1)
    assert sleeps == []


def test_only_an_answer_that_would_be_retried_is_shown_to_the_adapter(server: Server) -> None:
    """A success (a Prometheus answer may be megabytes) or the last attempt is returned
    as is: the adapter's check, which may parse the body, reads only retryable ones."""
    server.replies = [Reply(200, b"{}"), Reply(503), Reply(503)]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps)
    asked: list[int] = []

    def retry(answer: HttpAnswer) -> bool:
        asked.append(answer.status)
        return True

    assert client.request("GET", server.url + "/q", retry_answer=retry).status == 200
    assert asked == []
    answer = client.request("GET", server.url + "/q", retries=1, retry_answer=retry)
    assert (answer.status, answer.attempts) == (503, 2)
    assert asked == [503]  # the first 503 was retried; the last one is returned unread


def test_a_4xx_is_never_retried_and_429_says_when_to_come_back(server: Server) -> None:
    server.replies = [Reply(429, b"slow down", headers={"Retry-After": "7"}), Reply(400)]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps)
    for _ in range(2):
        with pytest.raises(UpstreamError):
            _check(client, client.request("GET", server.url + "/a"))
    throttled, bad = errors.failures
    assert (throttled.status, throttled.retryable, throttled.retry_after_s) == (429, True, 7.0)
    assert "answered HTTP 429: slow down" in throttled.message
    assert (bad.status, bad.retryable) == (400, False)
    assert len(server.seen) == 2
    assert sleeps == []


def test_no_answer_in_time_is_a_timeout_and_is_not_retried(server: Server) -> None:
    server.replies = [Reply(delay_s=3.0), Reply(delay_s=3.0)]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps, timeout_s=0.2)
    for method in ("POST", "GET"):
        with pytest.raises(UpstreamError, match=r"^Thing at test did not answer within 0\.2s$"):
            client.request(method, server.url + "/slow")
    posted, got = errors.failures
    assert (posted.kind, posted.retryable, posted.maybe_applied) == ("timeout", False, True)
    assert (got.kind, got.maybe_applied) == ("timeout", False)  # a read changes nothing
    assert len(server.seen) == 2
    assert sleeps == []


def test_a_connection_dropped_after_sending_may_have_been_applied(server: Server) -> None:
    server.replies = [Reply(drop=True), Reply(drop=True)]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps, retries=1)
    with pytest.raises(UpstreamError, match="cannot reach Thing at test"):
        client.request("POST", server.url + "/write", json={})
    (failure,) = errors.failures
    assert (failure.kind, failure.retryable, failure.maybe_applied) == ("connect", True, True)
    assert len(server.seen) == 2  # retried once
    assert sleeps == [0.25]


def test_a_body_that_is_not_json_is_named(server: Server) -> None:
    server.replies = [Reply(200, b"<html>login</html>")]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps)
    answer = client.request("GET", server.url + "/api")
    with pytest.raises(
        UpstreamError, match=r"^Thing at test answered a body that is not JSON \(HTTP 200\)$"
    ):
        client.decode_json(answer)
    assert errors.failures[0].kind == "not_json"


def test_secrets_never_appear_in_messages(server: Server) -> None:
    server.replies = [Reply(401, b'{"error": "bad key sk-SECRET-1"}')]
    errors, sleeps = Recorder(), list[float]()
    client = _client(
        errors, sleeps, secrets=["sk-SECRET-1"], headers={"Authorization": "Bearer sk-SECRET-1"}
    )
    with pytest.raises(UpstreamError) as caught:
        _check(client, client.request("GET", server.url + "/v1/models"))
    assert caught.value.message == "Thing at test answered HTTP 401: bad key [redacted]"


def test_the_call_budget_covers_every_attempt(server: Server) -> None:
    server.replies = [Reply(503), Reply(503), Reply(503)]
    errors = Recorder()
    client = HttpClient(
        where="Thing at test",
        error=errors,
        timeout_s=5.0,
        retry=RetryPolicy(retries=5, backoff_s=0.2),
    )
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=r"did not answer within 0\.3s"):
        client.request("GET", server.url + "/api", budget_s=0.3)
    assert time.monotonic() - started < 2.0
    assert errors.failures[-1].kind == "budget"


def test_the_request_deadline_bounds_each_attempt(server: Server) -> None:
    server.replies = [Reply(delay_s=3.0)]
    errors, sleeps = Recorder(), list[float]()
    client = _client(errors, sleeps, timeout_s=30.0)
    with deadline(0.3), pytest.raises(UpstreamError, match=r"did not answer within 0\.[23]"):
        client.request("GET", server.url + "/slow")
    with deadline(0.01), pytest.raises(DeadlineExceeded):
        client.request("GET", server.url + "/never-sent")
    assert len(server.seen) == 1
