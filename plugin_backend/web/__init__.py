"""HTTP delivery: the Flask app factory and its blueprints."""

from plugin_backend.web.app import create_app

__all__ = ["create_app"]
