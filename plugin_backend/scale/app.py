"""``celery -A plugin_backend.scale.app worker``: the Celery app, configured from the
environment (``PLUGIN_BACKEND_BROKER_URL``, ``PLUGIN_BACKEND_RULES``, the store...)
when the worker starts, logging as ``plugin-backend`` does. Each worker also runs a
tick scheduler; the store keeps any number of them from doubling a tick."""

from typing import Any

from celery.signals import setup_logging

from plugin_backend.config import load_settings
from plugin_backend.logs import configure_logging
from plugin_backend.scale.tasks import create_celery

app = create_celery()


def _configure_logging(**_: Any) -> None:
    """Our log format and level (PLUGIN_BACKEND_LOG_*) instead of Celery's."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)


setup_logging.connect(_configure_logging, weak=False)
