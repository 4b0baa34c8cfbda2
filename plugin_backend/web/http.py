"""Small JSON helpers shared by the blueprints (orjson: fast, numpy-aware)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request

from plugin_backend.errors import RequestError

__all__ = ["json_body", "json_response"]

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


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
