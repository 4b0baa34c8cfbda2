"""The real-Prometheus harness works: backfilled data is queryable as the dataset promises.

Plain ``requests`` on purpose: these tests check the harness and the dataset,
not the service's own Prometheus client.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from testkit.promserver import PrometheusServer
from testkit.testdata import (
    BENCH_SERIES,
    DATA_END_S,
    DATA_START_S,
    DAY_S,
    DEPLOY_S,
    HTTP_INSTANCES,
    WEIRD_FROM_S,
)

pytestmark = pytest.mark.integration


def _api(base_url: str, path: str, params: dict[str, Any], timeout: float = 10.0) -> Any:
    with requests.Session() as http:
        http.trust_env = False  # never send 127.0.0.1 through an HTTP(S)_PROXY
        resp = http.get(f"{base_url}{path}", params=params, timeout=timeout)
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]


def _instant(base_url: str, query: str, at: float) -> list[dict[str, Any]]:
    data = _api(base_url, "/api/v1/query", {"query": query, "time": at})
    assert data["resultType"] == "vector"
    return data["result"]


def test_bench_gauge_24h_at_15s_is_10_series_of_5761_points(prometheus_url: str) -> None:
    start = DATA_END_S - DAY_S
    data = _api(
        prometheus_url,
        "/api/v1/query_range",
        {"query": "bench_gauge", "start": start, "end": DATA_END_S, "step": 15},
    )
    assert data["resultType"] == "matrix"
    result = data["result"]
    assert sorted(s["metric"]["series"] for s in result) == [str(i) for i in range(BENCH_SERIES)]
    for s in result:
        points = s["values"]
        assert len(points) == 5_761
        assert points[0][0] == start
        assert points[-1][0] == DATA_END_S
        assert all(float(v) > 0 for _, v in points)


def test_weird_values_come_back_as_nan_and_infinity_strings(prometheus_url: str) -> None:
    late = {
        s["metric"]["case"]: s["value"][1]
        for s in _instant(prometheus_url, "weird_values", DATA_END_S - 3600)
    }
    assert late == {"nan": "NaN", "posinf": "+Inf", "neginf": "-Inf", "normal": "1"}
    early = {
        s["metric"]["case"]: s["value"][1]
        for s in _instant(prometheus_url, "weird_values", WEIRD_FROM_S - 3600)
    }
    assert early == {"nan": "1", "posinf": "1", "neginf": "1", "normal": "1"}


def test_http_request_counters_have_a_positive_rate_and_never_reset(prometheus_url: str) -> None:
    expected = sum(len(instances) for instances in HTTP_INSTANCES.values()) * 2  # two codes
    data = _api(
        prometheus_url,
        "/api/v1/query_range",
        {
            "query": "rate(http_requests_total[5m])",
            "start": DATA_START_S + 600,
            "end": DATA_END_S,
            "step": 300,
        },
    )
    assert len(data["result"]) == expected
    for s in data["result"]:
        assert all(float(v) > 0 for _, v in s["values"]), s["metric"]
    resets = _instant(prometheus_url, "max(resets(http_requests_total[2d]))", DATA_END_S)
    assert resets[0]["value"][1] == "0"
    # The rate follows a daily pattern: the busiest hour is well above the quietest.
    hourly = _api(
        prometheus_url,
        "/api/v1/query_range",
        {
            "query": 'sum(rate(http_requests_total{service="checkout",code="200"}[1h]))',
            "start": DATA_END_S - DAY_S,
            "end": DATA_END_S,
            "step": 3600,
        },
    )["result"][0]["values"]
    rates = [float(v) for _, v in hourly]
    assert max(rates) > 2 * min(rates)


def test_app_build_info_switches_version_at_the_deploy(prometheus_url: str) -> None:
    before = _instant(prometheus_url, "app_build_info", DEPLOY_S - 3600)
    after = _instant(prometheus_url, "app_build_info", DEPLOY_S + 3600)
    assert [s["metric"]["version"] for s in before] == ["v1"]
    assert [s["metric"]["version"] for s in after] == ["v2"]
    assert before[0]["metric"]["service"] == after[0]["metric"]["service"] == "checkout"


def test_pause_makes_queries_time_out_and_resume_recovers(prometheus: PrometheusServer) -> None:
    params = {"query": "bench_gauge", "time": DATA_END_S}
    prometheus.pause()
    try:
        assert prometheus.paused
        with pytest.raises(requests.exceptions.Timeout):
            _api(prometheus.url, "/api/v1/query", params, timeout=0.5)
    finally:
        prometheus.resume()
    assert not prometheus.paused
    assert len(_api(prometheus.url, "/api/v1/query", params, timeout=5)["result"]) == BENCH_SERIES


def test_restart_keeps_url_and_data(prometheus: PrometheusServer) -> None:
    url = prometheus.url
    prometheus.restart()
    assert prometheus.url == url
    assert prometheus.running
    assert len(_instant(url, "bench_gauge", DATA_END_S)) == BENCH_SERIES
