"""``SeriesSource`` over a Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir,
VictoriaMetrics).

Queries go as form-encoded POSTs (no URL length limit). Long ranges are split into
chunks of at most ``max_points_per_request`` steps on one step grid and joined per
label set. Transport goes through ``adapters/http.py``: connection errors and 5xx
answers are retried with exponential backoff; 4xx answers and read timeouts never are.
Every failure leaves as an exception from ``plugin_backend.errors``, with a message that
names the problem and no credentials; Prometheus's own error bodies (``errorType``)
are read here.
"""

from __future__ import annotations

import gc
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import numpy as np
import orjson

from plugin_backend import __version__
from plugin_backend.adapters.http import HttpAnswer, HttpClient, HttpFailure, RetryPolicy
from plugin_backend.errors import (
    BackendError,
    ConfigError,
    InvalidQuery,
    InvalidTimeRange,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeout,
)
from plugin_backend.types import FloatArray, Labels, Series, TimeRange

if TYPE_CHECKING:
    from plugin_backend.config import Settings

__all__ = ["Observer", "PrometheusClient", "split_range"]

logger = logging.getLogger(__name__)

Observer = Callable[[str, float, str | None], None]
"""``observer(operation, duration_s, error_code_or_None)``, once per public call."""

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_Form = list[tuple[str, str]]
_T = TypeVar("_T")
_BY_ERROR_TYPE: dict[str, tuple[type[BackendError], str]] = {
    "bad_data": (InvalidQuery, "Prometheus rejected the query"),
    "execution": (PrometheusQueryError, "Prometheus could not execute the query"),
    "timeout": (PrometheusTimeout, "Prometheus gave up on the query (timeout)"),
    "canceled": (PrometheusTimeout, "Prometheus gave up on the query (canceled)"),
}


def split_range(
    start_s: float, end_s: float, step_s: float, max_points: int
) -> list[tuple[float, float]]:
    """Split ``[start_s, end_s]`` into consecutive ``(start, end)`` chunks of at most
    ``max_points`` evaluation steps on the grid ``start_s + k * step_s``.

    Each chunk starts one step after the previous chunk's last point (no overlap, no
    gap); the last chunk ends at ``end_s``. A range that fits is returned unchanged.
    """
    if not (math.isfinite(step_s) and step_s > 0):
        raise InvalidQuery(f"query step must be a positive number of seconds, got {step_s}")
    if max_points < 1:
        raise ConfigError(f"max points per request must be at least 1, got {max_points}")
    if end_s < start_s:
        raise InvalidTimeRange(f"time range ends before it starts (from={start_s}, to={end_s})")
    points = math.floor((end_s - start_s) / step_s + 1e-9) + 1
    if points <= max_points:
        return [(start_s, end_s)]
    chunks: list[tuple[float, float]] = []
    for first in range(0, points, max_points):
        last = min(first + max_points, points) - 1
        chunk_end = end_s if last == points - 1 else start_s + last * step_s
        chunks.append((min(start_s + first * step_s, end_s), chunk_end))
    return chunks


