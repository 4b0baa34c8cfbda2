"""Tooling for tests and benchmarks; never imported at run time.

Nothing in the service imports this package. It holds the harness that runs a
real Prometheus (Debian package ``prometheus``: the ``prometheus`` server and
``promtool``) over synthetic, backfilled data:

* :mod:`testkit.promserver` writes OpenMetrics text, backfills
  it with ``promtool tsdb create-blocks-from openmetrics`` and starts/stops a
  throw-away Prometheus server on 127.0.0.1.
* :mod:`testkit.testdata` builds the deterministic dataset the
  integration tests and benchmarks query.
"""

from __future__ import annotations

from testkit.promserver import (
    PrometheusServer,
    SyntheticSeries,
    backfill,
    find_free_port,
    start_backfilled,
    write_openmetrics,
)

__all__ = [
    "PrometheusServer",
    "SyntheticSeries",
    "backfill",
    "find_free_port",
    "start_backfilled",
    "write_openmetrics",
]
