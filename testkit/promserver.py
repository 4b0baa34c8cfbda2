"""A real, throw-away Prometheus for integration tests and benchmarks.

Flow::

    series = [SyntheticSeries(...), ...]
    write_openmetrics(series, workdir / "data.om")       # OpenMetrics text
    backfill(workdir / "data.om", workdir / "data")      # promtool -> TSDB blocks
    with PrometheusServer(workdir / "data") as prom:     # server on 127.0.0.1
        requests.get(f"{prom.url}/api/v1/query", ...)

or in one call: ``start_backfilled(series, workdir)`` (returns a started server;
the caller stops it).

Needs the Debian package ``prometheus`` (the ``prometheus`` binary and
``promtool``); ``make system-deps`` installs it. Tooling only: never imported by
the service at run time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

import numpy as np
import numpy.typing as npt
import requests

__all__ = [
    "PrometheusServer",
    "SyntheticSeries",
    "backfill",
    "find_free_port",
    "start_backfilled",
    "write_openmetrics",
]

FloatArray = npt.NDArray[np.float64]

_INSTALL_HINT = (
    "install the Debian package 'prometheus' (run `make system-deps`, "
    "or `sudo apt-get install prometheus`)"
)
_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# promtool picks the largest block range 2h * 3**n that is <= this value. 162h
# (2h * 3**4) is one of the server's own compaction ranges, so two days of test
# data end up in one or two blocks and promtool reads the input once per block.
_DEFAULT_MAX_BLOCK_DURATION = "162h"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class SyntheticSeries:
    """One time series to backfill.

    ``labels`` must hold ``__name__``; for ``kind="counter"`` the name must end
    with ``_total`` (the OpenMetrics family is the name without it).
    ``timestamps_s`` are Unix seconds, strictly ascending and finite (promtool
    keeps millisecond precision). ``values`` may hold NaN and +/-Inf.
    Inputs are converted to 1-D float64 arrays. ``eq=False``: equality is
    identity (field-wise ``==`` on numpy arrays is ambiguous), which also keeps
    instances hashable.
    """

    labels: dict[str, str]
    timestamps_s: FloatArray
    values: FloatArray
    kind: Literal["gauge", "counter"] = "gauge"

    def __post_init__(self) -> None:
        name = self.labels.get("__name__")
        if not name or not _METRIC_NAME_RE.match(name):
            raise ValueError(f"labels need a valid '__name__', got {self.labels!r}")
        for key, value in self.labels.items():
            if not _LABEL_NAME_RE.match(key):
                raise ValueError(f"invalid label name {key!r} in {self.labels!r}")
            if not isinstance(value, str):
                raise TypeError(f"label {key!r} must be a str, got {type(value).__name__}")
        if self.kind not in ("gauge", "counter"):
            raise ValueError(f"kind must be 'gauge' or 'counter', got {self.kind!r}")
        if self.kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter names must end with '_total', got {name!r}")
        ts = np.asarray(self.timestamps_s, dtype=np.float64)
        vals = np.asarray(self.values, dtype=np.float64)
        if ts.ndim != 1 or vals.ndim != 1 or ts.shape != vals.shape:
            raise ValueError(
                f"{name}: timestamps_s and values must be 1-D of equal length, "
                f"got {ts.shape} and {vals.shape}"
            )
        if not np.all(np.isfinite(ts)):
            raise ValueError(f"{name}: timestamps must be finite")
        if ts.size > 1 and not np.all(np.diff(np.round(ts * 1000.0)) > 0):
            raise ValueError(f"{name}: timestamps must be strictly ascending (at ms precision)")
        object.__setattr__(self, "labels", dict(self.labels))
        object.__setattr__(self, "timestamps_s", ts)
        object.__setattr__(self, "values", vals)

    @property
    def name(self) -> str:
        """The sample (series) name, e.g. ``http_requests_total``."""
        return self.labels["__name__"]

    @property
    def family(self) -> str:
        """The OpenMetrics family name (counters drop the ``_total`` suffix)."""
        if self.kind == "counter":
            return self.name.removesuffix("_total")
        return self.name


# --------------------------------------------------------------------- OpenMetrics


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series_prefix(s: SyntheticSeries) -> str:
    pairs = [
        f'{key}="{_escape_label_value(value)}"'
        for key, value in sorted(s.labels.items())
        if key != "__name__"
    ]
    if not pairs:
        return f"{s.name} "
    return f"{s.name}{{{','.join(pairs)}}} "


def _format_values(values: FloatArray) -> list[str]:
    out = list(map(float.__repr__, values.tolist()))
    special = np.flatnonzero(~np.isfinite(values))
    for i in special.tolist():
        v = float(values[i])
        out[i] = "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    return out


def _format_timestamps(timestamps_s: FloatArray) -> list[str]:
    """`` <ts>\\n`` suffixes: integer seconds when possible, else millisecond decimals."""
    ms = np.round(timestamps_s * 1000.0).astype(np.int64)
    if np.all(ms % 1000 == 0):
        return [f" {t}\n" for t in (ms // 1000).tolist()]
    return [f" {t // 1000}.{t % 1000:03d}\n" for t in ms.tolist()]


def write_openmetrics(series: Iterable[SyntheticSeries], path: Path) -> None:
    """Write ``series`` as OpenMetrics text that promtool can backfill.

    One ``# TYPE`` line per family, then all samples of that family (families
    keep the order of their first series; each series' samples are contiguous
    and ascending in time). Label values are escaped, NaN/Inf are written as
    ``NaN``/``+Inf``/``-Inf``, and the file ends with ``# EOF``.
    """
    families: dict[str, list[SyntheticSeries]] = {}
    kinds: dict[str, str] = {}
    seen: set[tuple[tuple[str, str], ...]] = set()
    for s in series:
        key = tuple(sorted(s.labels.items()))
        if key in seen:
            raise ValueError(f"duplicate series {s.labels!r}")
        seen.add(key)
        fam = s.family
        if kinds.setdefault(fam, s.kind) != s.kind:
            raise ValueError(f"family {fam!r} mixes {kinds[fam]} and {s.kind} series")
        families.setdefault(fam, []).append(s)

    ts_cache: dict[bytes, list[str]] = {}
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for fam, members in families.items():
            fh.write(f"# TYPE {fam} {kinds[fam]}\n")
            for s in members:
                if s.values.size == 0:
                    continue
                ts_key = s.timestamps_s.tobytes()
                ts_strs = ts_cache.get(ts_key)
                if ts_strs is None:
                    ts_strs = ts_cache[ts_key] = _format_timestamps(s.timestamps_s)
                prefix = _series_prefix(s)
                lines = map(str.__add__, _format_values(s.values), ts_strs)
                fh.write(prefix + prefix.join(lines))
        fh.write("# EOF\n")


# ----------------------------------------------------------------------- promtool


def _require_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"'{name}' not found on PATH: {_INSTALL_HINT}")
    return found


def backfill(
    openmetrics_path: Path,
    data_dir: Path,
    *,
    max_block_duration: str = _DEFAULT_MAX_BLOCK_DURATION,
) -> None:
    """Turn an OpenMetrics file into TSDB blocks under ``data_dir`` with promtool.

    ``max_block_duration`` is promtool's (hidden) ``--max-block-duration``:
    larger blocks mean fewer passes over the input file.
    """
    promtool = _require_binary("promtool")
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        promtool,
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        f"--max-block-duration={max_block_duration}",
        "--quiet",
        str(openmetrics_path),
        str(data_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"promtool backfill of {openmetrics_path} failed (exit {proc.returncode}):\n"
            f"{(proc.stderr or proc.stdout).strip()}"
        )


# ------------------------------------------------------------------------- server


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_EMPTY_SCRAPE_CONFIG = """\
# Written by testkit.promserver: no scraping, backfilled data only.
global:
  evaluation_interval: 1h
