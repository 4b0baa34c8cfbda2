"""plugin_backend: an AIOps backend for Grafana over Prometheus."""

__all__ = ["__version__"]

__version__ = "0.1.0"
