"""Composition root helpers: build adapters from settings (the only place that does)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugin_backend.config import Settings
from plugin_backend.errors import ConfigError
from plugin_backend.llm.writer import NoteWriter
from plugin_backend.ports import SeriesSource
from plugin_backend.rca.dependencies import DependencyMap
from plugin_backend.telemetry import Telemetry

if TYPE_CHECKING:
    from plugin_backend.adapters.grafana import GrafanaClient
    from plugin_backend.adapters.llm_openai import OpenAICompatibleLLM
    from plugin_backend.detection import DetectionService
    from plugin_backend.explain import ExplainService
    from plugin_backend.ports import ChangeEventSource
    from plugin_backend.rules import RuleSet
    from plugin_backend.scoring.model import Forecaster
    from plugin_backend.scoring.registry import DetectorFactory
    from plugin_backend.store import Store

__all__ = [
    "LOCAL_LLM_URL",
    "build_dependencies",
    "build_detection",
    "build_detectors",
    "build_explain",
    "build_grafana",
    "build_llm",
    "build_note_writer",
    "build_rules",
    "build_source",
    "build_store",
]

LOCAL_LLM_URL = "http://127.0.0.1:8091"
LOCAL_LLM_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"  # what llm-serve serves


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


def build_llm(settings: Settings) -> OpenAICompatibleLLM | None:
    """The configured OpenAI-compatible LLM (``local``: llm-serve), or ``None``."""
    if settings.llm_provider == "none":
        return None
    from plugin_backend.adapters.llm_openai import OpenAICompatibleLLM

    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    url = str(settings.llm_url) if settings.llm_url is not None else LOCAL_LLM_URL
    model = settings.llm_model or (LOCAL_LLM_MODEL if settings.llm_provider == "local" else "")
    return OpenAICompatibleLLM(
        url, model, key, timeout_s=settings.llm_timeout_s, name=settings.llm_provider
    )


def build_note_writer(settings: Settings, telemetry: Telemetry | None = None) -> NoteWriter:
    """The LLM note writer for the configured provider (template-only for ``none``)."""
    from plugin_backend.llm.writer import NoteWriter

    observer = telemetry.note_observer() if telemetry is not None else None
    llm = build_llm(settings)
    if llm is None:
        return NoteWriter(None, observer=observer)
    return NoteWriter(llm, observer=observer, timeout_s=settings.llm_timeout_s)


def build_store(settings: Settings) -> Store:
    from plugin_backend.store import Store

    return Store(settings.store_url)


def build_grafana(settings: Settings) -> GrafanaClient | None:
    """The Grafana annotations client, or ``None`` when no Grafana is configured."""
    if settings.grafana_url is None or settings.grafana_token is None:
        return None
    from plugin_backend.adapters.grafana import GrafanaClient

    return GrafanaClient(
        str(settings.grafana_url),
        settings.grafana_token.get_secret_value(),
        org_id=settings.grafana_org_id,
        timeout_s=settings.grafana_timeout_s,
        change_tags=settings.grafana_change_tags,
    )


def build_rules(settings: Settings) -> RuleSet | None:
    """The watch rules of ``PLUGIN_BACKEND_RULES`` (the alert webhooks look rules up)."""
    if settings.rules is None:
        return None
    from plugin_backend.rules import load_rules

    return load_rules(settings.rules)


def build_detectors() -> DetectorFactory:
    """Detectors sharing one set of forecast caches, with the transformer's weights
    read through the artefact store (a bad ``model_path`` falls back to the shipped
    weights; loaded lazily, after gunicorn forks)."""
    from plugin_backend.scoring.caches import ForecastCaches
    from plugin_backend.scoring.registry import DetectorFactory

    def load_model(path: str | None) -> Forecaster:
        from plugin_backend.adapters.artifacts import load_model_or_default

        return load_model_or_default(path)[0]

    return DetectorFactory(caches=ForecastCaches(), load_model=load_model)


def build_detection(
    settings: Settings, source: SeriesSource, telemetry: Telemetry | None = None
) -> DetectionService:
    """Detection over ``source`` with this process's score cache, forecast caches,
    transformer weights and limits."""
    from plugin_backend.detection import DetectionService
    from plugin_backend.scoring.incremental import ScoreCache

    return DetectionService(
        source,
        cache=ScoreCache(settings.score_cache_entries),
        detectors=build_detectors(),
        max_history_points=settings.max_points_per_series,
        max_series=settings.max_scored_series,
        observe_scoring=telemetry.scoring_observer() if telemetry is not None else None,
    )


def build_explain(
    settings: Settings,
    source: SeriesSource,
    telemetry: Telemetry | None = None,
    events: ChangeEventSource | None = None,
) -> ExplainService:
    """Root cause over ``source``: the dependency map, budget, note writer and change
    events (deploy annotations, when Grafana is configured) of ``settings``."""
    from plugin_backend.explain import ExplainService

    return ExplainService(
        source,
        dependencies=build_dependencies(settings),
        budget=settings.rca_budget,
        writer=build_note_writer(settings, telemetry),
        events=events,
    )