scrape_configs: []
"""


def _tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"


def _thread_states(pid: int) -> list[str] | None:
    """Scheduler state letter of each thread (Linux /proc); None where unavailable."""
    task_dir = Path(f"/proc/{pid}/task")
    if not task_dir.is_dir():
        return None
    states: list[str] = []
    for stat in task_dir.glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the thread exited meanwhile
        # "pid (comm) S ...": comm may hold spaces or parens, so split after the last ")".
        state = text.rsplit(")", 1)[1].split()[0]
        if state not in "ZX":  # exiting threads neither stop nor continue
            states.append(state)
    return states


def _wait_for_stop_state(pid: int, *, stopped: bool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        states = _thread_states(pid)
        if states is None:
            time.sleep(0.1)  # no /proc: give the signal a moment to land
            return
        if states and all((s in "Tt") == stopped for s in states):
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"prometheus (pid {pid}) did not {'stop' if stopped else 'continue'} "
                f"within {timeout_s:.0f}s (thread states {''.join(sorted(states))})"
            )
        time.sleep(0.005)


def _blocks_max_time_ms(data_dir: Path) -> int | None:
    """Largest ``maxTime`` (exclusive, ms) over the TSDB blocks in ``data_dir``."""
    best: int | None = None
    for meta in data_dir.glob("*/meta.json"):
        try:
            max_time = int(json.loads(meta.read_text())["maxTime"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        best = max_time if best is None else max(best, max_time)
    return best


@dataclass
class PrometheusServer:
    """A Prometheus process over ``data_dir`` on 127.0.0.1 (context manager).

    ``port=None`` picks a free port at the first start; :meth:`restart` keeps it,
    so :attr:`url` stays valid. The config (no scrape jobs) and the server log
    live in a temp dir made at start and removed at stop.
    """

    data_dir: Path
    port: int | None = field(default=None, kw_only=True)
    extra_args: Sequence[str] = field(default=(), kw_only=True)

    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _log_fh: IO[bytes] | None = field(default=None, init=False, repr=False)
    _paused: bool = field(default=False, init=False, repr=False)
    _port_given: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()  # the server runs in its own cwd
        self.extra_args = tuple(self.extra_args)
        self._port_given = self.port is not None

    # -- properties

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the port is fixed at the first start)."""
        if self.port is None:
            raise RuntimeError("PrometheusServer has no port yet: call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def log_path(self) -> Path | None:
        """The server log while running (removed by :meth:`stop`)."""
        return None if self._workdir is None else self._workdir / "prometheus.log"

    def log_tail(self, max_bytes: int = 4000) -> str:
        path = self.log_path
        return "" if path is None else _tail(path, max_bytes)

    # -- lifecycle

    def start(self, timeout_s: float = 30.0) -> Self:
        """Launch the server; return once it is ready and answers a query over the data.

        Raises RuntimeError (with the tail of the server log) if it exits or is
        not ready within ``timeout_s``.
        """
        if self._proc is not None:
            raise RuntimeError("PrometheusServer already started")
        binary = _require_binary("prometheus")
        if not self.data_dir.is_dir():
            raise RuntimeError(f"data dir {self.data_dir} does not exist (backfill first)")
        attempts = 1 if self._port_given else 3
        for attempt in range(attempts):
            if self.port is None or (attempt > 0 and not self._port_given):
                self.port = find_free_port()
            self._launch(binary)
            try:
                self._wait_ready(timeout_s)
            except RuntimeError as exc:
                address_in_use = "address already in use" in str(exc)
                self.stop()
                if address_in_use and attempt + 1 < attempts:
                    continue
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL; remove the config/log temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if self._paused and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._paused = False
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def restart(self, timeout_s: float = 30.0) -> Self:
        """Stop and start again on the same port and data dir."""
        self.stop()
        return self.start(timeout_s)

    def pause(self, timeout_s: float = 5.0) -> None:
        """SIGSTOP the server: connections are accepted but never answered (a hung server).

        Returns once every thread of the process is stopped (signal delivery is
        asynchronous: without the wait a request sent right away may still be served).
        """
        proc = self._running_proc()
        os.kill(proc.pid, signal.SIGSTOP)
        self._paused = True
        _wait_for_stop_state(proc.pid, stopped=True, timeout_s=timeout_s)

    def resume(self, timeout_s: float = 5.0) -> None:
        """SIGCONT after :meth:`pause`; returns once the process runs again."""
        proc = self._running_proc()
        os.kill(proc.pid, signal.SIGCONT)
        self._paused = False
        _wait_for_stop_state(proc.pid, stopped=False, timeout_s=timeout_s)

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort (e.g. a test forgot stop()): never leave a server behind.
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()

    # -- internals

    def _running_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("PrometheusServer is not running")
        return self._proc

    def _launch(self, binary: str) -> None:
        assert self.port is not None
        self._workdir = Path(tempfile.mkdtemp(prefix="promserver-"))
        config = self._workdir / "prometheus.yml"
        config.write_text(_EMPTY_SCRAPE_CONFIG, encoding="utf-8")
        cmd = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=3650d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
            *self.extra_args,
        ]
        self._log_fh = (self._workdir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
        )

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        max_time_ms = _blocks_max_time_ms(self.data_dir)
        session = requests.Session()
        session.trust_env = False  # never route 127.0.0.1 through an HTTP(S)_PROXY
        ready = False
        last_problem = "not polled yet"
        try:
            while True:
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    raise RuntimeError(
                        f"prometheus exited during start-up (exit {code}); "
                        f"log tail:\n{self.log_tail()}"
                    )
                try:
                    if not ready:
                        resp = session.get(f"{self.url}/-/ready", timeout=1.0)
                        ready = resp.status_code == 200
                        last_problem = f"/-/ready answered {resp.status_code}"
                    if ready and self._query_ok(session, max_time_ms):
                        return
                    if ready:
                        last_problem = "query over the backfilled data returned nothing"
                except requests.RequestException as exc:
                    last_problem = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"prometheus not ready at {self.url} after {timeout_s:.0f}s "
                        f"({last_problem}); log tail:\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            session.close()

    def _query_ok(self, session: requests.Session, max_time_ms: int | None) -> bool:
        """Instant query at the newest backfilled sample; trivially true without blocks."""
        if max_time_ms is None:
            params = {"query": "1"}
        else:
            params = {
                "query": 'count({__name__=~".+"})',
                "time": f"{(max_time_ms - 1) / 1000:.3f}",
            }
        resp = session.get(f"{self.url}/api/v1/query", params=params, timeout=5.0)
        if resp.status_code != 200:
            return False
        body = resp.json()
        return body.get("status") == "success" and bool(body.get("data", {}).get("result"))


def start_backfilled(
    series: Iterable[SyntheticSeries],
    workdir: Path,
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float = 30.0,
) -> PrometheusServer:
    """Write ``series`` to ``workdir/data.om``, backfill into ``workdir/data``, start.

    ``workdir/data`` must not hold blocks yet (use a fresh dir). Returns a
    started server; the caller must :meth:`~PrometheusServer.stop` it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RuntimeError(f"{data_dir} is not empty: start_backfilled needs a fresh workdir")
    om_path = workdir / "data.om"
    write_openmetrics(series, om_path)
    backfill(om_path, data_dir)
    server = PrometheusServer(data_dir, port=port, extra_args=extra_args)
    return server.start(timeout_s)
