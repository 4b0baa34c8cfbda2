"""docs/configuration.md, rendered from the ``Settings`` fields: variable, type, default
and description. ``make docs`` writes it; a test keeps the committed page equal to this
output, so a setting cannot be added without its documentation.

    python -m plugin_backend.config_doc > docs/configuration.md
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import AnyHttpUrl, SecretStr
from pydantic.fields import FieldInfo

from plugin_backend.config import CONFIG_FILE_VAR, ENV_PREFIX, Settings

__all__ = ["render_configuration"]

# Section headings, by the first field of each block in ``Settings``.
SECTIONS = {
    "host": "Serving",
    "api_token": "Who may call the service",
    "prometheus_url": "The series source",
    "llm_provider": "The LLM that phrases root-cause notes",
    "readiness_timeout_s": "Probes, store, worker, Grafana and limits",
}
# Defaults computed on the running machine: shown as what they mean, not as a value.
DEFAULT_TEXT = {
    "store_url": "SQLite file `$XDG_STATE_HOME/plugin-backend/plugin-backend.db` "
    "(`~/.local/state/...`)",
}

INTRO = f"""\
# Configuration

<!-- Generated from plugin_backend/config.py by `make docs`
     (python -m plugin_backend.config_doc); tests/test_config_doc.py checks it. Edit the
     Field descriptions there, not this page. -->

Settings come from environment variables (prefix `{ENV_PREFIX}`) and, optionally, a
YAML file named by `{CONFIG_FILE_VAR}` whose keys are the same names in lower case
without the prefix (`api_token: ...`). The environment wins over the file.

* **Set but empty means unset.** `{ENV_PREFIX}PROMETHEUS_URL=` (as shells, compose files
  and Helm values write it) leaves the default in place, for every setting.
* **Comma-separated lists** (`{ENV_PREFIX}WARM_DETECTORS`,
  `{ENV_PREFIX}GRAFANA_CHANGE_TAGS`) take `a,b,c`; the single word `none` makes the
  list empty (an empty variable is unset, so it cannot).
* A bad or unknown setting stops start-up with a message naming it.
  `plugin-backend config` prints the effective settings, secrets as `**********`.

The variables, in the order `Settings` declares them:
"""


def render_configuration() -> str:
    """The whole markdown page, ending with one newline."""
    lines = [INTRO.rstrip("\n")]
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            lines += ["", f"## {SECTIONS[name]}", ""]
            lines += ["| variable | type | default | meaning |", "|---|---|---|---|"]
        variable = f"`{ENV_PREFIX}{name.upper()}`"
        row = [variable, _type(field), _default(name, field), _cell(field.description or "")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type(field: FieldInfo) -> str:
    kind = _kind(field.annotation)
    bounds = []
    for rule in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(rule, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sign} {_number(getattr(rule, attr))}")
    return _cell(kind + (f" ({', '.join(bounds)})" if bounds else ""))


def _kind(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_kind(a) for a in members)
    if origin is Literal:
        return " | ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin is list:
        return "comma-separated list"
    if origin is dict:
        return "headers"
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "text",
        Path: "file path",
        SecretStr: "secret",
        AnyHttpUrl: "URL",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(name: str, field: FieldInfo) -> str:
    if name in DEFAULT_TEXT:
        return _cell(DEFAULT_TEXT[name])
    value = field.get_default(call_default_factory=True)
    if value is None or value in ("", {}, []):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`" + ",".join(str(v) for v in value) + "`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


if __name__ == "__main__":
    print(render_configuration(), end="")
