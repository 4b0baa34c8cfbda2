import pytest

from plugin_backend.datasource.variables import parse_variable_query
from plugin_backend.errors import InvalidTarget


def test_label_values_of_one_label():
    q = parse_variable_query("label_values(service)")
    assert (q.function, q.label, q.selector) == ("label_values", "service", "")


def test_label_values_with_selector_containing_commas():
    q = parse_variable_query('label_values(http_requests_total{code=~"5..,4.."}, instance)')
    assert q.selector == 'http_requests_total{code=~"5..,4.."}'
    assert q.label == "instance"


def test_metrics_regex_and_label_names():
    assert parse_variable_query("metrics(^http_.*)").regex == "^http_.*"
    assert parse_variable_query("label_names()").function == "label_names"


@pytest.mark.parametrize(
    "text", ["up", "label_values()", "label_values(up, 1bad)", "metrics([)", "query_result(up)"]
)
def test_unsupported_queries_are_explained(text):
    with pytest.raises(InvalidTarget) as err:
        parse_variable_query(text)
    assert text[:6] in err.value.message or "regex" in err.value.message
