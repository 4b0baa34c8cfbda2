"""Counters to per-second rates before ranking.

A counter (``*_total``, and a histogram's or summary's ``_count``/``_sum``/``_bucket``)
only grows, so its level says nothing about an incident; its rate does.
``to_rates`` is PromQL's ``rate`` over consecutive samples: the increase between
two finite samples divided by their spacing, where a drop is a reset and the
increase is the value after it (the counter restarted from zero).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from plugin_backend.types import FloatArray, Series

__all__ = ["COUNTER_SUFFIXES", "is_counter", "is_counter_name", "rates_for_counters", "to_rates"]

COUNTER_SUFFIXES: tuple[str, ...] = ("_total", "_count", "_sum", "_bucket")


def is_counter_name(name: str) -> bool:
    """Whether a metric name follows a counter naming convention."""
    return name.endswith(COUNTER_SUFFIXES)


def is_counter(series: Series) -> bool:
    """Whether the series' metric name follows a counter naming convention."""
    return is_counter_name(series.metric)


def to_rates(series: Series) -> Series:
    """Per-second increase between consecutive finite samples, at the later sample.

    Same timestamps and labels as ``series`` (timestamps sorted); NaN at the first
    finite sample, wherever the input is not finite, and where two samples share a
    timestamp.
    """
    t, x = series.timestamps_s, series.values
    if t.size > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, x = t[order], x[order]
    out: FloatArray = np.full(t.shape, np.nan, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(t))
    if ok.size >= 2:
        cur, prev = ok[1:], ok[:-1]
        dv = x[cur] - x[prev]
        increase = np.where(dv < 0, x[cur], dv)  # a reset: counted from zero
        dt = t[cur] - t[prev]
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(dt > 0, increase / np.where(dt > 0, dt, 1.0), np.nan)
        out[cur] = rate
    return Series(series.labels, t.copy(), out)


def rates_for_counters(series: Iterable[Series]) -> list[Series]:
    """``to_rates`` for the counters of ``series``, the others unchanged."""
    return [to_rates(s) if is_counter(s) else s for s in series]
