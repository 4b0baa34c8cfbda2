"""The small PromQL lexer: matchers, matcher injection, single-selector parsing."""

from __future__ import annotations

import pytest

from plugin_backend.errors import InvalidQuery
from plugin_backend.promql import (
    Matcher,
    inject_matchers,
    is_valid_label_name,
    is_valid_metric_name,
    matcher_from_filter,
    parse_selector,
    vector_selectors,
)

API = [Matcher("service", "=", "api")]


# --- Matcher ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "labels", "expected"),
    [
        ("=", "api", {"service": "api"}, True),
        ("=", "api", {"service": "web"}, False),
        ("=", "", {}, True),  # a missing label is the empty string
        ("=", "", {"service": "api"}, False),
        ("!=", "api", {"service": "web"}, True),
        ("!=", "api", {}, True),
        ("!=", "", {}, False),
        ("=~", "ap.", {"service": "api"}, True),
        ("=~", "a", {"service": "api"}, False),  # fully anchored
        ("=~", "pi", {"service": "api"}, False),
        ("=~", "api|web", {"service": "web"}, True),
        ("=~", ".*", {}, True),
        ("=~", ".+", {}, False),
        ("=~", "a.b", {"service": "a\nb"}, True),  # . matches newlines, as in Prometheus
        ("!~", "ap.", {"service": "api"}, False),
        ("!~", "a", {"service": "api"}, True),
        ("!~", ".+", {}, True),
    ],
)
def test_matcher_semantics(op, value, labels, expected):
    assert Matcher("service", op, value).matches(labels) is expected


def test_regex_alternation_is_anchored_as_a_whole():
    m = Matcher("x", "=~", "a|b")
    assert m.matches({"x": "a"})
    assert not m.matches({"x": "ab"})
    assert not m.matches({"x": "a\n"})  # no $-before-trailing-newline loophole


def test_matcher_str_escapes_backslash_quote_and_newline():
    assert str(Matcher("a", "=", "plain")) == 'a="plain"'
    assert str(Matcher("a", "!=", 'x"y\\z\nw')) == 'a!="x\\"y\\\\z\\nw"'


def test_matcher_str_round_trips_through_parse_selector():
    original = Matcher("path", "=~", '/api/"v1"\\.*\n')
    assert parse_selector(f"m{{{original}}}") == ("m", [original])


def test_invalid_regex_and_operator_are_invalid_query():
    with pytest.raises(InvalidQuery, match="invalid regular expression"):
        Matcher("a", "=~", "(unclosed")
    with pytest.raises(InvalidQuery, match="operator"):
        Matcher("a", "==", "x")  # type: ignore[arg-type]


def test_matchers_are_hashable_values():
    assert Matcher("a", "=", "x") == Matcher("a", "=", "x")
    assert len({Matcher("a", "=", "x"), Matcher("a", "=", "x")}) == 1


# --- ad-hoc filters --------------------------------------------------------------------


@pytest.mark.parametrize("op", ["=", "!=", "=~", "!~"])
def test_matcher_from_filter_accepts_promql_operators(op):
    assert matcher_from_filter("service", op, "api") == Matcher("service", op, "api")


@pytest.mark.parametrize(("op", "regex_op"), [("=|", "=~"), ("!=|", "!~")])
def test_grafana_multi_value_operators_become_literal_regex_alternatives(op, regex_op):
    matcher = matcher_from_filter("pod", op, "a.b", ["a.b", "c|d", "x(1)"])
    assert matcher.op == regex_op
    assert str(matcher) == f'pod{regex_op}"a\\\\.b|c\\\\|d|x\\\\(1\\\\)"'
    chosen = {value: matcher.matches({"pod": value}) for value in ("a.b", "c|d", "x(1)", "axb")}
    if op == "=|":
        assert chosen == {"a.b": True, "c|d": True, "x(1)": True, "axb": False}
    else:
        assert chosen == {"a.b": False, "c|d": False, "x(1)": False, "axb": True}


