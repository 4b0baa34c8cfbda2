"""A real, throw-away PostgreSQL cluster for tests and benchmarks.

    with PostgresServer() as pg:                     # initdb + start on 127.0.0.1
        url = pg.create_database("t1")               # a SQLAlchemy URL (psycopg 3)
        ...
        pg.drop_database("t1")

Needs the Debian package ``postgresql`` (``initdb`` and ``pg_ctl`` under
``/usr/lib/postgresql/<major>/bin``); ``make system-deps`` installs it. PostgreSQL
refuses to run as root, so as root the cluster runs as the ``postgres`` user (or
``nobody``) in a temp dir of its own. Durability is off (no fsync): test data only.
Tooling only: never imported by the service at run time.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from testkit.promserver import find_free_port

__all__ = ["PostgresServer", "find_postgres_bin"]

_INSTALL_HINT = "install the Debian package 'postgresql' (`make system-deps`)"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest
    ``/usr/lib/postgresql/<major>/bin``; ``None`` when PostgreSQL is not installed."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda p: int(Path(p).parent.parent.name or 0))
    return Path(newest).parent


class PostgresServer:
    """A PostgreSQL cluster made with ``initdb`` in a temp dir, served on 127.0.0.1
    at a free port with trust authentication (user ``postgres``)."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port
        self._bin: Path | None = None
        self._dir: Path | None = None
        self._run_as: pwd.struct_passwd | None = None
        self._running = False

    # -- properties

    @property
    def data_dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError("PostgresServer not started")
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise RuntimeError("PostgresServer not started")
        return self._dir / "postgres.log"

    @property
    def running(self) -> bool:
        return self._running

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` (psycopg 3 driver)."""
        if self.port is None:
            raise RuntimeError("PostgresServer has no port yet: call start() first")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except (OSError, RuntimeError):
            return ""

    # -- lifecycle

    def start(self, timeout_s: float = 60.0) -> Self:
        """initdb (first start only), then start and wait until it accepts connections."""
        if self._running:
            raise RuntimeError("PostgresServer already started")
        if self._dir is None:
            self._init_cluster()
        attempts = 1 if self.port is not None else 3
        for attempt in range(attempts):
            if self.port is None or attempt > 0:
                self.port = find_free_port()
            try:
                self._pg_ctl(
                    "start",
                    "-w",
                    "-t",
                    str(int(timeout_s)),
                    "-l",
                    str(self.log_path),
                    "-o",
                    self._server_options(),
                )
            except RuntimeError:
                if attempt + 1 < attempts and "in use" in self.log_tail():
                    continue
                raise
            self._running = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, *, remove: bool = True) -> None:
        """Fast shutdown; with ``remove`` (default) also delete the cluster's files."""
        if self._running:
            self._running = False
            with contextlib.suppress(RuntimeError):
                self._pg_ctl("stop", "-w", "-m", "fast", "-t", "30")
        if remove and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self, timeout_s: float = 60.0) -> Self:
        """Stop and start again on the same port, keeping the data."""
        self.stop(remove=False)
        return self.start(timeout_s)

    # -- databases

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        self._admin(f'CREATE DATABASE "{_checked(name)}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting anyone still connected to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(sql.encode())

    # -- plumbing

    def _init_cluster(self) -> None:
        self._bin = find_postgres_bin()
        if self._bin is None:
            raise RuntimeError(f"PostgreSQL's initdb not found: {_INSTALL_HINT}")
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            self._run_as = _unprivileged_user()
        base = Path(tempfile.gettempdir())
        if self._run_as is not None and not _traversable(base):
            base = Path("/tmp")  # noqa: S108 -- the other user must reach the data dir
        self._dir = Path(tempfile.mkdtemp(prefix="pb-postgres-", dir=base))
        (self._dir / "data").mkdir(mode=0o700)
        if self._run_as is not None:
            for path in (self._dir, self._dir / "data"):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _server_options(self) -> str:
        return " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self._dir}",  # its unix socket beside the data, not in /var/run
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                "-c max_connections=200",
            ]
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), *args)

    def _run(self, program: str, *args: str) -> None:
        assert self._bin is not None
        extra: dict[str, Any] = {}
        if self._run_as is not None:
            extra = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        proc = subprocess.run(
            [str(self._bin / program), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=self._dir,
            env={**os.environ, "LC_ALL": "C"},
            **extra,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args[:3])} failed (exit {proc.returncode}):\n"
                f"{(proc.stderr or proc.stdout).strip()}\n{self.log_tail()}"
            )

    def __enter__(self) -> Self:
        if not self._running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user to run as")


def _traversable(path: Path) -> bool:
    """Whether any user may pass through ``path`` and each folder above it."""
    return all(p.stat().st_mode & 0o001 for p in (path, *path.resolve().parents))


def _checked(name: str) -> str:
    if not _DB_NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name
