"""A fake Grafana HTTP API (annotations and health) for tests of annotation delivery.

Grafana cannot run on the test machines, so the code that POSTs annotations to
Grafana's ``/api/annotations`` is tested against this fake: real HTTP on
127.0.0.1 (werkzeug, threaded, in a daemon thread), written to Grafana's Swagger
contract for the annotation operations and, where the contract is silent, to
what Grafana's server code does:

* Auth on every ``/api/...`` route except ``/api/health``: ``Authorization:
  Bearer <service-account token>``. A token belongs to one org;
  ``X-Grafana-Org-Id`` may name it, another org answers 401 (as Grafana does
  for service-account tokens). Annotations are stored per org.
* Bodies are bound like Grafana's JSON binding: a wrong type answers 400 naming
  the field; null means absent. Tags are stored as Grafana stores them
  (``key:value`` pairs trimmed and deduplicated; text after a second ``:`` is
  dropped), and their JSON length is capped (``max_tags_length``, Grafana's 500).
* Find filters and order are those of Grafana's SQL store: ``from``/``to`` only
  when both are given (overlap of ``[time, timeEnd]``), a tag without a value
  matches on its key, newest ``timeEnd`` (then ``time``) first, limit 100.
* PUT replaces ``text`` and ``tags`` but keeps ``time``/``timeEnd``/``data``
  when absent; PATCH changes only what is given (Grafana's handlers).

Fault injection, thread-safe and settable while serving: :meth:`FakeGrafana.fail_next`,
:meth:`~FakeGrafana.fail_for`, :meth:`~FakeGrafana.delay`,
:meth:`~FakeGrafana.store_then_hang` (the write is stored, the answer never
comes in time) and :meth:`~FakeGrafana.down` / :meth:`~FakeGrafana.up` (same port).
Tests inspect :meth:`~FakeGrafana.annotations` and :attr:`~FakeGrafana.requests`.

Usage::

    with FakeGrafana(token="t") as grafana:
        requests.post(f"{grafana.url}/api/annotations", json={"text": "deploy"},
                      headers=grafana.auth_headers)
        assert grafana.annotations()[0]["text"] == "deploy"

or as a process: ``python -m testkit.fakegrafana --port 3000 --token T``
prints one JSON line with the URL and serves until SIGTERM/SIGINT.

Tooling only: never imported by the service at run time.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import http
import json
import re
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "DEFAULT_FIND_LIMIT",
    "DEFAULT_MAX_TAGS_LENGTH",
    "FIND_QUERY_PARAMS",
    "FakeGrafana",
    "RecordedRequest",
    "main",
]

JsonObject = dict[str, Any]

#: Query parameters of ``GET /api/annotations`` that the fake understands (all of the contract's).
FIND_QUERY_PARAMS = (
    "from",
    "to",
    "userId",
    "alertId",
    "dashboardId",
    "dashboardUID",
    "panelId",
    "limit",
    "tags",
    "type",
    "matchAny",
)
DEFAULT_FIND_LIMIT = 100
DEFAULT_MAX_TAGS_LENGTH = 500  # Grafana's [annotations] tags_length default

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_GO_INT_RE = re.compile(r"[+-]?[0-9]+")
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # strconv.ParseBool
_ANNOTATION_ID_PATH_RE = re.compile(r"/api/annotations/([^/]+)")
_ANNOTATIONS_PREFIX = "/api/annotations"
_HEALTH = {"database": "ok", "version": "fake"}
_NOT_IMPLEMENTED = frozenset({"/api/annotations/graphite", "/api/annotations/mass-delete"})

# Fields of Grafana's command structs, by JSON type (others in a body are ignored, as in Go).
_POST_INTS = ("dashboardId", "panelId", "time", "timeEnd")
_POST_STRINGS = ("dashboardUID", "text")
_UPDATE_INTS = ("id", "time", "timeEnd")  # UpdateAnnotationsCmd and PatchAnnotationsCmd
_UPDATE_STRINGS = ("text",)
_EPOCH_FIELDS = frozenset({"time", "timeEnd"})


# ------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One request the fake received (:attr:`FakeGrafana.requests` hands out copies).

    ``headers`` holds every request header, the Authorization value cut to its
    scheme (``"Bearer <redacted>"``). ``body`` is the parsed JSON (None when
    empty or not JSON). ``org_id`` is the org the request was served for (None
    when it was not authenticated). ``status`` is None while the request is in
    flight. ``fault`` names the injected fault that shaped the answer:
    ``fail_next``, ``fail_for``, ``delay``, ``store_then_hang``, or
    ``delay:client-gone`` when the delayed client had left and the request was
    dropped unhandled (``status`` stays None).
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    has_authorization: bool
    org_id_header: str | None
    body: Any
    raw_body: bytes
    org_id: int | None = None
    status: int | None = None
    fault: str | None = None


@dataclass(frozen=True)
class _Identity:
    org_id: int
    user_id: int
    login: str


@dataclass
class _Annotation:
    id: int
    org_id: int
    user_id: int
    login: str
    dashboard_id: int
    dashboard_uid: str
    panel_id: int
    time: int
    time_end: int
    text: str
    tags: list[str]  # as answered (Grafana's annotation.tags column)
    tag_pairs: list[tuple[str, str]]  # as filtered on (Grafana's annotation_tag rows)
    data: JsonObject
    created: int
    updated: int

    def to_json(self) -> JsonObject:
        """The contract's ``Annotation`` object, every field present."""
        return {
            "id": self.id,
            "alertId": 0,
            "alertName": "",
            "dashboardId": self.dashboard_id,
            "dashboardUID": self.dashboard_uid,
            "panelId": self.panel_id,
            "userId": self.user_id,
            "newState": "",
            "prevState": "",
            "created": self.created,
            "updated": self.updated,
            "time": self.time,
            "timeEnd": self.time_end,
            "text": self.text,
            "tags": list(self.tags),
            "login": self.login,
            "email": "",
            "avatarUrl": "",
            "data": copy.deepcopy(self.data),
        }


