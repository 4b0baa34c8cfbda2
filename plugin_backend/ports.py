"""The interfaces the service depends on; adapters implement them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from plugin_backend.incidents import Incident, OutboxRow
from plugin_backend.types import ChangeEvent, Labels, Series, TimeRange

__all__ = [
    "AnnotationSink",
    "ChangeEventSource",
    "IncidentReader",
    "OutboxStore",
    "SeriesSource",
]


@runtime_checkable
class SeriesSource(Protocol):
    """Where series come from: a Prometheus-compatible API or the demo estate.

    Every method raises only errors from ``plugin_backend.errors``.
    """

    @property
    def kind(self) -> str:
        """Short, bounded name for logs and metrics labels: ``prometheus`` or ``demo``."""
        ...

    def describe(self) -> str:
        """Human description for the start-up log (no secrets)."""
        ...

    def query_range(self, expr: str, time_range: TimeRange, step_s: float) -> list[Series]:
        """Evaluate ``expr`` at every step of ``time_range``."""
        ...

    def query(self, expr: str, at_s: float) -> list[Series]:
        """Evaluate ``expr`` at one instant; each series holds one point."""
        ...

    def series(self, matchers: Sequence[str], time_range: TimeRange | None = None) -> list[Labels]:
        """Label sets of the series matching any of ``matchers``."""
        ...

    def labels(
        self, matchers: Sequence[str] = (), time_range: TimeRange | None = None
    ) -> list[str]:
        """Label names, sorted."""
        ...

    def label_values(
        self, label: str, matchers: Sequence[str] = (), time_range: TimeRange | None = None
    ) -> list[str]:
        """Values of one label, sorted (``__name__`` gives metric names)."""
        ...

    def check_ready(self, timeout_s: float) -> None:
        """Raise an ``UpstreamError`` unless the source answers a real query in time."""
        ...


class AnnotationSink(Protocol):
    """Grafana's annotation API. Raises ``GrafanaError`` (with ``in_doubt``/``retryable``)."""

    def create_annotation(self, body: Mapping[str, Any]) -> int: ...

    def patch_annotation(self, annotation_id: int, body: Mapping[str, Any]) -> None: ...

    def find_annotations(
        self, *, tags: Sequence[str] = (), dashboard_uid: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...


class OutboxStore(Protocol):
    """The outbox half of the store, as the deliverer uses it."""

    def claim_due(self, now_s: float, *, lease_s: float, limit: int = 20) -> list[OutboxRow]: ...

    def mark_in_doubt(self, row_id: int, now_s: float) -> None: ...

    def mark_delivered(self, row: OutboxRow, grafana_id: int, now_s: float) -> None: ...

    def forget_grafana_id(self, row_id: int, now_s: float) -> None: ...

    def mark_retry(
        self, row: OutboxRow, error: str, next_attempt_s: float, now_s: float, *, in_doubt: bool
    ) -> None: ...

    def mark_failed(self, row: OutboxRow, error: str, now_s: float) -> None: ...


class IncidentReader(Protocol):
    """Stored incidents, newest first, overlapping ``[since_s, until_s]``."""

    def list_incidents(
        self,
        *,
        rule: str | None = None,
        status: str | None = None,
        service: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        limit: int = 200,
    ) -> list[Incident]: ...


class ChangeEventSource(Protocol):
    """Change events (deploys, config changes) in a time range; raises only
    ``UpstreamError`` (root cause then goes on without them)."""

    def change_events(self, time_range: TimeRange) -> list[ChangeEvent]: ...
