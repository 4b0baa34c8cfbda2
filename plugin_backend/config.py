"""Settings: built once from the environment (prefix ``PLUGIN_BACKEND_``) and an
optional YAML file (``PLUGIN_BACKEND_CONFIG``); the only reader of ``os.environ``.

Environment variables win over the file; one set to an empty string counts as unset
(as shells, compose files and Helm values mean it). A bad value fails at start-up with a
``ConfigError`` naming the variable (or file key). Secrets are ``SecretStr``:
their ``repr`` and log form is ``'**********'``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from plugin_backend.errors import ConfigError
from plugin_backend.scoring.registry import DEFAULT_DETECTOR
from plugin_backend.timegrid import MAX_POINTS_PER_SERIES

__all__ = ["ENV_PREFIX", "MULTIPROC_ENV", "Settings", "load_settings", "pin_math_threads"]

ENV_PREFIX = "PLUGIN_BACKEND_"
CONFIG_FILE_VAR = ENV_PREFIX + "CONFIG"
# prometheus-client reads this when it is first imported: set it before that.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MATH_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin_math_threads(threads: int = 1) -> None:
    """Process wiring: libraries that compute on threads (torch, BLAS), imported after
    this, use ``threads`` each, unless the operator set their variable."""
    for name in MATH_THREAD_ENV:
        os.environ.setdefault(name, str(threads))


MIN_TOKEN_LENGTH = 16
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


class Settings(BaseModel):
    """Every tunable of the service. Field ``x_y`` is env ``PLUGIN_BACKEND_X_Y``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- serving ---------------------------------------------------------
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 in containers)")
    port: int = Field(8080, ge=1, le=65535, description="port the API listens on")
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes (4 threads each)")
    worker_timeout_s: int = Field(
        60,
        ge=5,
        description="gunicorn worker timeout: a request running longer is killed and its "
        "worker restarted",
    )
    public_url: AnyHttpUrl | None = Field(
        None,
        description="URL users and Grafana reach the service at (links, start-up log); "
        "default: built from host and port",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field(
        "json", description="json (one object per line) or text"
    )
    multiproc_dir: Path | None = Field(
        None,
        description="prometheus-client multiprocess directory (wiped at start); default: a fresh "
        "temp dir",
    )

    # --- who may call the service (docs/security.md) ----------------------------
    api_token: SecretStr | None = Field(
        None,
        description="bearer token callers must send for every data, write, page and webhook "
        "call, at least 16 characters (docs/security.md)",
    )
    basic_auth_user: str | None = Field(
        None,
        description="HTTP basic auth user, set with _PASSWORD (also accepted when a token is set)",
    )
    basic_auth_password: SecretStr | None = Field(
        None, description="HTTP basic auth password, set with _USER"
    )
    metrics_require_auth: bool = Field(False, description="GET /metrics needs credentials too")
    webhook_secret: SecretStr | None = Field(
        None,
        description="Grafana webhook HMAC-SHA256 secret: unsigned calls to "
        "/api/v1/alerts/grafana are refused",
    )
    webhook_signature_header: str = Field(
        "X-Grafana-Alerting-Signature",
        description="header holding the hex HMAC-SHA256 signature of Grafana's webhook",
    )
    webhook_timestamp_header: str | None = Field(
        None,
        description="header of the signature's Unix timestamp (replay protection), e.g. "
        "X-Grafana-Alerting-Timestamp: Grafana then signs timestamp:body; older than 5 min "
        "is refused",
    )

    # --- the series source -------------------------------------------------
    prometheus_url: AnyHttpUrl | None = Field(
        None,
        description="base URL of a Prometheus-compatible API, path prefix allowed "
        "(http://mimir/prometheus); unset: the built-in demo estate",
    )
    prometheus_timeout_s: float = Field(30.0, gt=0, le=600, description="per request")
    prometheus_retries: int = Field(
        2, ge=0, le=10, description="retries on connection errors and 5xx (never 4xx)"
    )
    prometheus_backoff_s: float = Field(
        0.25, ge=0, le=60, description="first retry delay; exponential backoff"
    )
    prometheus_bearer_token: SecretStr | None = Field(
        None, description="sent as Authorization: Bearer"
    )
    prometheus_username: str | None = Field(None, description="basic auth user, with _PASSWORD")
    prometheus_password: SecretStr | None = Field(
        None, description="basic auth password, with _USERNAME"
    )
    prometheus_headers: dict[str, str] = Field(
        default_factory=dict,
        description='extra headers: JSON {"X-Scope-OrgID": "tenant-1"} or '
        "X-Scope-OrgID=tenant-1,K=V (Mimir/Cortex/Thanos tenants)",
    )
    prometheus_tls_verify: bool = Field(True, description="verify TLS certificates")
    prometheus_ca_file: Path | None = Field(None, description="CA bundle for a private CA")
    prometheus_accept_gzip: bool = Field(
        False,
        description="ask Prometheus for gzip answers; Prometheus spends ~90 ms of CPU "
        "compressing a day of 10 series at 15 s, so enable it only over slow links",
    )
    demo_seed: int = Field(7, description="seed of the built-in demo estate")
    alarm_rate_control: bool | None = Field(
        None,
        description="alarms of an anomaly panel whose Alarms option is empty or `default`: "
        "true = the rate-controlled threshold (about 1 per 3 days on a healthy series), "
        "false = the band's edge. Unset: true, but false on the built-in demo estate, whose "
        "fault every four hours is its normal (the compose stack's demo sets false too)",
    )
    dependencies: Path | None = Field(
        None,
        description="YAML dependency map (services, depends_on, runs_on) for root cause "
        "(docs/root-cause.md)",
    )
    rca_budget: int = Field(300, ge=10, le=5000, description="candidate series per explanation")

    # --- the LLM that phrases root-cause notes -------------------------------------
    llm_provider: Literal["local", "openai", "none"] = Field(
        "local",
        description="local: the packaged model behind `plugin-backend llm-serve`; openai: any "
        "OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, hosted); none: template notes",
    )
    llm_url: AnyHttpUrl | None = Field(
        None, description="OpenAI-compatible base URL (local default http://127.0.0.1:8091)"
    )
    llm_model: str = Field("", description="model name sent to the endpoint")
    llm_api_key: SecretStr | None = Field(None, description="API key of the endpoint")
    llm_timeout_s: float = Field(20.0, gt=0, le=300, description="per LLM call")

    # --- probes and limits -------------------------------------------------
    readiness_timeout_s: float = Field(
        2.0, gt=0, le=60, description="/readyz and Save & test query timeout"
    )
    # Store (incidents, annotation outbox, alert intake queue) and the worker.
    store_url: str = Field(
        default_factory=lambda: f"sqlite:///{_default_store_path()}",
        description="incidents, annotation outbox, alert queue: sqlite:///PATH or postgresql://...",
    )
    retention_days: float = Field(
        30.0,
        gt=0,
        description="closed incidents whose annotation was delivered (or can never be) are "
        "kept this long, in days",
    )
    rules: Path | None = Field(
        None,
        description="watch-rules file; the alert webhooks look rules up here by name "
        "(worker --rules overrides)",
    )
    broker_url: SecretStr | None = Field(
        None,
        description=(
            "Celery broker for scale-out, e.g. redis://HOST:6379/0 (the `scale` extra): "
            "`worker --engine celery` then runs rule ticks and deliveries as tasks; "
            "unset: the one-process worker (a secret: it may hold the Redis password)"
        ),
    )
    grafana_url: AnyHttpUrl | None = Field(
        None,
        description="Grafana base URL for annotations; unset: annotations are only stored",
    )
    grafana_token: SecretStr | None = Field(
        None, description="service-account token that may write annotations"
    )
    grafana_org_id: int | None = Field(None, ge=1, description="sent as X-Grafana-Org-Id")
    grafana_timeout_s: float = Field(10.0, gt=0, le=300, description="per Grafana API call")
    grafana_change_tags: list[str] = Field(
        default_factory=lambda: ["deploy"],
        description=(
            "annotations with any of these tags count as change events for root cause "
            "(comma-separated; none: no change events)"
        ),
    )
    delivery_backoff_s: float = Field(
        2.0, gt=0, le=3600, description="first retry delay of an annotation; doubles per try"
    )
    delivery_backoff_max_s: float = Field(
        300.0, gt=0, le=86_400, description="longest annotation retry delay"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="request body limit")
    max_targets: int = Field(50, ge=1, description="targets per /query")
    max_points_per_series: int = Field(
        MAX_POINTS_PER_SERIES, ge=100, description="resolution x range limit of one series"
    )
    max_promql_length: int = Field(20_000, ge=16, description="characters per expression")
    max_scored_series: int = Field(
        50,
        ge=1,
        description="series one anomaly target may score (aggregate or filter wider expressions)",
    )
    max_concurrent_heavy: int = Field(
        2,
        ge=1,
        le=64,
        description="anomaly and root-cause requests running at once per gunicorn worker "
        "(light panel queries are never held back)",
    )
    heavy_wait_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="how long another heavy request waits for a slot before a 429 limit_exceeded",
    )
    request_deadline_s: float = Field(
        50.0,
        gt=0,
        le=3600,
        description="time budget of one HTTP request: every Prometheus and LLM call draws "
        "its timeout from what is left (504 deadline_exceeded; the LLM note falls back to "
        "the template)",
    )
    score_cache_entries: int = Field(
        256,
        ge=0,
        description="scored series kept in memory per worker, so panel refreshes score "
        "only new points",
    )
    warm_detectors: list[str] = Field(
        default_factory=lambda: [DEFAULT_DETECTOR],
        description=(
            "detectors each worker loads at start: imports, model weights, a first fit "
            "(comma-separated; none: load on first use)"
        ),
    )

    @field_validator("prometheus_headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            return json.loads(text)
        headers: dict[str, str] = {}
        for part in text.split(","):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected JSON or K=V pairs separated by commas, got {part!r}")
            headers[key.strip()] = val.strip()
        return headers

    @field_validator("warm_detectors", "grafana_change_tags", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # "none" empties the list (an empty variable is unset)
            parts = [part.strip() for part in value.split(",") if part.strip()]
            return [] if [p.lower() for p in parts] == ["none"] else parts
        return value

    @field_validator("prometheus_ca_file", "dependencies", "rules")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @model_validator(mode="after")
    def _one_auth_method(self) -> Settings:
        if self.prometheus_bearer_token is not None and self.prometheus_username is not None:
            raise ValueError(
                "set either PLUGIN_BACKEND_PROMETHEUS_BEARER_TOKEN or "
                "PLUGIN_BACKEND_PROMETHEUS_USERNAME/_PASSWORD, not both"
            )
        if (self.prometheus_username is None) != (self.prometheus_password is None):
            raise ValueError(
                "PLUGIN_BACKEND_PROMETHEUS_USERNAME and _PASSWORD must be set together"
            )
        return self

    @model_validator(mode="after")
    def _llm_endpoint(self) -> Settings:
        if self.llm_provider == "openai" and (self.llm_url is None or not self.llm_model):
            raise ValueError(
                "PLUGIN_BACKEND_LLM_PROVIDER=openai needs PLUGIN_BACKEND_LLM_URL and "
                "PLUGIN_BACKEND_LLM_MODEL"
            )
        return self

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://")):
            raise ValueError("must be redis://HOST:PORT/DB (or rediss:// for TLS)")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST/DB")
        return value

    @model_validator(mode="after")
    def _grafana_token(self) -> Settings:
        if self.grafana_url is not None and self.grafana_token is None:
            raise ValueError(
                "PLUGIN_BACKEND_GRAFANA_URL needs PLUGIN_BACKEND_GRAFANA_TOKEN "
                "(a service-account token that may write annotations)"
            )
        return self

    @field_validator("api_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_TOKEN_LENGTH} characters long "
                "(generate one with `openssl rand -hex 32`)"
            )
        return value

    @field_validator("webhook_signature_header", "webhook_timestamp_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @model_validator(mode="after")
    def _api_auth(self) -> Settings:
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise ValueError(
                "PLUGIN_BACKEND_BASIC_AUTH_USER and PLUGIN_BACKEND_BASIC_AUTH_PASSWORD must be "
                "set together"
            )
        if self.basic_auth_user is not None and (
            not self.basic_auth_user or ":" in self.basic_auth_user
        ):
            raise ValueError("PLUGIN_BACKEND_BASIC_AUTH_USER must be non-empty, without ':'")
        if self.basic_auth_password is not None and not self.basic_auth_password.get_secret_value():
            raise ValueError("PLUGIN_BACKEND_BASIC_AUTH_PASSWORD must not be empty")
        if self.webhook_secret is not None and not self.webhook_secret.get_secret_value():
            raise ValueError("PLUGIN_BACKEND_WEBHOOK_SECRET must not be empty")
        if self.webhook_timestamp_header is not None and self.webhook_secret is None:
            raise ValueError(
                "PLUGIN_BACKEND_WEBHOOK_TIMESTAMP_HEADER needs PLUGIN_BACKEND_WEBHOOK_SECRET"
            )
        return self

    @property
    def uses_demo_source(self) -> bool:
        return self.prometheus_url is None

    @property
    def default_rate_control(self) -> bool:
        """``alarm_rate_control``, or by default: rate-controlled except on the demo."""
        if self.alarm_rate_control is not None:
            return self.alarm_rate_control
        return not self.uses_demo_source

    def advertised_url(self) -> str:
        """Base URL to show users: ``public_url`` or one built from host and port."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"


def _default_store_path() -> Path:
    """``$XDG_STATE_HOME/plugin-backend/plugin-backend.db`` (``~/.local/state/...``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "plugin-backend" / "plugin-backend.db"


def load_settings(
    env: Mapping[str, str] | None = None,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings: ``overrides`` (CLI flags) over ``env`` (default ``os.environ``)
    over an optional YAML file."""
    environ = os.environ if env is None else env
    path = config_path if config_path is not None else environ.get(CONFIG_FILE_VAR) or None
    file_values = _read_yaml(Path(path)) if path else {}
    # Set but empty means unset, as shells, compose files and Helm values use it.
    env_values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key != CONFIG_FILE_VAR and value.strip()
    }
    merged: dict[str, Any] = {**file_values, **env_values, **(overrides or {})}
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, env_values, file_values, path)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_VAR}: cannot read {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{CONFIG_FILE_VAR}: {str(path)!r} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{CONFIG_FILE_VAR}: {str(path)!r} must hold a mapping of settings")
    return {str(k).lower(): v for k, v in loaded.items()}


def _describe(
    exc: ValidationError,
    env_values: Mapping[str, Any],
    file_values: Mapping[str, Any],
    path: str | Path | None,
) -> str:
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        if field in env_values:
            where = ENV_PREFIX + field.upper()
        elif field in file_values:
            where = f"{field!r} in {path}"
        elif field:
            where = ENV_PREFIX + field.upper()
        else:
            where = "settings"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown setting"
        problems.append(f"{where}: {message}")
    return "invalid configuration: " + "; ".join(problems)
