"""Composition root helpers: build adapters from settings (the only place that does)."""

from __future__ import annotations

from plugin_backend.config import Settings
from plugin_backend.ports import SeriesSource
from plugin_backend.telemetry import Telemetry

__all__ = ["build_source"]


def build_source(settings: Settings, telemetry: Telemetry | None = None) -> SeriesSource:
    """The configured Prometheus-compatible API, or the built-in demo estate."""
    if settings.prometheus_url is None:
        from plugin_backend.adapters.demo import DemoSource

        return DemoSource(seed=settings.demo_seed)
    from plugin_backend.adapters.prometheus import PrometheusClient

    observer = telemetry.source_observer("prometheus") if telemetry else None
    return PrometheusClient.from_settings(settings, observer=observer)
