"""One real request per endpoint (and per response form), as the plugin sends them."""

from __future__ import annotations

from typing import Any

RANGE = {"from": "2026-01-01T12:00:00.000Z", "to": "2026-01-01T13:00:00.000Z"}

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "metrics": ("/metrics", {"metric": "", "payload": {}}),
    "metric-payload-options": (
        "/metric-payload-options",
        {"metric": "promql", "payload": {}, "name": "metric"},
    ),
    "query-timeseries": (
        "/query",
        {
            "range": RANGE,
            "intervalMs": 15_000,
            "maxDataPoints": 500,
            "targets": [
                {
                    "refId": "A",
                    "target": "promql",
                    "payload": {"expr": 'http_requests_per_second{service="checkout"}'},
                }
            ],
        },
    ),
    "query-table": (
        "/query",
        {
            "range": RANGE,
            "intervalMs": 60_000,
            "targets": [
                {
                    "refId": "A",
                    "target": "promql",
                    "payload": {"expr": "node_cpu_usage_ratio", "format": "table"},
                }
            ],
        },
    ),
    **{
        f"query-{kind}": (
            "/query",
            {
                "range": {"from": "2026-01-01T04:00:00.000Z", "to": "2026-01-01T08:00:00.000Z"},
                "intervalMs": 60_000,
                "maxDataPoints": 500,
                "targets": [
                    {
                        "refId": "A",
                        "target": kind,
                        "payload": {"expr": "pg_connections_in_use", "detector": "robust_z"},
                    }
                ],
            },
        )
        for kind in ("anomaly_score", "band", "anomalies")
    },
    "variable": ("/variable", {"payload": {"target": "label_values(service)"}, "range": RANGE}),
    "tag-keys": ("/tag-keys", {}),
    "tag-values": ("/tag-values", {"key": "service"}),
    "search": ("/search", {"target": ""}),
    "annotations": (
        "/annotations",
        {
            "annotation": {"name": "builds", "query": "app_build_info"},
            "range": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
        },
    ),
}
