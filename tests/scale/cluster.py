"""A Celery cluster as an operator runs it, for the scale tests: ``plugin-backend worker
--engine celery`` processes on one redis-server and one store, annotating a fake
Grafana (testkit), over the built-in demo estate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.needs import REPO

# The demo estate's watch rules (deploy/demo-rules.yaml), scored every `every`.
DEMO_RULES = (
    ("checkout-latency", 'http_request_duration_seconds_p99{service="checkout"}'),
    ("frontend-errors", 'http_errors_ratio{service="frontend"}'),
    ("postgres-query-latency", 'pg_query_duration_seconds_p99{service="postgres"}'),
)


def rules_yaml(
    every: str, rules: tuple[tuple[str, str], ...] = DEMO_RULES, detector: str = "ensemble"
) -> str:
    lines = ["rules:"]
    for name, expr in rules:
        lines += [
            f"  - name: {name}",
            f"    expr: '{expr}'",
            f"    every: {every}",
            f"    detector: {detector}",
            "    dashboard_uid: anomaly-overview",
            "    panel_id: 2",
            "    direction: up",
            "    rate_control: false",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Cluster:
    """Worker processes sharing ``env`` (broker, store, Grafana, rules)."""

    env: dict[str, str]
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, *extra: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_BACKEND_")}
        environ.update(self.env, PYTHONPATH=str(REPO), PLUGIN_BACKEND_LOG_FORMAT="text")
        log = self.workdir / f"worker{len(self.procs)}.log"
        command = [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery"]
        command += ["--concurrency", str(concurrency), *extra]
        with log.open("w") as out:
            # a session of its own: ``kill`` takes the Celery parent and its pool at once
            proc = subprocess.Popen(
                command,
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs)

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 180.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.25)
        raise AssertionError(f"{what}: not within {timeout_s} s\n{self.log_tails()}")

    def freeze(self, n: int, frozen: bool = True) -> None:
        """Stop (``SIGSTOP``) or resume worker ``n`` and its pool processes at once."""
        os.killpg(self.procs[n].pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def kill(self, n: int) -> None:
        """``kill -9`` worker ``n`` and its pool processes, as when its machine dies."""
        os.killpg(self.procs[n].pid, signal.SIGKILL)
        self.procs[n].wait(timeout=30)

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(timeout=10))
        return codes
