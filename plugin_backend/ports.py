"""The interfaces the service depends on; adapters implement them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from plugin_backend.types import Labels, Series, TimeRange

__all__ = ["SeriesSource"]


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
