"""Load: a 1 h panel at 15 s (one series, 240 points) queried over and over through
a real gunicorn with 2 workers and a real Prometheus, at a fixed offered rate (open
loop: requests are due on a fixed schedule whatever the answers' latency); the
achieved rate beside the offered one, errors, latency percentiles measured from each
request's due time (so queueing, in the server or the client, counts), and worker
memory before and after."""

from __future__ import annotations

import time

from benchmarks.common import backfilled_prometheus, gunicorn_server, percentile, print_table
from benchmarks.load import children_of, rss_bytes, run_load
from testkit.testdata import DATA_END_S

RATE_PER_S = 200.0
DURATION_S = 60.0


def panel_body() -> dict:
    def iso(ts: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

    return {
        "range": {"from": iso(DATA_END_S - 3600), "to": iso(DATA_END_S - 15)},
        "intervalMs": 15_000,
        "maxDataPoints": 1_000,
        "targets": [
            {"refId": "A", "target": "promql", "payload": {"expr": 'bench_gauge{series="0"}'}}
        ],
    }


def main(rate_per_s: float = RATE_PER_S, duration_s: float = DURATION_S) -> None:
    with backfilled_prometheus() as prom, gunicorn_server(prom.url, workers=2) as (url, proc):
        body = panel_body()
        first = run_load(url + "/datasource/query", body, rate_per_s=20, duration_s=2)
        workers = children_of(proc.pid)
        before = {pid: rss_bytes(pid) for pid in workers}
        result = run_load(
            url + "/datasource/query",
            body,
            rate_per_s=rate_per_s,
            duration_s=duration_s,
            check=lambda r: len(r.json()[0]["datapoints"]) == 240,
        )
        after = {pid: rss_bytes(pid) for pid in workers}
    ms = [s * 1000 for s in result.latencies_s]
    rows = [
        ["offered rate", f"{rate_per_s:.0f} req/s for {duration_s:.0f} s ({result.sent} sent)"],
        ["achieved rate", f"{result.achieved_rps:.1f} req/s answered OK ({len(ms)} answers)"],
        ["errors", str(result.errors or 0)],
        [
            "p50 / p99 latency from due time",
            f"{percentile(ms, 50):.1f} / {percentile(ms, 99):.1f} ms",
        ],
        ["max latency from due time", f"{max(ms):.1f} ms"],
        ["max wait for a client thread", f"{result.max_start_delay_s * 1000:.1f} ms"],
        *[
            [f"worker {pid} RSS", f"{before[pid] / 2**20:.0f} -> {after[pid] / 2**20:.0f} MiB"]
            for pid in workers
        ],
        ["warm-up errors", str(first.errors or 0)],
    ]
    print_table("Load: 1 h panel at 15 s, 240 points, gunicorn 2 workers", ["", ""], rows)
