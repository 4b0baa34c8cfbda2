"""The ``plugin-backend`` command: thin wiring over the service.

``serve`` runs the API under gunicorn. Later subcommands (``worker``,
``score``, ``explain``, ``train``) join the same parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from plugin_backend import __version__
from plugin_backend.config import Settings, load_settings
from plugin_backend.errors import ConfigError
from plugin_backend.logs import configure_logging

__all__ = ["build_parser", "main"]

log = logging.getLogger("plugin_backend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plugin-backend",
        description="AIOps backend for Grafana: JSON datasource, anomaly scores, root cause.",
    )
    parser.add_argument("--version", action="version", version=f"plugin-backend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API under gunicorn")
    serve.add_argument("--host", help="bind address (env PLUGIN_BACKEND_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env PLUGIN_BACKEND_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 2)")
    serve.set_defaults(handler=_serve)

    check = commands.add_parser("config", help="validate the configuration and print it")
    check.set_defaults(handler=_print_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        key: value
        for key in ("host", "port", "workers")
        if (value := getattr(args, key, None)) is not None
    }
    try:
        settings = load_settings(overrides=overrides)
    except ConfigError as exc:
        print(f"plugin-backend: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    handler: Any = args.handler
    result: int = handler(settings, args)
    return result


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from plugin_backend.server import run_gunicorn

    return run_gunicorn(settings)


def _print_config(settings: Settings, _args: argparse.Namespace) -> int:
    for key, value in settings:
        print(f"{key} = {value!r}")
    return 0
