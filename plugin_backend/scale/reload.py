"""SIGHUP in the Celery engine: every process of a worker reloads the rules file, in
place, as the one-process worker does (Celery's own SIGHUP would restart the worker).

A worker's rules live in its main process (its tick scheduler) and in each pool
process (the tasks). On SIGHUP the main process reads the file again: valid, its
scheduler takes the new rules and it raises a number shared with its pool processes
(memory mapped before they were forked), which reload the file before their next
task; invalid, it logs why and every process keeps the rules it has. The note worker
it started (``--note-concurrency``) gets the signal too. Pool processes ignore SIGHUP
themselves (a signal to the whole process group reaches them through the main one).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import subprocess
import threading
from collections.abc import Callable

from plugin_backend.errors import ConfigError
from plugin_backend.rules import RuleSet, load_rules

__all__ = ["RulesReload"]

log = logging.getLogger(__name__)


class RulesReload:
    """Made in the main process before the pool forks; ``request`` is its SIGHUP
    handler, ``run`` (a thread of the main process) does the reload."""

    def __init__(self) -> None:
        self._generation = multiprocessing.RawValue("q", 0)  # shared with forked processes
        self._requested = threading.Event()
        self.children: list[subprocess.Popen[bytes]] = []  # told with SIGHUP too

    @property
    def generation(self) -> int:
        """How many reloads the main process made: a pool process that saw fewer reloads."""
        return int(self._generation.value)

    def request(self, *_: object) -> None:
        """The signal handler: only sets a flag (the thread reloads)."""
        self._requested.set()

    def reload(
        self,
        path: str,
        apply: Callable[[RuleSet], None],
        refused: Callable[[], None] | None = None,
    ) -> bool:
        """Read the rules file; valid: ``apply`` them and let the pool processes and
        children know; invalid: ``refused``. Returns whether the rules changed hands."""
        self._requested.clear()
        try:
            rules = load_rules(path)
        except ConfigError as exc:
            log.error("rules reload refused, every process keeps its rules: %s", exc)
            if refused is not None:
                refused()
            return False
        apply(rules)
        self._generation.value += 1
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)
        log.info("rules reloaded: %s", ", ".join(rules.names) or "none")
        return True

    def run(
        self,
        path: str,
        apply: Callable[[RuleSet], None],
        stop: threading.Event,
        refused: Callable[[], None] | None = None,
    ) -> None:
        """Until ``stop``: reload each time ``request`` was called."""
        while not stop.is_set():
            if self._requested.wait(0.5):
                self.reload(path, apply, refused)
