"""Run the Flask app under gunicorn, with prometheus-client multiprocess mode.

The app is built in each worker after fork (no preload), so heavy libraries
and model weights load per worker, never in the master. prometheus-client is
imported only after ``PROMETHEUS_MULTIPROC_DIR`` is set: it picks its value
storage once, at import.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from plugin_backend import __version__
from plugin_backend.config import MULTIPROC_ENV, Settings
from plugin_backend.errors import ConfigError

__all__ = ["check_port_free", "prepare_multiproc_dir", "run_gunicorn"]

log = logging.getLogger("plugin_backend.server")

#: Each worker listens on its own socket (``SO_REUSEPORT``; Linux spreads new
#: connections over them). On one shared socket the worker that wakes first accepted a
#: whole burst -- a dashboard's panels, sent at once -- while the other stayed idle:
#: 5 anomaly panels all went to one worker in most rounds of ``python -m benchmarks
#: dashboard``, the last ones waiting for its heavy-request slots.
WORKER_SOCKETS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def prepare_multiproc_dir(settings: Settings) -> Path:
    """Create (or wipe) the multiprocess metrics dir and export it to the workers."""
    if settings.multiproc_dir is not None:
        path = settings.multiproc_dir
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="plugin-backend-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class _Application(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, multiproc_dir: Path) -> None:
        self.settings = settings
        self.multiproc_dir = multiproc_dir
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            "workers": s.workers,
            "worker_class": "gthread",
            "threads": 4,
            "reuse_port": WORKER_SOCKETS,
            "timeout": s.worker_timeout_s,
            "graceful_timeout": 10,
            "child_exit": self._child_exit,
            "post_worker_init": self._warm_up,
            "when_ready": self._when_ready,
            "proc_name": "plugin-backend",
            "logconfig_dict": gunicorn_log_config(s.log_level, s.log_format),
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from plugin_backend.web import create_app

        return create_app(self.settings)

    def _child_exit(self, _server: Any, worker: Any) -> None:
        from plugin_backend.telemetry import mark_process_dead

        mark_process_dead(worker.pid, self.multiproc_dir)

    def _warm_up(self, _worker: Any) -> None:
        """Load heavy detectors (torch, weights) before the worker takes requests, so
        the first panel does not pay for the import."""
        from plugin_backend.scoring.warmup import warm_up

        warm_up(self.settings.warm_detectors)

    def _when_ready(self, _server: Any) -> None:
        s = self.settings
        if s.uses_demo_source:
            source = (
                f"built-in demo estate (seed {s.demo_seed}); set PLUGIN_BACKEND_PROMETHEUS_URL "
                "to use your Prometheus"
            )
        else:
            from plugin_backend.bootstrap import build_source

            source = build_source(s).describe()
        base = s.advertised_url()
        log.info(
            "plugin-backend %s listening on %s:%s with %d workers; source: %s; point Grafana's "
            "simpod-json-datasource at %s/datasource; self-metrics at %s/metrics; notes: %s; "
            "auth: %s",
            __version__,
            s.host,
            s.port,
            s.workers,
            source,
            base,
            base,
            _llm_description(s),
            _auth_description(s),
            extra={"source": "demo" if s.uses_demo_source else "prometheus"},
        )


def _auth_description(settings: Settings) -> str:
    """Which credentials callers need (names only; each worker warns when there are none)."""
    accepted = []
    if settings.api_token is not None:
        accepted.append("bearer token")
    if settings.basic_auth_user is not None:
        accepted.append("basic auth")
    if not accepted:
        return "OFF, the API is open (set PLUGIN_BACKEND_API_TOKEN)"
    signed = ", signed Grafana webhooks" if settings.webhook_secret is not None else ""
    return " or ".join(accepted) + signed


def _llm_description(settings: Settings) -> str:
    if settings.llm_provider == "none":
        return "template only (PLUGIN_BACKEND_LLM_PROVIDER=none)"
    if settings.llm_provider == "local":
        url = str(settings.llm_url) if settings.llm_url else "http://127.0.0.1:8091"
        return f"offline LLM at {url} (start it with `plugin-backend llm-serve`), else template"
    return f"LLM {settings.llm_model} at {settings.llm_url}, else template"


def gunicorn_log_config(level: str, fmt: str) -> dict[str, Any]:
    """gunicorn's own loggers in the same format as ours (JSON lines by default)."""
    formatter: dict[str, Any] = (
        {"()": "plugin_backend.logs.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"console": handler},
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": level, "handlers": ["console"], "propagate": False},
        },
    }


def check_port_free(host: str, port: int) -> None:
    """Raise ``ConfigError`` when something already listens on ``host:port``. The
    workers bind with ``SO_REUSEPORT``, which would let a second server started on the
    same port share it silently; a plain bind first refuses that, as it should."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server on "
            "this port? PLUGIN_BACKEND_HOST and PLUGIN_BACKEND_PORT set where to listen)"
        ) from None


def run_gunicorn(settings: Settings) -> int:
    if WORKER_SOCKETS:
        check_port_free(settings.host, settings.port)
    multiproc_dir = prepare_multiproc_dir(settings)
    try:
        _Application(settings, multiproc_dir).run()
    finally:
        if settings.multiproc_dir is None:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    return 0
