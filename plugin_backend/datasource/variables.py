"""Template-variable queries (``POST /variable``), in the Prometheus datasource's syntax.

Supported: ``label_values(label)``, ``label_values(selector, label)``,
``label_names()``, ``label_names(selector)``, ``metrics(regex)``.
"""

from __future__ import annotations

import re

from plugin_backend.errors import InvalidTarget
from plugin_backend.queries import VariableQuery

__all__ = ["parse_variable_query"]

_CALL = re.compile(r"^\s*(label_values|label_names|metrics)\s*\((.*)\)\s*$", re.DOTALL)
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

SYNTAX_HELP = (
    "use label_values(label), label_values(selector, label), label_names() or metrics(regex)"
)


def parse_variable_query(text: str) -> VariableQuery:
    match = _CALL.match(text)
    if match is None:
        raise InvalidTarget(f"unsupported variable query {text!r}: {SYNTAX_HELP}")
    function, args = match.group(1), match.group(2).strip()
    if function == "metrics":
        regex = args.strip("\"'`")
        try:
            re.compile(regex)
        except re.error as exc:
            raise InvalidTarget(f"metrics(): invalid regex {regex!r}: {exc}") from None
        return VariableQuery("metrics", regex=regex)
    if function == "label_names":
        return VariableQuery("label_names", selector=args)
    selector, label = _split_last_arg(args)
    if not _LABEL.match(label):
        raise InvalidTarget(f"label_values(): {label!r} is not a label name; {SYNTAX_HELP}")
    return VariableQuery("label_values", label=label, selector=selector)


def _split_last_arg(args: str) -> tuple[str, str]:
    """``metric{a="x,y"}, label`` -> (selector, label), splitting at the last top-level comma."""
    depth = 0
    in_string: str | None = None
    split_at = -1
    for i, ch in enumerate(args):
        if in_string:
            if ch == in_string and args[i - 1] != "\\":
                in_string = None
        elif ch in "\"'`":
            in_string = ch
        elif ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "," and depth == 0:
            split_at = i
    if split_at < 0:
        return "", args.strip()
    return args[:split_at].strip(), args[split_at + 1 :].strip()
