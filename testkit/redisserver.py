"""A real, throw-away Redis server for tests and benchmarks (the Celery broker).

    with RedisServer() as redis:       # redis-server on 127.0.0.1, a free port, a temp dir
        url = redis.url()              # redis://127.0.0.1:PORT/0
        redis.restart()                # same port, for fault tests

Needs the Debian package ``redis-server``; ``make system-deps`` installs it. Nothing is
persisted (no RDB snapshots, no AOF): a restart starts empty, as after a crash of a
broker without persistence. Tooling only: never imported by the service at run time.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from testkit.promserver import find_free_port

__all__ = ["RedisServer", "find_redis_server"]


def find_redis_server() -> str | None:
    """The ``redis-server`` binary on PATH, or ``None``."""
    return shutil.which("redis-server")


class RedisServer:
    """``redis-server`` on 127.0.0.1 at a free port, its files in a temp dir."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, db: int = 0) -> str:
        if self.port is None:
            raise RuntimeError("RedisServer has no port yet: call start() first")
        return f"redis://127.0.0.1:{self.port}/{db}"

    def log_tail(self, max_chars: int = 4000) -> str:
        if self._dir is None:
            return ""
        try:
            return (self._dir / "redis.log").read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def start(self, timeout_s: float = 20.0) -> Self:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError(
                "redis-server not found: install the Debian package 'redis-server' "
                "(`make system-deps`)"
            )
        if self.running:
            raise RuntimeError("RedisServer already started")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="pb-redis-"))
        if self.port is None:
            self.port = find_free_port()
        self._proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self._dir),
                "--logfile",
                str(self._dir / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop(remove=False)
        raise RuntimeError(f"redis-server did not answer within {timeout_s} s:\n{self.log_tail()}")

    def ping(self) -> bool:
        """Whether the server answers PING (raw RESP: no client library needed)."""
        if self.port is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, remove: bool = True) -> None:
        """Terminate the server (SIGTERM, then SIGKILL); with ``remove`` its temp dir too."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._proc = None
        if remove and self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None

    def restart(self, timeout_s: float = 20.0) -> Self:
        """Stop and start again on the same port (empty: nothing is persisted)."""
        self.stop(remove=False)
        return self.start(timeout_s)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
