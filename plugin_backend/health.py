"""Use case behind the landing page's health table: every dependency probed at once,
none for longer than the probe timeout, each answer a ``Check`` a page can show.

The composition root says what each dependency is (``source_dependency`` and the
others); a dependency that is not configured is ``off``, never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Literal, Protocol

from plugin_backend.errors import BackendError
from plugin_backend.ports import SeriesSource

__all__ = [
    "PROBE_TIMEOUT_S",
    "Check",
    "Dependency",
    "HealthService",
    "ReadinessProbe",
    "grafana_dependency",
    "llm_dependency",
    "source_dependency",
    "store_dependency",
]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0

#: ``probe(timeout_s)``: raises when the dependency fails; else what it answered.
Probe = Callable[[float], str]


class ReadinessProbe(Protocol):
    """A dependency that can say, within ``timeout_s``, that it answers."""

    def check_ready(self, timeout_s: float) -> None: ...


class StoreHealth(Protocol):
    def ping(self) -> None: ...

    def outbox_counts(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's health: ``ok``, ``error`` or ``off`` (not configured)."""

    name: str
    state: Literal["ok", "error", "off"]
    detail: str
    target: str = ""


@dataclass(frozen=True, slots=True)
class Dependency:
    """What to probe; without a probe, ``unusable`` says why (``error``), else it is
    ``off`` and ``detail`` says how to configure it."""

    name: str
    probe: Probe | None
    target: str = ""
    detail: str = ""
    unusable: bool = False


class HealthService:
    def __init__(
        self, dependencies: Sequence[Dependency], timeout_s: float = PROBE_TIMEOUT_S
    ) -> None:
        self.dependencies = list(dependencies)
        self.timeout_s = timeout_s

    def checks(self) -> list[Check]:
        """Every dependency probed at once; none may take longer than the probe timeout."""
        deadline_s = self.timeout_s + 1.0
        pool = ThreadPoolExecutor(max_workers=len(self.dependencies), thread_name_prefix="health")
        try:
            futures = [pool.submit(self._check, d) for d in self.dependencies]
            wait_futures(futures, timeout=deadline_s)
            return [
                future.result()
                if future.done()
                else Check(d.name, "error", f"no answer within {deadline_s:g} s")
                for d, future in zip(self.dependencies, futures, strict=True)
            ]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, dependency: Dependency) -> Check:
        name, target = dependency.name, dependency.target
        if dependency.probe is None:
            state: Literal["error", "off"] = "error" if dependency.unusable else "off"
            return Check(name, state, dependency.detail, target=target if state == "error" else "")
        try:
            return Check(name, "ok", dependency.probe(self.timeout_s), target=target)
        except BackendError as exc:
            return Check(name, "error", exc.message)
        except Exception as exc:
            log.warning("health check %s failed", name, exc_info=True)
            return Check(name, "error", f"{type(exc).__name__}: {exc}")


def source_dependency(source: SeriesSource, readiness_timeout_s: float) -> Dependency:
    def probe(timeout_s: float) -> str:
        source.check_ready(min(readiness_timeout_s, timeout_s))
        return "answers a query"

    return Dependency("Series source", probe, target=source.describe())


def grafana_dependency(url: str | None, client: ReadinessProbe | None) -> Dependency:
    if url is None:
        return Dependency("Grafana", None, detail="not configured (PLUGIN_BACKEND_GRAFANA_URL)")
    if client is None:
        return Dependency(
            "Grafana", None, target=url, detail="configured without a token", unusable=True
        )

    def probe(timeout_s: float) -> str:
        client.check_ready(timeout_s)
        return "GET /api/health answers"

    return Dependency("Grafana", probe, target=url)


def llm_dependency(provider: str, llm: ReadinessProbe | None, target: str) -> Dependency:
    if provider == "none" or llm is None:
        return Dependency("LLM", None, detail="provider none: notes are written from a template")

    def probe(timeout_s: float) -> str:
        llm.check_ready(timeout_s)
        return "GET /v1/models answers"

    return Dependency("LLM", probe, target=target)


def store_dependency(
    store: StoreHealth, *, grafana_configured: bool, retention_days: float
) -> Dependency:
    def probe(_timeout_s: float) -> str:
        store.ping()
        counts = store.outbox_counts()
        outbox = ", ".join(f"{n} {state}" for state, n in counts.items())
        why = ""
        if counts.get("pending") and not grafana_configured:
            why = (
                " (no Grafana is configured, PLUGIN_BACKEND_GRAFANA_URL: pending annotations "
                f"wait for it, and retention drops them after {retention_days:g} days)"
            )
        return f"reachable; annotation outbox: {outbox}{why}"

    return Dependency("Store", probe, target=repr(store))