@dataclass
class _Faults:
    fail_next: int = 0
    fail_next_status: int = 503
    fail_next_retry_after: int | None = None
    fail_next_prefix: str = _ANNOTATIONS_PREFIX
    fail_until: float = 0.0  # time.monotonic()
    fail_for_status: int = 503
    fail_for_retry_after: int | None = None
    fail_for_prefix: str = _ANNOTATIONS_PREFIX
    delay_s: float = 0.0
    delay_prefix: str = _ANNOTATIONS_PREFIX
    hang_next: int = 0
    hang_s: float = 0.0


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# ------------------------------------------------------------ Grafana's semantics


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _bad_request(detail: str) -> _HttpError:
    return _HttpError(400, f"bad request data: {detail}")


def _bind_cmd(body: Any, ints: Sequence[str], strings: Sequence[str]) -> JsonObject:
    """A command from a JSON body, typed like Go's decoder (null is absent)."""
    if not isinstance(body, dict):
        raise _bad_request(f"the body must be a JSON object, got {_json_type(body)}")
    cmd: JsonObject = {}
    for key in ints:
        value = body.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not _INT64_MIN <= value <= _INT64_MAX
        ):
            unit = " (epoch milliseconds)" if key in _EPOCH_FIELDS else ""
            raise _bad_request(
                f"field '{key}' must be a 64-bit integer{unit}, got {_json_type(value)} {value!r}"
            )
        cmd[key] = value
    for key in strings:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _bad_request(f"field '{key}' must be a string, got {_json_type(value)}")
        cmd[key] = value
    cmd.update(_bind_tags_and_data(body))
    return cmd