def test_multi_value_operator_without_values_uses_value_and_needs_one():
    assert matcher_from_filter("pod", "=|", "api") == Matcher("pod", "=~", "api")
    with pytest.raises(InvalidQuery, match="no values"):
        matcher_from_filter("pod", "=|", None, [])
    with pytest.raises(InvalidQuery, match="no value"):
        matcher_from_filter("pod", "=", None)


@pytest.mark.parametrize("op", ["<", ">"])
def test_matcher_from_filter_rejects_grafana_comparisons_naming_them(op):
    with pytest.raises(InvalidQuery, match=f"'{op}'"):
        matcher_from_filter("service", op, "1")


@pytest.mark.parametrize("key", ["", "1abc", "a-b", "a.b", "a b", "__name__ "])
def test_matcher_from_filter_rejects_bad_label_names(key):
    with pytest.raises(InvalidQuery, match="label name"):
        matcher_from_filter(key, "=", "x")


def test_matcher_from_filter_validates_regex():
    with pytest.raises(InvalidQuery):
        matcher_from_filter("service", "=~", "[")


# --- names -----------------------------------------------------------------------------


def test_name_validity():
    assert is_valid_label_name("_a1")
    assert not is_valid_label_name("a:b")
    assert not is_valid_label_name("1a")
    assert not is_valid_label_name("")
    assert is_valid_metric_name("job:rate5m")
    assert is_valid_metric_name(":x")
    assert not is_valid_metric_name("a-b")
    assert not is_valid_metric_name("")


# --- inject_matchers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum by (job) (rate(http_requests_total{code="500"}[5m]))'
            " / sum(rate(http_requests_total[5m]))",
            'sum by (job) (rate(http_requests_total{code="500",service="api"}[5m]))'
            ' / sum(rate(http_requests_total{service="api"}[5m]))',
        ),
        ("up", 'up{service="api"}'),
        ("up{}", 'up{service="api"}'),
        ("up{ }", 'up{service="api" }'),
        ('up{a="b",}', 'up{a="b",service="api"}'),
        ('up {a="b"}', 'up {a="b",service="api"}'),
        ('{__name__=~"x"}', '{__name__=~"x",service="api"}'),
        ("job:rate5m", 'job:rate5m{service="api"}'),
        (":weird:name", ':weird:name{service="api"}'),
        ("rate(x[1h:5m])", 'rate(x{service="api"}[1h:5m])'),
        ("max_over_time(rate(x[5m])[1h:])", 'max_over_time(rate(x{service="api"}[5m])[1h:])'),
        ("x offset 5m", 'x{service="api"} offset 5m'),
        ("x[5m] offset -1h30m", 'x{service="api"}[5m] offset -1h30m'),
        ("x @ 1609746000", 'x{service="api"} @ 1609746000'),
        ("x @ start() - x @ end()", 'x{service="api"} @ start() - x{service="api"} @ end()'),
        ("1e3 * x + 0x1f - Inf / NaN", '1e3 * x{service="api"} + 0x1f - Inf / NaN'),
        ("2.5e-3 * .5 * 1.", "2.5e-3 * .5 * 1."),
        (
            "a and b or c unless d",
            'a{service="api"} and b{service="api"} or c{service="api"} unless d{service="api"}',
        ),
        ("a > bool 1", 'a{service="api"} > bool 1'),
        ("a AND b", 'a{service="api"} AND b{service="api"}'),
        ("sum(x) by (job, le)", 'sum(x{service="api"}) by (job, le)'),
        ("sum without (instance) (x)", 'sum without (instance) (x{service="api"})'),
        ("count by(le)(x)", 'count by(le)(x{service="api"})'),
        (
            "a * on(instance) group_left(version) b",
            'a{service="api"} * on(instance) group_left(version) b{service="api"}',
        ),
        (
            "a / ignoring(code) group_right b",
            'a{service="api"} / ignoring(code) group_right b{service="api"}',
        ),
        ("atan2(a, b)", 'atan2(a{service="api"}, b{service="api"})'),
        ("a atan2 b", 'a{service="api"} atan2 b{service="api"}'),
        ("topk(5, x)", 'topk(5, x{service="api"})'),
        ("quantile(0.9, x)", 'quantile(0.9, x{service="api"})'),
        ('count_values("version", x)', 'count_values("version", x{service="api"})'),
        (
            'label_replace(up, "dst", "$1", "src", "(.*)")',
            'label_replace(up{service="api"}, "dst", "$1", "src", "(.*)")',
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))",
            'histogram_quantile(0.99, sum by (le) (rate(h_bucket{service="api"}[5m])))',
        ),
        ("-x", '-x{service="api"}'),
        ("vector(1)", "vector(1)"),
        ("time() - x", 'time() - x{service="api"}'),
        ('x{a="}{ up"}', 'x{a="}{ up",service="api"}'),
        ("x{a='single \\' quote'}", "x{a='single \\' quote',service=\"api\"}"),
        ("x{a=`raw \\ { }`}", 'x{a=`raw \\ { }`,service="api"}'),
        ('x{a="esc \\" }"}', 'x{a="esc \\" }",service="api"}'),
        (
            "x # comment with y{ and rate(\n+ y",
            'x{service="api"} # comment with y{ and rate(\n+ y{service="api"}',
        ),
        ('x{a="b" # inline\n}', 'x{a="b",service="api" # inline\n}'),
        ('x{code="500", method=~"GET|POST"}', 'x{code="500", method=~"GET|POST",service="api"}'),
        ('x{"quoted.label"="v"}', 'x{"quoted.label"="v",service="api"}'),
        ('{"my.metric"}', '{"my.metric",service="api"}'),
        ('"a string"', '"a string"'),
        ("sum by (job) (x)\n", 'sum by (job) (x{service="api"})\n'),
    ],
)
def test_inject_matchers(expr, expected):
    assert inject_matchers(expr, API) == expected


