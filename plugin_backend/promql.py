"""A small PromQL lexer: label matchers, matcher injection and single-selector parsing.

Not a parser. It knows enough of PromQL's lexical structure (strings, comments,
numbers, durations, keywords, label lists, ``[...]`` ranges) to find every vector
selector of an expression, the way prom-label-proxy scopes queries, and to read
an expression that is exactly one selector. Positions in error messages are
0-based character offsets into the expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from plugin_backend.errors import InvalidQuery

__all__ = [
    "MatchOp",
    "Matcher",
    "inject_matchers",
    "is_valid_label_name",
    "is_valid_metric_name",
    "matcher_from_filter",
    "parse_selector",
    "vector_selectors",
]

MatchOp = Literal["=", "!=", "=~", "!~"]
_OPS: tuple[MatchOp, ...] = ("=~", "!~", "!=", "=")  # two-character operators first
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Numbers and durations: 0x1f, 1, 1.5, .5, 1e3, 1.5e-3, and trailing units (5m, 1h30m, 100ms).
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?\w*")
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | {
    "and", "or", "unless", "bool", "offset", "atan2", "start", "end", "inf", "nan",
}  # fmt: skip
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}


def is_valid_label_name(s: str) -> bool:
    """``[a-zA-Z_][a-zA-Z0-9_]*`` (the classic, unquoted label name)."""
    return _LABEL_NAME.fullmatch(s) is not None


def is_valid_metric_name(s: str) -> bool:
    """``[a-zA-Z_:][a-zA-Z0-9_:]*`` (the classic, unquoted metric name)."""
    return _IDENT.fullmatch(s) is not None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    # Prometheus anchors regexes fully and lets ``.`` match newlines.
    try:
        return re.compile(f"(?:{pattern})", re.DOTALL)
    except re.error as exc:
        raise InvalidQuery(f"invalid regular expression {pattern!r}: {exc}") from exc


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; a missing label matches as the empty string."""

    name: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise InvalidQuery(f"unknown label match operator {self.op!r}")
        if not self.name:
            raise InvalidQuery("label matcher with an empty label name")
        if self.op in ("=~", "!~"):
            _compile(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _compile(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        name = self.name if is_valid_label_name(self.name) else _quote(self.name)
        return f"{name}{self.op}{_quote(self.value)}"


#: Grafana's multi-value ad-hoc operators ("one of", "not one of") as PromQL regex matchers.
_MULTI_VALUE_OPS: dict[str, MatchOp] = {"=|": "=~", "!=|": "!~"}


def matcher_from_filter(
    key: str, operator: str, value: str | None, values: Sequence[str] | None = None
) -> Matcher:
    """A matcher from a Grafana ad-hoc filter (``key operator value``).

    Grafana's multi-value operators ``=|`` and ``!=|`` carry their choices in
    ``values`` (``value`` alone when there are none) and become ``=~"a|b"`` /
    ``!~"a|b"``, each choice matched literally (regex characters escaped).
    """
    if not is_valid_label_name(key):
        raise InvalidQuery(f"ad-hoc filter key {key!r} is not a valid label name")
    if operator in _MULTI_VALUE_OPS:
        choices = list(values) if values else [] if value is None else [value]
        if not choices:
            raise InvalidQuery(f"ad-hoc filter {key} {operator} has no values")
        pattern = "|".join(_regex_literal(choice) for choice in choices)
        return Matcher(key, _MULTI_VALUE_OPS[operator], pattern)
    if operator not in _OPS:
        raise InvalidQuery(
            f"ad-hoc filter operator {operator!r} is not supported by PromQL "
            "(use =, !=, =~, !~, =| or !=|)"
        )
    if value is None:
        raise InvalidQuery(f"ad-hoc filter {key} {operator} has no value")
    return Matcher(key, operator, value)


def _regex_literal(text: str) -> str:
    """``text`` as an RE2 pattern matching exactly itself."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def _skip_space(text: str, i: int) -> int:
    """Index of the next character that is neither whitespace nor inside a ``#`` comment."""
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text[i] == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        else:
            break
    return i


def _scan_string(text: str, i: int) -> tuple[int, str]:
    """Read the string literal starting at ``text[i]``; return (index after it, value)."""
    quote, j, n, out = text[i], i + 1, len(text), list[str]()
    while j < n and text[j] != quote:
        c = text[j]
        if quote == "`" or c not in "\\\n":
            out.append(c)
            j += 1
            continue
        if c == "\n" or j + 1 >= n:
            break
        e = text[j + 1]
        if e in _ESCAPES or e in "\\'\"":
            out.append(_ESCAPES.get(e, e))
            j += 2
            continue
        base, width, skip = (8, 3, 1) if e in "01234567" else (16, _HEX_WIDTH.get(e, 0), 2)
        digits = text[j + skip : j + skip + width]
        try:
            if width == 0 or len(digits) != width:
                raise ValueError(digits)
            out.append(chr(int(digits, base)))
        except ValueError:
            raise InvalidQuery(f"invalid escape sequence in string at position {j}") from None
        j += skip + width
    if j >= n or text[j] != quote:
        raise InvalidQuery(f"unterminated string literal starting at position {i}")
    return j + 1, "".join(out)


@dataclass(frozen=True, slots=True)
class _Braces:
    end: int  # index after the closing brace
    matchers: list[Matcher]
    insert_at: int  # where injected matchers go (after the last matcher or comma)
    needs_comma: bool
    name: str | None  # a quoted metric name, ``{"my.metric"}``


def _parse_braces(text: str, start: int) -> _Braces:
    """Parse the ``{...}`` whose opening brace is at ``text[start]``."""
    n, i, matchers, name = len(text), start + 1, list[Matcher](), None
    insert_at, needs_comma = i, False
    while (i := _skip_space(text, i)) < n and text[i] != "}":
        quoted = text[i] in "\"'`"
        if quoted:
            i, label = _scan_string(text, i)
        elif m := _IDENT.match(text, i):
            i, label = m.end(), m.group()
        else:
            raise InvalidQuery(f"unexpected {text[i]!r} in label matchers at position {i}")
        i = _skip_space(text, i)
        if quoted and text[i : i + 1] in (",", "}"):
            if name is not None:
                raise InvalidQuery(f"metric name set twice in selector at position {start}")
            name = label
        else:
            i, matcher = _parse_op_value(text, i, label)
            matchers.append(matcher)
        insert_at, needs_comma, i = i, True, _skip_space(text, i)
        if text[i : i + 1] == ",":
            insert_at, needs_comma, i = i + 1, False, i + 1
        elif text[i : i + 1] != "}":
            break
    if i >= n:
        raise InvalidQuery(f"unbalanced '{{' at position {start}: missing '}}'")
    if text[i] != "}":
        raise InvalidQuery(f"expected ',' or '}}' at position {i}")
    return _Braces(i + 1, matchers, insert_at, needs_comma, name)


def _parse_op_value(text: str, i: int, label: str) -> tuple[int, Matcher]:
    op = next((o for o in _OPS if text.startswith(o, i)), None)
    if op is None:
        raise InvalidQuery(f"expected a label match operator at position {i}")
    i = _skip_space(text, i + len(op))
    if text[i : i + 1] not in ("'", '"', "`"):
        raise InvalidQuery(f"expected a quoted label value at position {i}")
    i, value = _scan_string(text, i)
    return i, Matcher(label, op, value)


def _skip_label_list(text: str, start: int) -> int:
    """Index after the ``(...)`` label list that opens at ``text[start]``."""
    i, n = _skip_space(text, start + 1), len(text)
    while i < n and text[i] != ")":
        if text[i] in "\"'`":
            i = _scan_string(text, i)[0]
        elif text[i] == ",":
            i += 1
        elif m := _IDENT.match(text, i):
            i = m.end()
        else:
            raise InvalidQuery(f"unexpected {text[i]!r} in label list at position {i}")
        i = _skip_space(text, i)
    if i >= n:
        raise InvalidQuery(f"unbalanced '(' at position {start}")
    return i + 1


def inject_matchers(expr: str, matchers: Sequence[Matcher]) -> str:
    """Add ``matchers`` to every vector selector of ``expr`` (prom-label-proxy style).

    Matchers a selector already has are not repeated; otherwise they are appended,
    so a conflicting existing matcher narrows the result instead of being replaced.
    """
    if not matchers:
        return expr
    wanted, edits, parens = list(dict.fromkeys(matchers)), list[tuple[int, str]](), list[int]()
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c == "{":
            i = _inject_braces(expr, i, wanted, edits)
        elif c == "(":
            parens.append(i)
            i += 1
        elif c == ")" and parens:
            parens.pop()
            i += 1
        elif c in "}])":
            raise InvalidQuery(f"unexpected {c!r} at position {i}")
        elif (j := _skip_literal(expr, i)) > i:
            i = j
        elif m := _IDENT.match(expr, i):
            i = _inject_word(expr, m, wanted, edits)
        else:
            i += 1  # operators, commas, @
    if parens:
        raise InvalidQuery(f"unbalanced '(' at position {parens[-1]}")
    out, last = list[str](), 0
    for pos, text in edits:
        out += [expr[last:pos], text]
        last = pos
    return "".join([*out, expr[last:]])


def _skip_literal(expr: str, i: int) -> int:
    """Index after the space, comment, string, number or ``[range]`` at ``i``; else ``i``."""
    c = expr[i]
    if c.isspace() or c == "#":
        return _skip_space(expr, i)
    if c in "\"'`":
        return _scan_string(expr, i)[0]
    if c == "[":  # range or subquery: durations only
        close = expr.find("]", i)
        if close < 0 or any(b in expr[i + 1 : close] for b in "[{("):
            raise InvalidQuery(f"unbalanced '[' at position {i}")
        return close + 1
    if (c.isdigit() or (c == "." and expr[i + 1 : i + 2].isdigit())) and (
        m := _NUMBER.match(expr, i)
    ):
        return m.end()
    return i


def _inject_word(
    expr: str, m: re.Match[str], wanted: list[Matcher], edits: list[tuple[int, str]]
) -> int:
    """Handle the identifier ``m``: skip it, or record the edit that scopes its selector."""
    word, after = m.group().lower(), _skip_space(expr, m.end())
    nxt, follower = expr[after : after + 1], _IDENT.match(expr, after)
    if word in _LABEL_LIST_KEYWORDS and nxt == "(":
        return _skip_label_list(expr, after)
    if nxt == "(" or word in _KEYWORDS:
        return m.end()  # function, aggregation or keyword
    if follower and follower.group().lower() in ("by", "without"):
        return m.end()  # aggregation with a leading modifier: ``sum by (job) (...)``
    if nxt == "{":
        return _inject_braces(expr, after, wanted, edits)
    edits.append((m.end(), "{" + ",".join(map(str, wanted)) + "}"))
    return m.end()


def _inject_braces(
    expr: str, start: int, wanted: list[Matcher], edits: list[tuple[int, str]]
) -> int:
    braces = _parse_braces(expr, start)
    new = [m for m in wanted if m not in braces.matchers]
    if new:
        text = ",".join(map(str, new))
        edits.append((braces.insert_at, "," + text if braces.needs_comma else text))
    return braces.end


def vector_selectors(expr: str) -> list[str]:
    """The text of every vector selector of ``expr`` (``metric{...}``, ``metric``,
    ``{...}``), each once in order of appearance, without its range, offset or ``@``:
    ``sum by (job) (rate(x{a="b"}[5m]))`` -> ``['x{a="b"}']``. Raises InvalidQuery
    where the lexer cannot follow the expression (unbalanced braces, strings)."""
    found, i, n = list[str](), 0, len(expr)
    while i < n:
        c = expr[i]
        if c == "{":
            end = _parse_braces(expr, i).end
            found.append(expr[i:end])
            i = end
        elif (j := _skip_literal(expr, i)) > i:
            i = j
        elif m := _IDENT.match(expr, i):
            word, after = m.group().lower(), _skip_space(expr, m.end())
            nxt, follower = expr[after : after + 1], _IDENT.match(expr, after)
            if word in _LABEL_LIST_KEYWORDS and nxt == "(":
                i = _skip_label_list(expr, after)
            elif nxt == "(" or word in _KEYWORDS:
                i = m.end()  # function, aggregation or keyword
            elif follower and follower.group().lower() in ("by", "without"):
                i = m.end()  # ``sum by (job) (...)``
            elif nxt == "{":
                end = _parse_braces(expr, after).end
                found.append(m.group() + expr[after:end])
                i = end
            else:
                found.append(m.group())
                i = m.end()
        else:
            i += 1  # operators, commas, parentheses, @
    return list(dict.fromkeys(found))


def _not_selector(expr: str, reason: str) -> InvalidQuery:
    shown = expr if len(expr) <= 80 else expr[:77] + "..."
    return InvalidQuery(
        f'expected one series selector such as metric{{label="value"}}, got {shown!r}: {reason}'
    )


def parse_selector(expr: str) -> tuple[str | None, list[Matcher]]:
    """Read an expression that is exactly one vector selector.

    Returns the metric name (``metric`` or ``{"metric"}``; None when absent) and
    the matchers inside the braces, in order.
    """
    n, i, name = len(expr), _skip_space(expr, 0), None
    if i >= n:
        raise _not_selector(expr, "the expression is empty")
    if m := _IDENT.match(expr, i):
        if m.group().lower() in _KEYWORDS:
            raise _not_selector(expr, f"{m.group()!r} is a keyword, not a metric name")
        name, i = m.group(), _skip_space(expr, m.end())
    matchers: list[Matcher] = []
    if i < n and expr[i] == "{":
        braces = _parse_braces(expr, i)
        if braces.name is not None and name is not None:
            raise InvalidQuery(f"metric name set twice: {name!r} and {braces.name!r}")
        name = name if braces.name is None else braces.name
        matchers, i = braces.matchers, _skip_space(expr, braces.end)
    elif name is None:
        raise _not_selector(expr, f"unexpected {expr[i]!r} at position {i}")
    if i < n:
        raise _not_selector(expr, f"unexpected {expr[i]!r} at position {i}")
    if name is not None and any(mt.name == "__name__" for mt in matchers):
        raise InvalidQuery(f"metric name set twice in {expr!r}: by name and by __name__ matcher")
    if name is None and all(mt.matches({}) for mt in matchers):
        raise InvalidQuery(f"vector selector {expr!r} must contain at least one non-empty matcher")
    return name, matchers
