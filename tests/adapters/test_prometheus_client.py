"""PrometheusClient against a scripted Prometheus served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import gc
import itertools
import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from plugin_backend.adapters.prometheus import PrometheusClient, split_range
from plugin_backend.config import Settings
from plugin_backend.errors import (
    BackendError,
    InvalidQuery,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeout,
)
from plugin_backend.ports import SeriesSource
from plugin_backend.types import TimeRange

# --- the scripted Prometheus ------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]


STALL_BODY = b"stall-the-body"
Reply = tuple[int, Any]  # (status, body): dict/list -> JSON, str -> text/html
Handler = Callable[[Seen], Reply]


def ok(data: Any, **extra: Any) -> Reply:
    return 200, {"status": "success", "data": data, **extra}


def err(status: int, error_type: str, message: str) -> Reply:
    return status, {"status": "error", "errorType": error_type, "error": message}


def matrix(*series: tuple[dict[str, str], list[list[Any]]]) -> Reply:
    result = [{"metric": m, "values": v} for m, v in series]
    return ok({"resultType": "matrix", "result": result})


class FakePrometheus:
    def __init__(self) -> None:
        self.routes: dict[str, Handler | list[Reply]] = {}
        self.seen: list[Seen] = []
        self.release = threading.Event()  # ends slow handlers at teardown
        self.url = ""

    def on(self, path: str, *replies: Reply, handler: Handler | None = None) -> None:
        """Answer ``path`` with ``replies`` in order (the last one repeats) or ``handler``."""
        self.routes[path] = handler if handler is not None else list(replies)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def answer(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        route = self.routes.get(seen.path)
        if route is None:
            return 404, "404 page not found\n"
        if callable(route):
            return route(seen)
        return route.pop(0) if len(route) > 1 else route[0]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        form = parse_qs(body or parts.query, keep_blank_values=True)
        seen = Seen(self.command, parts.path, dict(self.headers.items()), form)
        status, payload = self.server.fake.answer(seen)
        if isinstance(payload, dict | list):
            raw, ctype = json.dumps(payload).encode(), "application/json"
        else:
            raw, ctype = str(payload).encode(), "text/html"
        stall = STALL_BODY in raw  # send headers and half the body, then go quiet
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw[: len(raw) // 2] if stall else raw)
            if stall:
                self.wfile.flush()
                self.server.fake.release.wait(3)
        except OSError:  # the client gave up (timeout tests)
            pass

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    block_on_close = False
    fake: FakePrometheus

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    fake.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client(prom: FakePrometheus, sleeps: list[float] | None = None, **kw: Any) -> PrometheusClient:
    kw.setdefault("base_url", prom.url)
    c = PrometheusClient(**kw)
    c.sleep = (sleeps if sleeps is not None else []).append
    return c


def grid_handler(seen: Seen) -> Reply:
    """query_range that evaluates two series on the requested grid (value = timestamp)."""
    start, end, step = (float(seen.form[k][0]) for k in ("start", "end", "step"))
    n = math.floor((end - start) / step + 1e-9) + 1
    ts = [start + k * step for k in range(n)]
    a = [[t, repr(t)] for t in ts]
    b = [[t, "NaN"] for t in ts]
    return matrix(({"__name__": "up", "job": "a"}, a), ({"__name__": "up", "job": "b"}, b))


# --- split_range --------------------------------------------------------------


def test_split_range_single_chunk_when_it_fits() -> None:
    assert split_range(0, 3600, 15, 11_000) == [(0, 3600)]
    assert split_range(0, 10_999, 1, 11_000) == [(0, 10_999)]  # exactly 11,000 points


def test_split_range_exact_boundaries() -> None:
    assert split_range(0, 11_000, 1, 11_000) == [(0, 10_999), (11_000, 11_000)]
    assert split_range(100, 25_100, 1, 11_000) == [
        (100, 11_099),
        (11_100, 22_099),
        (22_100, 25_100),
    ]


@pytest.mark.parametrize(
    ("start", "end", "step", "max_points"),
    [
        (0, 86_400, 1, 11_000),
        (1_700_000_000.5, 1_700_086_400.5, 0.5, 11_000),
        (0, 100_000.7, 3, 11_000),  # end off the step grid
        (0, 99, 1, 10),
        (1_700_000_000, 1_700_604_800, 15, 11_000),
    ],
)
def test_split_range_covers_grid_without_gap_or_overlap(
    start: float, end: float, step: float, max_points: int
) -> None:
    chunks = split_range(start, end, step, max_points)
    points = [math.floor((b - a) / step + 1e-9) + 1 for a, b in chunks]
    assert all(p <= max_points for p in points)
    assert sum(points) == math.floor((end - start) / step + 1e-9) + 1
    assert chunks[0][0] == start
    assert chunks[-1][1] == end
    for (_, prev_end), (next_start, _) in itertools.pairwise(chunks):
        assert next_start == pytest.approx(prev_end + step)  # next grid point: no gap
        assert (next_start - start) / step == pytest.approx(round((next_start - start) / step))


def test_split_range_rejects_non_positive_step() -> None:
    with pytest.raises(InvalidQuery):
        split_range(0, 10, 0, 11_000)


# --- query_range ----------------------------------------------------------------


def test_24h_at_1s_is_split_and_joined(prom: FakePrometheus) -> None:
    prom.on("/api/v1/query_range", handler=grid_handler)
    start = 1_700_000_000.0
    got = client(prom).query_range("up", TimeRange(start, start + 86_400), 1)

    assert len(prom.seen) == 8  # 86,401 points / 11,000 per request
    sent = [(float(s.form["start"][0]), float(s.form["end"][0])) for s in prom.seen]
    assert sent == split_range(start, start + 86_400, 1, 11_000)
    assert {s.method for s in prom.seen} == {"POST"}
    assert [s.labels["job"] for s in got] == ["a", "b"]
    expected = start + np.arange(86_401, dtype=np.float64)
    for series in got:
        np.testing.assert_array_equal(series.timestamps_s, expected)
    np.testing.assert_array_equal(got[0].values, expected)
    assert np.isnan(got[1].values).all()


def test_join_drops_duplicate_boundaries_and_keeps_late_series(prom: FakePrometheus) -> None:
    def overlapping(seen: Seen) -> Reply:  # answers one step before start as well
        start, end = float(seen.form["start"][0]), float(seen.form["end"][0])
        pts = [[t, "1"] for t in np.arange(start - 10, end + 1, 10).tolist()]
        series = [({"job": "a"}, pts)]
        if start >= 100:
            series.append(({"job": "late"}, pts))
        return matrix(*series)

    prom.on("/api/v1/query_range", handler=overlapping)
    got = client(prom, max_points_per_request=5).query_range("x", TimeRange(0, 190), 10)
    assert len(prom.seen) == 4
    a, late = got
    np.testing.assert_array_equal(a.timestamps_s, np.arange(-10, 200, 10))
    assert late.labels == {"job": "late"}
    np.testing.assert_array_equal(late.timestamps_s, np.arange(90, 200, 10))


def test_special_values_are_parsed(prom: FakePrometheus) -> None:
    pts = [[1, "1.5"], [2, "NaN"], [3, "+Inf"], [4, "-Inf"], [5, "1e3"]]
    prom.on("/api/v1/query_range", matrix(({"__name__": "m"}, pts)))
    (s,) = client(prom).query_range("m", TimeRange(1, 5), 1)
    assert prom.paths() == ["/api/v1/query_range"]
    assert s.values.dtype == np.float64
    assert s.values[0] == 1.5
    assert math.isnan(s.values[1])
    assert s.values[2] == math.inf
    assert s.values[3] == -math.inf
    assert s.values[4] == 1000.0
    np.testing.assert_array_equal(s.timestamps_s, [1, 2, 3, 4, 5])


def test_query_range_form_and_other_result_types(prom: FakePrometheus) -> None:
    expr = 'sum by (job) (rate(http_requests_total{code=~"5.."}[5m]))'
    prom.on(
        "/api/v1/query_range",
        ok({"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [10, "2"]}]}),
        ok({"resultType": "scalar", "result": [10, "+Inf"]}),
        ok({"resultType": "string", "result": [10, "not a number"]}),
    )
    c = client(prom)
    (vec,) = c.query_range(expr, TimeRange(0, 60), 15)
    (scalar,) = c.query_range(expr, TimeRange(0, 60), 15)
    (string,) = c.query_range(expr, TimeRange(0, 60), 15)
    assert prom.paths() == ["/api/v1/query_range"] * 3
    form = prom.seen[0].form
    assert form["query"] == [expr]
    assert form["step"] == ["15"]
    assert prom.seen[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(vec.labels) == {"a": "1"}
    assert vec.values.tolist() == [2.0]
    assert dict(scalar.labels) == {}
    assert scalar.values.tolist() == [math.inf]
    assert dict(string.labels) == {}
    assert math.isnan(string.values[0])


def test_query_instant(prom: FakePrometheus) -> None:
    result = [{"metric": {"job": j}, "value": [100, v]} for j, v in (("a", "1"), ("b", "NaN"))]
    prom.on("/api/v1/query", ok({"resultType": "vector", "result": result}))
    got = client(prom).query("up", 100.5)
    assert prom.paths() == ["/api/v1/query"]
    assert prom.seen[0].form["time"] == ["100.500"]
    assert [len(s) for s in got] == [1, 1]
    assert got[0].values[0] == 1
    assert math.isnan(got[1].values[0])


# --- metadata -------------------------------------------------------------------


def test_series_labels_and_label_values(prom: FakePrometheus) -> None:
    prom.on("/api/v1/series", ok([{"__name__": "up", "job": "a"}]))
    prom.on("/api/v1/labels", ok(["job", "__name__", "instance"]))
    prom.on("/api/v1/label/__name__/values", ok(["up", "go_goroutines"]))
    c = client(prom)
    tr = TimeRange(10, 20)
    assert c.series(["up", '{job="a"}'], tr) == [{"__name__": "up", "job": "a"}]
    assert prom.seen[0].form == {
        "match[]": ["up", '{job="a"}'],
        "start": ["10.000"],
        "end": ["20.000"],
    }
    assert c.labels() == ["__name__", "instance", "job"]
    assert c.label_values("__name__", ["up"]) == ["go_goroutines", "up"]
    assert prom.paths() == ["/api/v1/series", "/api/v1/labels", "/api/v1/label/__name__/values"]
    assert prom.seen[2].method == "GET"
    assert prom.seen[2].form == {"match[]": ["up"]}


def test_series_needs_a_matcher_and_label_names_are_checked(prom: FakePrometheus) -> None:
    c = client(prom)
    with pytest.raises(InvalidQuery, match="at least one series matcher"):
        c.series([])
    with pytest.raises(InvalidQuery):
        c.label_values("job/../../admin")
    assert prom.seen == []


# --- connection settings ----------------------------------------------------------


def test_bearer_token_and_custom_headers_on_every_request(prom: FakePrometheus) -> None:
    prom.on("/api/v1/labels", ok([]))
    prom.on("/api/v1/query", ok({"resultType": "vector", "result": []}))
    c = client(prom, bearer_token="tok-123", headers={"X-Scope-OrgID": "tenant-1"})
    c.labels()
    c.query("up", 1)
    assert prom.paths() == ["/api/v1/labels", "/api/v1/query"]
    for seen in prom.seen:
        assert seen.headers["Authorization"] == "Bearer tok-123"
        assert seen.headers["X-Scope-OrgID"] == "tenant-1"


def test_answers_are_asked_uncompressed_unless_gzip_is_enabled(prom: FakePrometheus) -> None:
    prom.on("/api/v1/labels", ok([]))
    client(prom).labels()
    client(prom, accept_gzip=True).labels()
    assert [seen.headers["Accept-Encoding"] for seen in prom.seen] == ["identity", "gzip"]


def test_basic_auth_and_path_prefix(prom: FakePrometheus) -> None:
    prom.on("/prometheus/api/v1/labels", ok(["job"]))
    c = client(prom, base_url=prom.url + "/prometheus/", username="alice", password="s3cret")
    assert c.labels() == ["job"]
    assert prom.paths() == ["/prometheus/api/v1/labels"]
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert prom.seen[0].headers["Authorization"] == expected


def test_credentials_in_url_are_used_but_never_shown(prom: FakePrometheus) -> None:
    prom.on("/api/v1/labels", ok([]))
    url = prom.url.replace("http://", "http://bob:pa55word@")
    c = client(prom, base_url=url)
    c.labels()
    assert prom.paths() == ["/api/v1/labels"]
    assert (
        prom.seen[0].headers["Authorization"]
        == "Basic " + base64.b64encode(b"bob:pa55word").decode()
    )
    assert c.describe() == f"Prometheus API at {prom.url} (basic auth)"
    token = client(prom, bearer_token="tok-secret", headers={"X-Scope-OrgID": "t"})
    assert "tok-secret" not in token.describe()
    assert "pa55word" not in c.describe()


def test_from_settings_unwraps_secrets(prom: FakePrometheus) -> None:
    prom.on("/api/v1/labels", ok([]))
    settings = Settings(
        prometheus_url=prom.url,
        prometheus_bearer_token="from-settings",
        prometheus_headers={"X-Scope-OrgID": "t1"},
    )
    c = PrometheusClient.from_settings(settings)
    assert isinstance(c, SeriesSource)
    assert c.kind == "prometheus"
    c.labels()
    assert prom.seen[0].headers["Authorization"] == "Bearer from-settings"
    assert prom.seen[0].headers["X-Scope-OrgID"] == "t1"
    assert prom.paths() == ["/api/v1/labels"]
    c.close()


# --- retries and errors -------------------------------------------------------------


def test_retry_on_503_then_success(prom: FakePrometheus, sleeps: list[float]) -> None:
    prom.on(
        "/api/v1/labels",
        (503, "<html>upstream unavailable</html>"),
        err(503, "unavailable", "starting up"),
        ok(["job"]),
    )
    assert client(prom, sleeps, retries=2).labels() == ["job"]
    assert len(prom.seen) == 3
    assert sleeps == [0.25, 0.5]


def test_no_retry_on_400(prom: FakePrometheus, sleeps: list[float]) -> None:
    prom.on("/api/v1/query", err(400, "bad_data", 'parse error: unexpected "}"'))
    with pytest.raises(InvalidQuery, match="Prometheus rejected the query: parse error") as info:
        client(prom, sleeps).query("up}", 1)
    assert info.value.http_status == 400
    assert len(prom.seen) == 1
    assert sleeps == []


def test_retries_exhausted(prom: FakePrometheus, sleeps: list[float]) -> None:
    prom.on("/api/v1/query", err(500, "internal", "out of disk"))
    with pytest.raises(PrometheusError, match="HTTP 500 after 3 attempts") as info:
        client(prom, sleeps, retries=2).query("up", 1)
    assert "out of disk" in info.value.message
    assert type(info.value) is PrometheusError
    assert info.value.http_status == 502
    assert len(prom.seen) == 3
    assert len(sleeps) == 2


def test_query_timeout_503_is_not_retried(prom: FakePrometheus, sleeps: list[float]) -> None:
    prom.on("/api/v1/query_range", err(503, "timeout", "query timed out in expression evaluation"))
    with pytest.raises(PrometheusTimeout):
        client(prom, sleeps).query_range("up", TimeRange(0, 60), 15)
    assert len(prom.seen) == 1


def test_connection_refused_names_the_url(sleeps: list[float]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    c = PrometheusClient(base_url=url.replace("//", "//u:hunter2@"), retries=1)
    c.sleep = sleeps.append
    with pytest.raises(PrometheusError, match=f"cannot reach Prometheus at {url}") as info:
        c.labels()
    assert "refused" in info.value.message.lower()
    assert "hunter2" not in info.value.message
    assert sleeps == [0.25]


@pytest.mark.parametrize("stall", ["before headers", "in the body"])
def test_slow_server_times_out_without_retry(
    prom: FakePrometheus, sleeps: list[float], stall: str
) -> None:
    def slow(seen: Seen) -> Reply:
        if stall == "in the body":
            return ok([STALL_BODY.decode(), "x" * 1000])
        prom.release.wait(3)
        return ok([])

    prom.on("/api/v1/labels", handler=slow)
    with pytest.raises(PrometheusTimeout, match=r"did not answer within 0\.2s") as info:
        client(prom, sleeps, timeout_s=0.2).labels()
    assert info.value.http_status == 504
    assert len(prom.seen) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("status", "error_type", "exc_type", "http_status"),
    [
        (400, "bad_data", InvalidQuery, 400),
        (422, "execution", PrometheusQueryError, 422),
        (503, "timeout", PrometheusTimeout, 504),
        (499, "canceled", PrometheusTimeout, 504),
        (500, "internal", PrometheusError, 502),
    ],
)
def test_error_type_mapping(
    prom: FakePrometheus,
    status: int,
    error_type: str,
    exc_type: type[BackendError],
    http_status: int,
) -> None:
    prom.on("/api/v1/query", err(status, error_type, "the message"))
    with pytest.raises(exc_type) as info:
        client(prom, retries=0).query("up", 1)
    assert type(info.value) is exc_type
    assert info.value.http_status == http_status
    assert "the message" in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "needle"),
    [
        (401, "no org id", "authentication to Prometheus failed (HTTP 401"),
        (403, "forbidden", "authentication to Prometheus failed (HTTP 403"),
        (404, "404 page not found", "does not look like a Prometheus API"),
        (200, "<html><body>Grafana login</body></html>", "not a Prometheus API response"),
        (200, {"hello": "world"}, "not a Prometheus API response"),
    ],
)
def test_http_failures_are_named(prom: FakePrometheus, status: int, body: Any, needle: str) -> None:
    prom.on("/api/v1/labels", (status, body))
    with pytest.raises(PrometheusError) as info:
        client(prom, bearer_token="tok-xyz").labels()
    assert needle in info.value.message
    assert "tok-xyz" not in info.value.message


def test_html_error_page_is_summarised(prom: FakePrometheus) -> None:
    page = "<html>\n  <head><title>502 Bad Gateway</title></head>\n" + "x" * 500 + "</html>"
    prom.on("/api/v1/labels", (502, page))
    with pytest.raises(PrometheusError) as info:
        client(prom, retries=0).labels()
    message = info.value.message
    assert "HTTP 502" in message
    assert "<html> <head><title>502 Bad Gateway</title></head>" in message
    assert "x" * 201 not in message
    assert "\n" not in message


# --- readiness, observer, warnings -------------------------------------------------


def test_check_ready(prom: FakePrometheus, sleeps: list[float]) -> None:
    prom.on(
        "/api/v1/query",
        ok({"resultType": "scalar", "result": [1, "1"]}),
        err(503, "unavailable", "down"),
    )
    c = client(prom, sleeps, retries=3)
    c.check_ready(1.0)
    assert prom.seen[0].form["query"] == ["vector(1)"]
    with pytest.raises(PrometheusError, match="HTTP 503"):
        c.check_ready(1.0)
    assert len(prom.seen) == 2
    assert sleeps == []


def test_observer_sees_each_call(prom: FakePrometheus) -> None:
    calls: list[tuple[str, float, str | None]] = []
    prom.on("/api/v1/query_range", handler=grid_handler)
    prom.on("/api/v1/query", err(400, "bad_data", "nope"))
    c = client(prom, observer=lambda *a: calls.append(a), max_points_per_request=3)
    c.query_range("up", TimeRange(0, 100), 10)  # 4 requests, one observation
    with pytest.raises(InvalidQuery):
        c.query("up{", 1)
    with pytest.raises(PrometheusError):
        c.check_ready(1.0)
    assert prom.paths() == ["/api/v1/query_range"] * 4 + ["/api/v1/query"] * 2
    assert [(op, code) for op, _, code in calls] == [
        ("query_range", None),
        ("query", "invalid_query"),
        ("ready", "prometheus_unavailable"),
    ]
    assert all(d >= 0 for _, d, _ in calls)
    assert gc.isenabled()  # decoding pauses the cyclic GC and always resumes it


def test_warnings_are_logged_at_debug(
    prom: FakePrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    prom.on("/api/v1/labels", ok(["a"], warnings=["results truncated"]))
    with caplog.at_level(logging.DEBUG, logger="plugin_backend.adapters.prometheus"):
        client(prom).labels()
    assert prom.paths() == ["/api/v1/labels"]
    assert "results truncated" in caplog.text


def test_metric_types_from_metadata(prom: FakePrometheus) -> None:
    prom.on(
        "/api/v1/metadata",
        ok(
            {
                "requests_served": [{"type": "counter", "help": "h", "unit": ""}],
                "temperature": [{"type": "gauge", "help": "", "unit": "celsius"}],
                "odd": [],
            }
        ),
    )
    assert client(prom).metric_types() == {"requests_served": "counter", "temperature": "gauge"}
    assert prom.paths() == ["/api/v1/metadata"]
    assert prom.seen[0].method == "GET"