class PrometheusClient:
    """A ``SeriesSource`` (``kind == "prometheus"``) over the adapters' HTTP client.

    ``base_url`` may carry a path prefix (``http://mimir/prometheus``); calls go to
    ``<base_url>/api/v1/...``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        bearer_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        headers: Mapping[str, str] | None = None,
        tls_verify: bool = True,
        ca_file: str | None = None,
        observer: Observer | None = None,
        max_points_per_request: int = 11_000,
        accept_gzip: bool = False,
    ) -> None:
        parts = urlsplit(base_url.strip())
        netloc = parts.netloc.rpartition("@")[2]
        self.base_url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Prometheus URL must be http(s)://host[/prefix]: {self.base_url!r}")
        if parts.username and username is None and bearer_token is None:
            username, password = unquote(parts.username), unquote(parts.password or "")
        if bearer_token is not None and username is not None:
            raise ConfigError("set a Prometheus bearer token or a username/password, not both")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_points_per_request < 1:
            raise ConfigError(
                "Prometheus client needs timeout_s > 0, retries >= 0, backoff_s >= 0 and "
                "max_points_per_request >= 1"
            )
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = float(backoff_s)
        self.max_points_per_request = max_points_per_request
        self._observer = observer
        session_headers = {
            "Accept": "application/json",
            "User-Agent": f"plugin-backend/{__version__}",
            # Prometheus spends ~90 ms of CPU gzipping a 2 MB answer (10 series x
            # 5,761 points) that crosses a LAN in a few ms: compress only when asked.
            "Accept-Encoding": "gzip" if accept_gzip else "identity",
        }
        self._auth_kind = ""
        if bearer_token:
            session_headers["Authorization"] = f"Bearer {bearer_token}"
            self._auth_kind = "bearer token"
        if username is not None:
            self._auth_kind = "basic auth"
        self._header_names = sorted(headers or {})
        session_headers.update(headers or {})
        self._http = HttpClient(
            where=f"Prometheus at {self.base_url}",
            error=_prometheus_error,
            timeout_s=self.timeout_s,
            retry=RetryPolicy(retries, self.backoff_s, frozenset(range(500, 600))),
            headers=session_headers,
            auth=(username, password or "") if username is not None else None,
            verify=ca_file if ca_file else tls_verify,
            secrets=[s for s in (bearer_token, password) if s],
        )

    @property
    def sleep(self) -> Callable[[float], None]:
        """How retries pause (tests record the pauses instead)."""
        return self._http.sleep

    @sleep.setter
    def sleep(self, sleep: Callable[[float], None]) -> None:
        self._http.sleep = sleep

    @classmethod
    def from_settings(
        cls, settings: Settings, observer: Observer | None = None
    ) -> PrometheusClient:
        if settings.prometheus_url is None:
            raise ConfigError("PLUGIN_BACKEND_PROMETHEUS_URL is not set")
        token, password = settings.prometheus_bearer_token, settings.prometheus_password
        ca_file = settings.prometheus_ca_file
        return cls(
            base_url=str(settings.prometheus_url),
            timeout_s=settings.prometheus_timeout_s,
            retries=settings.prometheus_retries,
            backoff_s=settings.prometheus_backoff_s,
            bearer_token=token.get_secret_value() if token is not None else None,
            username=settings.prometheus_username,
            password=password.get_secret_value() if password is not None else None,
            headers=settings.prometheus_headers,
            tls_verify=settings.prometheus_tls_verify,
            ca_file=str(ca_file) if ca_file is not None else None,
            observer=observer,
            accept_gzip=settings.prometheus_accept_gzip,
        )

    @property
    def kind(self) -> str:
        return "prometheus"

    def describe(self) -> str:
        extras = [self._auth_kind] if self._auth_kind else []
        if self._header_names:
            extras.append("headers " + ", ".join(self._header_names))
        return f"Prometheus API at {self.base_url}" + (f" ({'; '.join(extras)})" if extras else "")

    # --- SeriesSource ------------------------------------------------------
    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        with self._observed("query_range"):
            chunks = split_range(
                time_range.start_s, time_range.end_s, step_s, self.max_points_per_request
            )
            parts = []
            for start, end in chunks:
                form = [("query", expr), ("start", _ts(start)), ("end", _ts(end))]
                form.append(("step", f"{step_s:.15g}"))
                parts.append(self._call("POST", "/api/v1/query_range", form, _parse_result))
            return parts[0] if len(parts) == 1 else _join(parts)

    def query(self, expr: str, at_s: float) -> list[Series]:
        with self._observed("query"):
            form = [("query", expr), ("time", _ts(at_s))]
            return self._call("POST", "/api/v1/query", form, _parse_result)

    def series(self, matchers: Sequence[str], time_range: TimeRange | None = None) -> list[Labels]:
        with self._observed("series"):
            if not matchers:
                raise InvalidQuery("at least one series matcher is required")
            form = _selection(matchers, time_range)
            data = self._call("POST", "/api/v1/series", form, _as_list)
            return [dict(item) for item in data if isinstance(item, dict)]

    def labels(
        self, matchers: Sequence[str] = (), time_range: TimeRange | None = None
    ) -> list[str]:
        with self._observed("labels"):
            data = self._call("POST", "/api/v1/labels", _selection(matchers, time_range), _as_list)
            return sorted(str(name) for name in data)

    def label_values(
        self, label: str, matchers: Sequence[str] = (), time_range: TimeRange | None = None
    ) -> list[str]:
        with self._observed("label_values"):
            if not _LABEL_NAME.fullmatch(label):
                raise InvalidQuery(f"{label!r} is not a valid label name")
            path = f"/api/v1/label/{quote(label, safe='')}/values"
            data = self._call("GET", path, _selection(matchers, time_range), _as_list)
            return sorted(str(value) for value in data)

    def metric_types(self) -> dict[str, str]:
        """``metric -> type`` (counter, gauge, histogram, ...) from ``/api/v1/metadata``:
        what the scraped targets declare (empty for data that was never scraped)."""
        with self._observed("metadata"):
            data = self._call("GET", "/api/v1/metadata", [], _as_dict)
        types: dict[str, str] = {}
        for metric, entries in data.items():
            if isinstance(entries, list) and entries and isinstance(entries[0], dict):
                kind = entries[0].get("type")
                if isinstance(kind, str):
                    types[str(metric)] = kind
        return types

    def check_ready(self, timeout_s: float) -> None:
        with self._observed("ready"):
            form = [("query", "vector(1)")]
            try:
                kind = self._call(
                    "POST", "/api/v1/query", form, _result_type, timeout_s=timeout_s, retries=0
                )
            except InvalidQuery as exc:
                raise PrometheusError(
                    f"{self.base_url} refused the readiness query vector(1): {exc.message}"
                ) from exc
            if kind not in ("vector", "scalar"):
                raise PrometheusError(
                    f"{self.base_url} answered the readiness query vector(1) without a vector "
                    "result: it does not look like a Prometheus API (check the configured URL)"
                )

    def close(self) -> None:
        self._http.close()

    # --- transport ---------------------------------------------------------
    @contextmanager
    def _observed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        code: str | None = None
        try:
            yield
        except BackendError as exc:
            code = exc.code
            raise
        except Exception:
            code = "internal_error"
            raise
        finally:
            if self._observer is not None:
                try:
                    self._observer(operation, time.perf_counter() - started, code)
                except Exception:
                    logger.exception("Prometheus client observer failed for %s", operation)

    def _call(
        self,
        method: str,
        path: str,
        form: _Form,
        parse: Callable[[Any], _T],
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> _T:
        """One API call with retries; returns ``parse(data)`` of a success answer."""
        url = self.base_url + path
        get = method == "GET"
        answer = self._http.request(
            method,
            url,
            params=form if get else None,
            data=None if get else form,
            timeout_s=timeout_s,
            retries=retries,
            retry_answer=lambda a: not _gave_up(a),
        )
        return self._decode(answer, url, parse)

    def _decode(self, resp: HttpAnswer, url: str, parse: Callable[[Any], _T]) -> _T:
        with _GC_PAUSE:
            try:
                body = orjson.loads(resp.content)
            except orjson.JSONDecodeError as exc:
                raise self._error(resp, None, url) from exc
            if resp.ok and isinstance(body, dict) and body.get("status") == "success":
                for key in ("warnings", "infos"):
                    if body.get(key):
                        logger.debug("Prometheus %s for %s: %s", key, url, body[key])
                if "data" in body:
                    return parse(body["data"])
        raise self._error(resp, body, url)

    def _error(self, resp: HttpAnswer, body: Any, url: str) -> BackendError:
        """Prometheus's error body (``errorType``) as its exception, or what the answer
        says about the URL (auth, not found, not a Prometheus API)."""
        status, kind, message, attempts = resp.status, "", "", resp.attempts
        if isinstance(body, dict) and body.get("status") == "error":
            kind, message = str(body.get("errorType") or "unknown"), str(body.get("error") or "")
        if status in (401, 403):
            text = (
                f"authentication to Prometheus failed (HTTP {status} from {url}); check the "
                f"bearer token, username/password or tenant header: {_snippet(resp)}"
            )
        elif status == 404:
            text = (
                f"{url} answered HTTP 404: the URL does not look like a Prometheus API "
                f"(check the configured URL {self.base_url})"
            )
        elif not kind:
            text = (
                f"Prometheus at {url} answered HTTP {status} with a body that is not a "
                f"Prometheus API response: {_snippet(resp)}"
            )
        elif kind in _BY_ERROR_TYPE:
            error_class, prefix = _BY_ERROR_TYPE[kind]
            return error_class(f"{prefix}: {message}")
        else:
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            text = f"Prometheus answered HTTP {status}{tries} ({kind}): {message}"
        return PrometheusError(text)


# --- helpers ---------------------------------------------------------------
def _prometheus_error(failure: HttpFailure) -> BackendError:
    """A transport failure as Prometheus's exception: timeouts are 504s."""
    if failure.kind in ("connect_timeout", "timeout", "budget"):
        return PrometheusTimeout(failure.message)
    return PrometheusError(failure.message)


