"""A short version of ``python -m benchmarks load`` for CI: zero errors (no rate
asserted: CI machines vary), worker memory stays bounded."""

from __future__ import annotations

import pytest

from benchmarks.bench_load import panel_body
from benchmarks.common import gunicorn_server
from benchmarks.load import children_of, rss_bytes, run_load

pytestmark = pytest.mark.integration


def test_repeated_panel_queries_through_gunicorn_have_no_errors(prometheus_url):
    with gunicorn_server(prometheus_url, workers=2) as (url, proc):
        workers = children_of(proc.pid)
        assert len(workers) == 2
        before = {pid: rss_bytes(pid) for pid in workers}
        result = run_load(
            url + "/datasource/query",
            panel_body(),
            rate_per_s=50,
            duration_s=4,
            threads=8,
            check=lambda r: len(r.json()[0]["datapoints"]) == 240,
        )
        after = {pid: rss_bytes(pid) for pid in workers}
    assert result.errors == {}
    assert len(result.latencies_s) == result.sent == 200
    for pid in workers:
        assert after[pid] - before[pid] < 64 * 2**20, (before, after)