def test_inject_keeps_an_identical_existing_matcher_once():
    assert inject_matchers('x{service="api"}', API) == 'x{service="api"}'
    assert inject_matchers('x{service="web"}', API) == 'x{service="web",service="api"}'


def test_inject_several_matchers_in_order_without_duplicates():
    matchers = [Matcher("a", "=", "1"), Matcher("b", "=~", "2|3"), Matcher("a", "=", "1")]
    assert inject_matchers("x", matchers) == 'x{a="1",b=~"2|3"}'


def test_inject_escapes_values():
    assert inject_matchers("x", [Matcher("p", "=", 'say "hi"\n')]) == 'x{p="say \\"hi\\"\\n"}'


def test_inject_with_no_matchers_returns_expr_unchanged():
    assert inject_matchers("anything at all {", []) == "anything at all {"


def test_injected_selector_parses_back():
    name, matchers = parse_selector(inject_matchers('job:rate5m{code=~"5.."}', API))
    assert name == "job:rate5m"
    assert matchers == [Matcher("code", "=~", "5.."), *API]


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ('x{a="b"', "unbalanced '{' at position 1"),
        ('x{a="b}', "unterminated string literal starting at position 4"),
        ("x{a='b}", "unterminated string literal starting at position 4"),
        ("x{a=`b}", "unterminated string literal starting at position 4"),
        ('label_replace(x, "a', "unterminated string literal starting at position 17"),
        ('x{a="b\nc"}', "unterminated string literal"),
        ("x}", "unexpected '}' at position 1"),
        ("sum(x))", "unexpected ')' at position 6"),
        ("sum(x", "unbalanced '(' at position 3"),
        ("sum by (job (x)", "unexpected '(' in label list at position 12"),
        ("sum by (job", "unbalanced '(' at position 7"),
        ("rate(x[5m)", "unbalanced '[' at position 6"),
        ("x]", "unexpected ']' at position 1"),
        ('x{a="b" c="d"}', "expected ',' or '}' at position 8"),
        ("x{a}", "expected a label match operator at position 3"),
        ("x{a=b}", "expected a quoted label value at position 4"),
        ('x{a="\\q"}', "invalid escape sequence"),
        ('x{a=~"("}', "invalid regular expression"),
    ],
)
def test_inject_rejects_malformed_expressions_naming_the_position(expr, fragment):
    with pytest.raises(InvalidQuery) as info:
        inject_matchers(expr, API)
    assert fragment in info.value.message


