"""``celery -A plugin_backend.scale.app worker``: the Celery app, configured from the
environment (``PLUGIN_BACKEND_BROKER_URL``, ``PLUGIN_BACKEND_RULES``, the store...)
when the worker starts. Each worker also runs a tick scheduler; the store keeps any
number of them from doubling a tick."""

from plugin_backend.scale.tasks import create_celery

app = create_celery()