def _bind_tags_and_data(body: JsonObject) -> JsonObject:
    cmd: JsonObject = {}
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, list):
            raise _bad_request(f"field 'tags' must be an array of strings, got {_json_type(tags)}")
        for i, tag in enumerate(tags):
            if not isinstance(tag, str):
                raise _bad_request(f"field 'tags[{i}]' must be a string, got {_json_type(tag)}")
        cmd["tags"] = list(tags)
    data = body.get("data")
    if data is not None:
        if not isinstance(data, dict):
            raise _bad_request(f"field 'data' must be a JSON object, got {_json_type(data)}")
        cmd["data"] = copy.deepcopy(data)
    return cmd


def _parse_tag_pairs(tags: Iterable[str]) -> list[tuple[str, str]]:
    """Grafana's tag.ParseTagPairs: ``key[:value]``, spaces trimmed, empty keys and
    duplicates dropped; only the text between the first and second ``:`` is the value."""
    pairs: list[tuple[str, str]] = []
    for tag in tags:
        if ":" in tag:
            parts = tag.split(":")
            pair = (parts[0].strip(" "), parts[1].strip(" "))
        else:
            pair = (tag.strip(" "), "")
        if pair[0] and pair not in pairs:
            pairs.append(pair)
    return pairs


def _join_tag_pairs(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{key}:{value}" if value else key for key, value in pairs]


def _tags_json_length(tags: Sequence[str]) -> int:
    """Grafana's estimate of the tags column length: ``["a","b"]`` in UTF-8 bytes."""
    return 2 + sum(len(tag.encode()) + 2 for tag in tags) + max(len(tags) - 1, 0)


def _time_range(epoch: int, epoch_end: int) -> tuple[int, int]:
    """Grafana's validateTimeRange (callers never pass both as 0)."""
    if epoch_end == 0:
        epoch_end = epoch
    if epoch == 0:
        epoch = epoch_end
    return (epoch_end, epoch) if epoch_end < epoch else (epoch, epoch_end)


def _go_int(text: str | None) -> int | None:
    """strconv.ParseInt(text, 10, 64); None where Go fails."""
    if text is None or not _GO_INT_RE.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _tags_match(
    pairs: Sequence[tuple[str, str]], wanted: Sequence[tuple[str, str]], *, match_any: bool
) -> bool:
    """Grafana's SQL: count the annotation's tags matching any wanted (key, or key and
    value); ``matchAny`` needs one, otherwise the count must equal the wanted count."""
    hits = sum(
        1
        for key, value in pairs
        if any(key == w_key and (not w_value or value == w_value) for w_key, w_value in wanted)
    )
    return hits > 0 if match_any else hits == len(wanted)


def _peer_closed(conn: socket.socket) -> bool:
    """Whether the client has closed its end (EOF readable, nothing else sent)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without the per-request log lines."""

    protocol_version = "HTTP/1.1"  # what make_server picks for threaded servers

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


# --------------------------------------------------------------------------- fake


class FakeGrafana:
    """Grafana's annotation API and health endpoint on ``host`` (context manager).

    ``token`` is a service-account token of org ``org_id`` (:meth:`add_token`
    adds more). ``port=0`` picks a free port at the first start; :meth:`down` /
    :meth:`up` and a later :meth:`start` keep it, so :attr:`url` stays valid.
    ``clock`` gives Unix seconds (``created``/``updated``, and ``time`` when absent).
    """

    def __init__(
        self,
        token: str,
        org_id: int = 1,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        login: str = "sa-fake-grafana",
        max_tags_length: int = DEFAULT_MAX_TAGS_LENGTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = token
        self._org_id = org_id
        self._host = host
        self._port = port
        self._max_tags_length = max_tags_length
        self._clock = clock
        self._lock = threading.Lock()  # guards everything below that handlers touch
        self._tokens: dict[str, _Identity] = {}
        self._next_user_id = 2  # 1 is Grafana's admin
        self._store: dict[int, dict[int, _Annotation]] = {}
        self._next_id = 1
        self._records: list[RecordedRequest] = []
        self._faults = _Faults()
        self._wake = threading.Event()  # set by down()/stop(): ends injected waits
        self._connections: set[socket.socket] = set()
        self._listening = False
        self._lifecycle = threading.Lock()  # serialises start/stop/down/up
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self.add_token(token, org_id, login=login)

    # -- properties

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the port is fixed at the first start)."""
        if self._port == 0:
            raise RuntimeError("FakeGrafana has no port yet: call start() first")
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def token(self) -> str:
        return self._token

    @property
    def org_id(self) -> int:
        return self._org_id

    @property
    def auth_headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for the constructor's token."""
        return {"Authorization": f"Bearer {self._token}"}

    @property
    def is_up(self) -> bool:
        """Whether the listener accepts connections (False before start, after down/stop)."""
        with self._lock:
            return self._listening

    # -- inspection

    def add_token(self, token: str, org_id: int, *, login: str | None = None) -> None:
        """Accept ``token`` as a service-account token of ``org_id``."""
        if not token:
            raise ValueError("token must be non-empty")
        with self._lock:
            user_id = self._next_user_id
            self._next_user_id += 1
            self._tokens[token] = _Identity(org_id, user_id, login or f"sa-{user_id}")

    def annotations(self, org_id: int | None = None) -> list[JsonObject]:
        """Copies of the stored annotations of ``org_id`` (default: the token's org),
        oldest id first, each as ``GET /api/annotations/{id}`` answers it."""
        org = self._org_id if org_id is None else org_id
        with self._lock:
            items = sorted(self._store.get(org, {}).values(), key=lambda a: a.id)
            return [a.to_json() for a in items]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Copies of the recorded requests, in arrival order."""
        with self._lock:
            return copy.deepcopy(self._records)

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()

    def seed(self, body: Mapping[str, Any], *, org_id: int | None = None) -> int:
        """Store an annotation as ``POST /api/annotations`` would (no HTTP, no faults);
        returns its id. Raises ValueError where the POST would answer 400."""
        org = self._org_id if org_id is None else org_id
        with self._lock:
            identity = self._tokens[self._token]
        try:
            return self._create(dict(body), _Identity(org, identity.user_id, identity.login))
        except _HttpError as exc:
            raise ValueError(exc.message) from None

    def reset(self) -> None:
        """Forget annotations, recorded requests and faults (ids keep counting)."""
        with self._lock:
            self._store.clear()
            self._records.clear()
            self._faults = _Faults()

    # -- faults

    def fail_next(
        self,
        n: int,
        status: int = 503,
        retry_after: int | None = None,
        *,
        path_prefix: str = _ANNOTATIONS_PREFIX,
    ) -> None:
        """The next ``n`` requests under ``path_prefix`` answer ``status`` with a JSON
        message (and ``Retry-After: <retry_after>`` when given), changing nothing.
        The default prefix spares ``/api/health``; pass ``"/api"`` to include it."""
        _check_count(n)
        _check_status(status)
        with self._lock:
            self._faults.fail_next = n
            self._faults.fail_next_status = status
            self._faults.fail_next_retry_after = retry_after
            self._faults.fail_next_prefix = path_prefix

    def fail_for(
        self,
        seconds: float,
        status: int = 503,
        retry_after: int | None = None,
        *,
        path_prefix: str = _ANNOTATIONS_PREFIX,
    ) -> None:
        """Like :meth:`fail_next`, for every request in the next ``seconds``."""
        _check_seconds(seconds)
        _check_status(status)
        with self._lock:
            self._faults.fail_until = time.monotonic() + seconds
            self._faults.fail_for_status = status
            self._faults.fail_for_retry_after = retry_after
            self._faults.fail_for_prefix = path_prefix

    def delay(self, seconds: float, *, path_prefix: str = _ANNOTATIONS_PREFIX) -> None:
        """Wait ``seconds`` before handling each request under ``path_prefix`` (until
        reset; 0 ends it). A request whose client has gone by then (read timeout) is
        dropped unhandled: nothing is stored."""
        _check_seconds(seconds)
        with self._lock:
            self._faults.delay_s = seconds
            self._faults.delay_prefix = path_prefix

    def store_then_hang(self, n: int, seconds: float) -> None:
        """The next ``n`` successful POST/PUT/PATCH on annotations apply their change,
        then wait ``seconds`` before answering: the client times out, the change stays."""
        _check_count(n)
        _check_seconds(seconds)
        with self._lock:
            self._faults.hang_next = n
            self._faults.hang_s = seconds

    def reset_faults(self) -> None:
        """Clear fail_next, fail_for, delay and store_then_hang (not :meth:`down`)."""
        with self._lock:
            self._faults = _Faults()

    def down(self) -> None:
        """Stop listening (connections are refused) and cut requests in flight."""
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("FakeGrafana is not started")
            self._unlisten()

    def up(self, timeout_s: float = 5.0) -> None:
        """Listen again on the same port after :meth:`down` (no-op when up)."""
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("FakeGrafana is not started")
            if self._server is None:
                self._listen(timeout_s)

    # -- lifecycle

    def start(self, timeout_s: float = 5.0) -> Self:
        """Bind (retrying up to ``timeout_s`` while a fixed port is busy) and serve."""
        with self._lifecycle:
            if self._started:
                raise RuntimeError("FakeGrafana already started")
            self._listen(timeout_s)
            self._started = True
        return self

    def stop(self) -> None:
        """Stop serving and cut requests in flight; state is kept (start() again works)."""
        with self._lifecycle:
            self._unlisten()
            self._started = False

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _listen(self, timeout_s: float) -> None:
        sock = self._bind_socket(timeout_s)
        try:
            server = make_server(
                self._host,
                self._port,
                self._wsgi,
                threaded=True,
                request_handler=_QuietHandler,
                fd=sock.fileno(),
            )
        finally:
            sock.close()  # werkzeug serves a dup of it
        self._port = server.port
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"fakegrafana-{self._port}",
            daemon=True,
        )
        with self._lock:
            self._listening = True
        self._server, self._thread = server, thread
        thread.start()

    def _bind_socket(self, timeout_s: float) -> socket.socket:
        deadline = time.monotonic() + timeout_s
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self._host, self._port))
                sock.listen(128)
            except OSError as exc:
                sock.close()
                busy = exc.errno == errno.EADDRINUSE and self._port != 0
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
                continue
            return sock

    def _unlisten(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        with self._lock:
            self._listening = False
        if server is not None:
            server.shutdown()  # no more accepts; the serve thread then joins its handlers
        with self._lock:
            wake, self._wake = self._wake, threading.Event()
            connections = list(self._connections)
        wake.set()  # injected waits end now...
        for conn in connections:  # ...and their answers go nowhere
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=10)

    # -- HTTP

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        conn: socket.socket | None = environ.get("werkzeug.socket")
        raw = request.get_data(cache=True)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = request.headers.get("Authorization")
        headers = dict(request.headers.items())
        if auth is not None:
            headers["Authorization"] = f"{auth.partition(' ')[0]} <redacted>"
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query={key: request.args.getlist(key) for key in request.args},
            headers=headers,
            has_authorization=auth is not None,
            org_id_header=request.headers.get("X-Grafana-Org-Id"),
            body=body,
            raw_body=raw,
        )
        with self._lock:
            alive = self._listening
            if alive:
                self._records.append(record)
                if conn is not None:
                    self._connections.add(conn)
            wake = self._wake
        if not alive:  # accepted just before down(): as good as refused
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            return Response(status=503)(environ, start_response)
        try:
            response = self._respond(request, record, conn, wake)
        finally:
            if conn is not None:
                with self._lock:
                    self._connections.discard(conn)
        return response(environ, start_response)

    def _respond(
        self,
        request: Request,
        record: RecordedRequest,
        conn: socket.socket | None,
        wake: threading.Event,
    ) -> Response:
        path = request.path
        with self._lock:
            faults = self._faults
            delay_s = faults.delay_s if path.startswith(faults.delay_prefix) else 0.0
            if delay_s > 0:
                record.fault = "delay"
        if delay_s > 0:
            wake.wait(delay_s)
            if conn is not None and _peer_closed(conn):  # the client left: drop it unhandled
                with self._lock:
                    record.fault = "delay:client-gone"
                return Response(status=503)
        try:
            self._injected_failure(path, record)
            if path == "/api/health":
                return self._answer(record, 200, dict(_HEALTH))
            if not path.startswith("/api/"):
                raise _HttpError(404, "Not found")
            identity = self._authenticate(request)
            with self._lock:
                record.org_id = identity.org_id
            status, payload = self._route(request, record, identity, wake)
            return self._answer(record, status, payload)
        except _HttpError as exc:
            return self._answer(record, exc.status, {"message": exc.message}, exc.headers)

    def _answer(
        self,
        record: RecordedRequest,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        with self._lock:
            record.status = status
        return Response(
            json.dumps(payload),
            status=status,
            headers=dict(headers or {}),
            mimetype="application/json",
        )

    def _injected_failure(self, path: str, record: RecordedRequest) -> None:
        with self._lock:
            faults = self._faults
            if faults.fail_next > 0 and path.startswith(faults.fail_next_prefix):
                faults.fail_next -= 1
                record.fault = "fail_next"
                status, retry_after = faults.fail_next_status, faults.fail_next_retry_after
            elif time.monotonic() < faults.fail_until and path.startswith(faults.fail_for_prefix):
                record.fault = "fail_for"
                status, retry_after = faults.fail_for_status, faults.fail_for_retry_after
            else:
                return
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        raise _HttpError(status, _status_phrase(status), headers)

    def _authenticate(self, request: Request) -> _Identity:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _HttpError(401, "Unauthorized")
        with self._lock:
            identity = self._tokens.get(token.strip())
        if identity is None:
            raise _HttpError(401, "Invalid API key")
        org = _go_int(request.headers.get("X-Grafana-Org-Id"))
        if org and org != identity.org_id:  # absent, invalid or 0: the token's org
            raise _HttpError(401, "API key does not belong to the requested organization")
        return identity

    def _route(
        self,
        request: Request,
        record: RecordedRequest,
        identity: _Identity,
        wake: threading.Event,
    ) -> tuple[int, Any]:
        path, method = request.path, request.method
        if path == _ANNOTATIONS_PREFIX:
            if method == "GET":
                return 200, self._find(identity.org_id, request)
            if method == "POST":
                new_id = self._create(_json_body(request), identity)
                self._maybe_hang(record, wake)
                return 200, {"id": new_id, "message": "Annotation added"}
            raise _HttpError(405, "Method Not Allowed")
        if path == f"{_ANNOTATIONS_PREFIX}/tags":
            if method == "GET":
                return 200, self._find_tags(identity.org_id, request)
            raise _HttpError(405, "Method Not Allowed")
        if path in _NOT_IMPLEMENTED and method == "POST":
            raise _HttpError(501, f"{path} is not implemented by the fake Grafana")
        match = _ANNOTATION_ID_PATH_RE.fullmatch(path)
        if match is None:
            raise _HttpError(404, "Not found")
        return self._route_by_id(request, record, identity.org_id, wake, match.group(1))

    def _route_by_id(
        self,
        request: Request,
        record: RecordedRequest,
        org: int,
        wake: threading.Event,
        raw_id: str,
    ) -> tuple[int, Any]:
        method = request.method
        if method not in ("GET", "PUT", "PATCH", "DELETE"):
            raise _HttpError(405, "Method Not Allowed")
        cmd: JsonObject = {}
        if method in ("PUT", "PATCH"):  # Grafana binds the body before reading the id
            cmd = _bind_cmd(_json_body(request), _UPDATE_INTS, _UPDATE_STRINGS)
        annotation_id = _go_int(raw_id)
        if annotation_id is None:
            raise _HttpError(400, "annotationId is invalid")
        if method == "GET":
            with self._lock:
                return 200, self._get(org, annotation_id).to_json()
        if method == "DELETE":
            with self._lock:
                self._get(org, annotation_id)
                del self._store[org][annotation_id]
            return 200, {"message": "Annotation deleted"}
        if method == "PUT":
            self._update(org, annotation_id, cmd)
            message = "Annotation updated"
        else:
            self._patch(org, annotation_id, cmd)
            message = "Annotation patched"
        self._maybe_hang(record, wake)
        return 200, {"message": message}

    def _maybe_hang(self, record: RecordedRequest, wake: threading.Event) -> None:
        with self._lock:
            if self._faults.hang_next <= 0:
                return
            self._faults.hang_next -= 1
            seconds = self._faults.hang_s
            record.fault = "store_then_hang"
        wake.wait(seconds)

    # -- the store (Grafana's handlers and SQL store)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _get(self, org: int, annotation_id: int) -> _Annotation:
        """Caller holds the lock."""
        found = self._store.get(org, {}).get(annotation_id)
        if found is None:
            raise _HttpError(404, "Annotation not found")
        return found

    def _check_tags_length(self, tags: Sequence[str]) -> None:
        length = _tags_json_length(tags)
        if length > self._max_tags_length:
            raise _HttpError(
                400,
                f"Tags length exceeds the maximum allowed. ({length} > {self._max_tags_length})",
            )

    def _create(self, body: Any, identity: _Identity) -> int:
        cmd = _bind_cmd(body, _POST_INTS, _POST_STRINGS)
        text = cmd.get("text", "")
        if not text:
            raise _HttpError(400, "Failed to save annotation: text field should not be empty")
        pairs = _parse_tag_pairs(cmd.get("tags", []))
        tags = _join_tag_pairs(pairs)
        self._check_tags_length(tags)
        now = self._now_ms()
        epoch, epoch_end = _time_range(cmd.get("time") or now, cmd.get("timeEnd", 0))
        with self._lock:
            new_id = self._next_id
            self._next_id += 1
            self._store.setdefault(identity.org_id, {})[new_id] = _Annotation(
                id=new_id,
                org_id=identity.org_id,
                user_id=identity.user_id,
                login=identity.login,
                dashboard_id=cmd.get("dashboardId", 0),
                dashboard_uid=cmd.get("dashboardUID", ""),
                panel_id=cmd.get("panelId", 0),
                time=epoch,
                time_end=epoch_end,
                text=text,
                tags=tags,
                tag_pairs=pairs,
                data=cmd.get("data", {}),
                created=now,
                updated=now,
            )
        return new_id

    def _update(self, org: int, annotation_id: int, cmd: JsonObject) -> None:
        """PUT: text and tags replaced (absent: empty); time, timeEnd and data only when
        given. Without ``tags`` Grafana empties the answered tags but keeps the tag rows
        that filters match on; so does the fake."""
        raw_tags: list[str] | None = cmd.get("tags")
        self._check_tags_length(raw_tags or [])
        with self._lock:
            found = self._get(org, annotation_id)
            epoch = cmd.get("time") or found.time
            epoch_end = cmd.get("timeEnd") or found.time_end
            found.time, found.time_end = _time_range(epoch, epoch_end)
            found.text = cmd.get("text", "")
            found.tags = list(raw_tags or [])
            if raw_tags is not None:
                found.tag_pairs = _parse_tag_pairs(raw_tags)
            if "data" in cmd:
                found.data = cmd["data"]
            found.updated = self._now_ms()

    def _patch(self, org: int, annotation_id: int, cmd: JsonObject) -> None:
        """PATCH: only what is given (non-empty text, positive times) changes."""
        with self._lock:
            found = self._get(org, annotation_id)
            tags: list[str] = cmd["tags"] if "tags" in cmd else list(found.tags)
            self._check_tags_length(tags)
            epoch = cmd["time"] if cmd.get("time", 0) > 0 else found.time
            epoch_end = cmd["timeEnd"] if cmd.get("timeEnd", 0) > 0 else found.time_end
            found.time, found.time_end = _time_range(epoch, epoch_end)
            found.text = cmd.get("text") or found.text
            found.tags = list(tags)
            found.tag_pairs = _parse_tag_pairs(tags)
            if "data" in cmd:
                found.data = cmd["data"]
            found.updated = self._now_ms()

    def _find(self, org: int, request: Request) -> list[JsonObject]:
        args = request.args

        def query_int(name: str) -> int:
            return _go_int(args.get(name)) or 0

        start, end = query_int("from"), query_int("to")
        limit = query_int("limit") or DEFAULT_FIND_LIMIT
        wanted = _parse_tag_pairs(args.getlist("tags"))
        match_any = args.get("matchAny", "") in _GO_TRUE
        kind = args.get("type", "")
        dashboard_uid = args.get("dashboardUID", "")
        equal = {
            "dashboard_id": query_int("dashboardId"),
            "panel_id": query_int("panelId"),
            "user_id": query_int("userId"),
        }
        alert_id = query_int("alertId")
        with self._lock:
            items = list(self._store.get(org, {}).values())
            hits = [
                a
                for a in items
                if all(not want or getattr(a, attr) == want for attr, want in equal.items())
                and (not dashboard_uid or a.dashboard_uid == dashboard_uid)
                and not alert_id  # the fake stores no alert annotations
                and kind != "alert"
                and (start <= 0 or end <= 0 or (a.time <= end and a.time_end >= start))
                and (not wanted or _tags_match(a.tag_pairs, wanted, match_any=match_any))
            ]
            hits.sort(key=lambda a: (a.time_end, a.time, a.id), reverse=True)
            if limit > 0:
                hits = hits[:limit]
            return [a.to_json() for a in hits]

    def _find_tags(self, org: int, request: Request) -> JsonObject:
        needle = request.args.get("tag", "").lower()
        limit = _go_int(request.args.get("limit")) or DEFAULT_FIND_LIMIT
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for a in self._store.get(org, {}).values():
                for key, value in a.tag_pairs:
                    if needle in key.lower() or needle in value.lower():
                        counts[key, value] = counts.get((key, value), 0) + 1
        pairs = sorted(counts)[: max(limit, 0)]
        tags = [
            {"tag": tag, "count": counts[pair]}
            for pair, tag in zip(pairs, _join_tag_pairs(pairs), strict=True)
        ]
        return {"result": {"tags": tags}}


def _json_body(request: Request) -> Any:
    """The JSON body; an empty body binds as ``{}`` (Go's decoder stops at EOF)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"invalid JSON ({exc})") from None


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


def _check_seconds(seconds: float) -> None:
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")


def _check_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (4xx/5xx), got {status}")


# ---------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake Grafana until SIGTERM/SIGINT; print ``{"url": ...}`` once ready."""
    parser = argparse.ArgumentParser(
        prog="python -m testkit.fakegrafana",
        description="A fake Grafana annotations API for manual runs and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    parser.add_argument("--token", required=True, help="the accepted service-account token")
    parser.add_argument("--org-id", type=int, default=1, help="the token's org (default 1)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeGrafana(token=args.token, org_id=args.org_id, host=args.host, port=args.port)
    fake.start()
    try:
        print(json.dumps({"url": fake.url, "org_id": args.org_id}), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