def test_string_escapes_are_decoded():
    _, matchers = parse_selector(r'x{a="\t\x41\u00e9\101\\"}')
    assert matchers[0].value == "\tAé" + "A\\"


# --- parse_selector --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "name", "matchers"),
    [
        ("up", "up", []),
        ("  job:rate5m  ", "job:rate5m", []),
        ('up{job="demo"}', "up", [Matcher("job", "=", "demo")]),
        (
            'http_requests_total { code !~ "5..", method="GET", }',
            "http_requests_total",
            [Matcher("code", "!~", "5.."), Matcher("method", "=", "GET")],
        ),
        ('{__name__=~"pg_.*"}', None, [Matcher("__name__", "=~", "pg_.*")]),
        ('{job="demo"}', None, [Matcher("job", "=", "demo")]),
        ('{"my.metric", "my.label"="x"}', "my.metric", [Matcher("my.label", "=", "x")]),
        ("up # the usual\n", "up", []),
    ],
)
def test_parse_selector(expr, name, matchers):
    assert parse_selector(expr) == (name, matchers)


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("rate(x[5m])", "expected one series selector"),
        ("sum(x)", "expected one series selector"),
        ("x + y", "expected one series selector"),
        ("x[5m]", "expected one series selector"),
        ("x offset 5m", "expected one series selector"),
        ('x{a="b"} y', "expected one series selector"),
        ("1", "expected one series selector"),
        ('"string"', "expected one series selector"),
        ("by", "keyword"),
        ("{}", "at least one non-empty matcher"),
        ('{a=~".*"}', "at least one non-empty matcher"),
        ('{a=""}', "at least one non-empty matcher"),
        ('x{__name__="y"}', "metric name set twice"),
        ('x{"y"}', "metric name set twice"),
        ('x{a="b"', "unbalanced '{'"),
        ('x{a="b', "unterminated string"),
    ],
)
def test_parse_selector_rejects_everything_else(expr, fragment):
    with pytest.raises(InvalidQuery) as info:
        parse_selector(expr)
    assert fragment in info.value.message


def test_parse_selector_message_shows_an_example():
    with pytest.raises(InvalidQuery, match=r'metric\{label="value"\}'):
        parse_selector("sum(x)")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('x{a="b"}', ['x{a="b"}']),
        ("up", ["up"]),
        ('sum by (service) (rate(x_total{a="b"}[5m] offset 1h))', ['x_total{a="b"}']),
        ('histogram_quantile(0.99, sum by (le) (rate(h_bucket{job=~"a|b"}[5m])))',
         ['h_bucket{job=~"a|b"}']),
        ("rate(a[5m]) / on(job) group_left (x) b", ["a", "b"]),
        ("sum(x) without (job) + sum without (job) (x)", ["x"]),
        ('{__name__="a"} > 2 and b @ start()', ['{__name__="a"}', "b"]),
        ("max_over_time(rate(x[5m])[1h:1m])", ["x"]),
        ("vector(1) * 2.5e3", []),
        ('x # a comment naming y{a="b"}', ["x"]),
    ],
)  # fmt: skip
def test_vector_selectors_finds_each_selector_of_an_expression(expr, expected):
    assert vector_selectors(expr) == expected


def test_vector_selectors_rejects_what_the_lexer_cannot_follow():
    with pytest.raises(InvalidQuery, match="expected ',' or '}'"):
        vector_selectors('rate(x{a="b"[5m])')