def _ts(seconds: float) -> str:
    return f"{seconds:.3f}"


def _selection(matchers: Sequence[str], time_range: TimeRange | None) -> _Form:
    form = [("match[]", m) for m in matchers]
    if time_range is not None:
        form += [("start", _ts(time_range.start_s)), ("end", _ts(time_range.end_s))]
    return form


def _as_list(data: Any) -> list[Any]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise PrometheusError(f"Prometheus answered {type(data).__name__} instead of a list")
    return data


def _as_dict(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PrometheusError(f"Prometheus answered {type(data).__name__} instead of an object")
    return data


def _result_type(data: Any) -> Any:
    return data.get("resultType") if isinstance(data, dict) else None


class _GcPause:
    """Pause the cyclic GC while an answer is decoded: orjson allocates one list per
    sample and the collector would traverse them again and again (3-4x the decode time
    for 10 x 5,760 points). Concurrent decodes share one pause; refcounting still frees."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


_GC_PAUSE = _GcPause()


def _gave_up(resp: HttpAnswer) -> bool:
    """A 5xx that is Prometheus's own query timeout: retrying would only repeat it."""
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("errorType") in ("timeout", "canceled")


def _snippet(resp: HttpAnswer) -> str:
    text = " ".join(resp.content[:4000].decode("utf-8", "replace").split())[:200]
    return text or "(empty body)"


def _floats(raw: Sequence[Any]) -> FloatArray:
    """Prometheus sample values (strings, incl. ``NaN``, ``+Inf``, ``-Inf``) as float64."""
    try:
        return np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_float_or_nan(v) for v in raw], dtype=np.float64)


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _point(labels: Any, sample: Any) -> Series:
    labels = labels if isinstance(labels, dict) else {}
    if not isinstance(sample, list) or len(sample) != 2:
        return Series(labels, np.empty(0), np.empty(0))
    return Series(labels, np.array([_float_or_nan(sample[0])]), _floats([sample[1]]))


