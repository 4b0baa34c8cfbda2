"""A service the tests started as a real process: its URL, its log, how to stop it."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import requests


def local_session() -> requests.Session:
    """A session for 127.0.0.1: never sent through an HTTP(S)_PROXY."""
    s = requests.Session()
    s.trust_env = False
    return s


@dataclass
class ServiceProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    http: requests.Session = field(default_factory=local_session)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.http.close()
