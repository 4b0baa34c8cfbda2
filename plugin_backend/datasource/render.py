"""Render results in the shapes the plugin accepts.

Time series ``{"target", "datapoints": [[value, epoch_ms], ...]}`` carry their
datapoints as a C-contiguous numpy array: the web layer serialises it with
orjson, which writes NaN and ±Inf as ``null`` (JSON has no such numbers; the
plugin shows a gap).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from plugin_backend.incidents import Incident
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.windows import AnomalyWindow
from plugin_backend.types import Labels, Series, format_series_name

__all__ = [
    "annotation_event",
    "legend_name",
    "metric_find_values",
    "table_frame",
    "timeseries_frame",
    "window_text",
    "windows_table",
]

_LEGEND_VAR = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def legend_name(labels: Labels, legend: str | None = None) -> str:
    """Series name from labels: Prometheus notation, or a ``{{label}}`` legend template."""
    if legend:
        return _LEGEND_VAR.sub(lambda m: labels.get(m.group(1), ""), legend)
    return format_series_name(labels)


def timeseries_frame(name: str, series: Series) -> dict[str, Any]:
    datapoints = np.empty((len(series), 2), dtype=np.float64)
    datapoints[:, 0] = series.values
    np.multiply(series.timestamps_s, 1000.0, out=datapoints[:, 1])
    np.round(datapoints[:, 1], out=datapoints[:, 1])
    return {"target": name, "datapoints": datapoints}


def table_frame(series_list: Sequence[Series], value_column: str = "Value") -> dict[str, Any]:
    """Long-form table: one row per point, a column per label (sorted), then the value."""
    label_names = sorted({k for s in series_list for k in s.labels})
    columns = [{"text": "Time", "type": "time"}]
    columns += [{"text": name, "type": "string"} for name in label_names]
    columns.append({"text": value_column, "type": "number"})
    rows: list[list[Any]] = []
    for series in series_list:
        label_values = [series.labels.get(name, "") for name in label_names]
        for ts, value in zip(series.timestamps_s.tolist(), series.values.tolist(), strict=True):
            rows.append([round(ts * 1000), *label_values, _json_number(value)])
    rows.sort(key=lambda row: row[0])
    return {"type": "table", "columns": columns, "rows": rows}


def metric_find_values(values: Iterable[str]) -> list[dict[str, str]]:
    """Variable answer: ``__text``/``__value`` (what the plugin's parser reads) plus
    ``text``/``value`` (what the OpenAPI spec requires)."""
    return [{"__text": v, "__value": v, "text": v, "value": v} for v in values]


def annotation_event(
    *, time_s: float, time_end_s: float, title: str, text: str, tags: Sequence[str]
) -> dict[str, Any]:
    return {
        "time": round(time_s * 1000),
        "timeEnd": round(time_end_s * 1000),
        "title": title,
        "text": text,
        "tags": list(tags),
    }


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def windows_table(rows: Sequence[tuple[str, AnomalyWindow, ScoredSeries]]) -> dict[str, Any]:
    """Anomaly windows as a table whose ``time``/``timeEnd``/``title``/``text``/``tags``
    columns Grafana turns into annotations natively."""
    columns = [
        {"text": "time", "type": "time"},
        {"text": "timeEnd", "type": "time"},
        {"text": "title", "type": "string"},
        {"text": "text", "type": "string"},
        {"text": "tags", "type": "string"},
        {"text": "series", "type": "string"},
        {"text": "direction", "type": "string"},
        {"text": "peak_score", "type": "number"},
        {"text": "status", "type": "string"},
    ]
    out = []
    for name, window, scored in sorted(rows, key=lambda r: r[1].start_s):
        out.append(
            [
                round(window.start_s * 1000),
                round(window.end_s * 1000),
                f"Anomaly ({window.direction}) on {name}",
                window_text(name, window, scored),
                ",".join(["anomaly", window.direction]),
                name,
                window.direction,
                _json_number(round(window.peak_score, 2)),
                "open" if window.open else "closed",
            ]
        )
    return {"type": "table", "columns": columns, "rows": out}


def window_text(name: str, window: AnomalyWindow, scored: ScoredSeries) -> str:
    """One line an on-call engineer can act on: what, how far off, when."""
    at = int(np.searchsorted(scored.timestamps_s, window.peak_s))
    at = min(at, len(scored) - 1)
    value, expected = scored.values[at], scored.expected[at]
    when = datetime.fromtimestamp(window.peak_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    state = "ongoing" if window.open else f"lasted {_duration(window.end_s - window.start_s)}"
    return (
        f"{name} was {'above' if window.direction == 'up' else 'below'} its expected band; "
        f"peak score {window.peak_score:.1f} at {when} (value {_fmt(value)}, expected "
        f"{_fmt(expected)}); {state}."
    )


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def _duration(seconds: float) -> str:
    minutes = max(round(seconds / 60), 1)
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def incidents_table(incidents: Sequence[Incident], link_base: str | None) -> dict[str, Any]:
    """Incidents as a table: ``time``/``timeEnd``/``title``/``text``/``tags`` become
    annotations; the rest feeds an incidents table panel (``link``: the incident page)."""
    columns = [
        {"text": "time", "type": "time"},
        {"text": "timeEnd", "type": "time"},
        {"text": "title", "type": "string"},
        {"text": "text", "type": "string"},
        {"text": "tags", "type": "string"},
        {"text": "id", "type": "string"},
        {"text": "rule", "type": "string"},
        {"text": "series", "type": "string"},
        {"text": "status", "type": "string"},
        {"text": "score", "type": "number"},
        {"text": "cause", "type": "string"},
        {"text": "link", "type": "string"},
    ]
    rows = []
    for incident in sorted(incidents, key=lambda i: i.start_s):
        tags = ["incident", incident.status]
        if incident.rule:
            tags.append(incident.rule)
        peak = incident.peak_score
        rows.append(
            [
                round(incident.start_s * 1000),
                round(max(incident.end_s, incident.start_s) * 1000),
                incident.title,
                incident.note or incident.title,
                ",".join(tags),
                incident.id,
                incident.rule or "",
                incident.series,
                incident.status,
                _json_number(round(peak, 2)) if peak is not None else None,
                incident.cause or "",
                f"{link_base or ''}/incidents/{incident.id}",
            ]
        )
    return {"type": "table", "columns": columns, "rows": rows}