def _parse_result(data: Any) -> list[Series]:
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind in ("scalar", "string"):
        return [_point({}, result)]
    if kind not in ("matrix", "vector") or not isinstance(result, list | None):
        raise PrometheusError(f"Prometheus answered with an unexpected result type {kind!r}")
    out: list[Series] = []
    for item in result or ():
        if not isinstance(item, dict):
            continue
        if kind == "vector":
            out.append(_point(item.get("metric"), item.get("value")))
            continue
        labels, values = item.get("metric") or {}, item.get("values") or ()
        if values:
            try:
                times, samples = zip(*values, strict=True)
                out.append(Series(labels, np.array(times, dtype=np.float64), _floats(samples)))
            except (TypeError, ValueError) as exc:
                raise PrometheusError(f"Prometheus sent malformed samples: {exc}") from exc
        else:  # e.g. only native histograms, which this backend does not read
            out.append(Series(labels, np.empty(0), np.empty(0)))
    return out


def _join(parts: list[list[Series]]) -> list[Series]:
    """Join chunked answers per label set; sorted timestamps, boundary duplicates dropped."""
    pieces: dict[tuple[tuple[str, str], ...], list[Series]] = {}
    for part in parts:
        for series in part:
            pieces.setdefault(tuple(sorted(series.labels.items())), []).append(series)
    joined: list[Series] = []
    for group in pieces.values():
        times = np.concatenate([s.timestamps_s for s in group])
        values = np.concatenate([s.values for s in group])
        if times.size > 1 and not bool(np.all(np.diff(times) > 0)):
            times, first = np.unique(times, return_index=True)
            values = values[first]
        joined.append(Series(group[0].labels, times, values))
    return joined
