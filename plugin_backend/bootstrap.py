"""Composition root helpers: build adapters from settings (the only place that does)."""

from __future__ import annotations

from plugin_backend.config import Settings
from plugin_backend.errors import ConfigError
from plugin_backend.ports import SeriesSource
from plugin_backend.rca.dependencies import DependencyMap
from plugin_backend.telemetry import Telemetry

__all__ = ["build_dependencies", "build_source"]


def build_source(settings: Settings, telemetry: Telemetry | None = None) -> SeriesSource:
    """The configured Prometheus-compatible API, or the built-in demo estate."""
    if settings.prometheus_url is None:
        from plugin_backend.adapters.demo import DemoSource

        return DemoSource(seed=settings.demo_seed)
    from plugin_backend.adapters.prometheus import PrometheusClient

    observer = telemetry.source_observer("prometheus") if telemetry else None
    return PrometheusClient.from_settings(settings, observer=observer)


def build_dependencies(settings: Settings) -> DependencyMap | None:
    """The dependency map from ``PLUGIN_BACKEND_DEPENDENCIES`` (YAML), if set."""
    if settings.dependencies is None:
        return None
    import yaml

    from plugin_backend.rca.dependencies import load_dependency_map

    try:
        data = yaml.safe_load(settings.dependencies.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"PLUGIN_BACKEND_DEPENDENCIES: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("PLUGIN_BACKEND_DEPENDENCIES: the file must hold a mapping")
    try:
        return load_dependency_map(data)
    except ConfigError as exc:
        raise ConfigError(f"PLUGIN_BACKEND_DEPENDENCIES: {exc.message}") from None
