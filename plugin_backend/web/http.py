"""Small JSON helpers shared by the blueprints (orjson: fast, numpy-aware)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Response, request

from plugin_backend.errors import RequestError

__all__ = ["CollapseSlashes", "json_body", "json_response"]

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_REPEATED_SLASHES = re.compile(r"//+")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CollapseSlashes:
    """WSGI middleware: route ``/datasource//query`` as ``/datasource/query``.

    A datasource URL saved with a trailing slash joins to such paths; Werkzeug would
    answer them with a redirect (which Grafana passes to the browser) or a 404.
    """

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = _REPEATED_SLASHES.sub("/", path)
        return self.app(environ, start_response)


def json_response(payload: Any, status: int = 200) -> Response:
    """Serialise with orjson; numpy arrays pass straight through, NaN/±Inf become null."""
    return Response(
        orjson.dumps(payload, option=_DUMP_OPTIONS), status, mimetype="application/json"
    )


def json_body(*, empty_ok: bool = False) -> Any:
    """The decoded request body, or a ``RequestError`` naming what is wrong with it."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        if empty_ok:
            return {}
        raise RequestError("request body is empty: expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
