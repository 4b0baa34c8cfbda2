"""View models of the incident pages (pure): an incident, its report and fetched
series in; display values, timelines and inline SVG plots out. ``pages.py`` does the
I/O and renders them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from markupsafe import Markup

from plugin_backend.detection import DetectOptions, SeriesAnomalies
from plugin_backend.errors import InvalidQuery
from plugin_backend.incidents import Incident
from plugin_backend.promql import Matcher, is_valid_metric_name
from plugin_backend.types import Series, format_series_name
from plugin_backend.watch import DETECTION_KEY
from plugin_backend.web.plots import Band, Line, Marker, Shade, format_number, time_plot

__all__ = [
    "CauseView",
    "IncidentRow",
    "SymptomScoring",
    "TimelineEvent",
    "cause_plot",
    "cause_selector",
    "cause_views",
    "format_duration",
    "format_time",
    "grafana_link",
    "incident_row",
    "llm_view",
    "pick_symptom",
    "plot_range",
    "plot_step",
    "symptom_plot",
    "symptom_scoring",
    "timeline",
]

BEFORE_S = 3600.0  # plotted before the incident's start
AFTER_S = 1800.0  # and after its end (never past now)
TOP_CAUSES = 5
PLOT_POINTS = 720  # about one point per plot pixel
NONE = "\N{EN DASH}"  # shown for a missing value
_NORMAL_COLOUR = "#2e7d32"


def format_time(ts: float | None) -> str:
    """``2025-11-24 21:02:15 UTC`` (a dash for none)."""
    if ts is None or not math.isfinite(ts):
        return NONE
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min 30 s``, ``1 h 05 min``, ``2 d 3 h``."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        minutes, rest = divmod(s, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    if s < 86400:
        hours, rest = divmod(s, 3600)
        return f"{hours} h {rest // 60:02d} min"
    days, rest = divmod(s, 86400)
    return f"{days} d {rest // 3600} h"


def plot_range(incident: Incident, now_s: float) -> tuple[float, float]:
    """``[start - 1 h, end + 30 min]``, never past ``now_s``."""
    start = incident.start_s - BEFORE_S
    end = min(max(incident.end_s, incident.start_s) + AFTER_S, now_s)
    return start, max(end, incident.start_s + 60.0)


def plot_step(x_range: tuple[float, float]) -> float:
    """A step (multiple of 15 s) giving about ``PLOT_POINTS`` points over ``x_range``."""
    raw = (x_range[1] - x_range[0]) / PLOT_POINTS
    return max(15.0, math.ceil(raw / 15.0) * 15.0)


@dataclass(frozen=True, slots=True)
class SymptomScoring:
    """How the incident page scores the symptom: as its rule did, where it recorded how."""

    options: DetectOptions
    step_s: float | None  # the rule's step (None: the plot's own)
    from_rule: bool

    def describe(self) -> str:
        """``the ensemble detector (direction up, sensitivity 1), as rule x scored it``."""
        o = self.options
        what = f"the {o.detector} detector (direction {o.direction}, sensitivity {o.sensitivity:g})"
        if self.from_rule:
            return f"{what}, as its rule scored it"
        return f"{what}: the default, since no rule recorded how this incident was scored"


def symptom_scoring(incident: Incident, default_detector: str) -> SymptomScoring:
    """The options an incident's rule recorded in its report, else the defaults."""
    record = (incident.report or {}).get(DETECTION_KEY)
    if not isinstance(record, Mapping) or not isinstance(record.get("detector"), str):
        return SymptomScoring(DetectOptions(detector=default_detector), None, from_rule=False)
    step = record.get("step_s")
    options = DetectOptions(
        detector=record["detector"],
        direction=str(record.get("direction") or "both"),
        sensitivity=float(record.get("sensitivity") or 1.0),
        min_deviation=float(record.get("min_deviation") or 0.0),
    )
    step_s = float(step) if isinstance(step, int | float) and step > 0 else None
    return SymptomScoring(options, step_s, from_rule=True)


def cause_selector(cause: Mapping[str, Any]) -> str:
    """The PromQL selector of one cause's series, from its labels (values quoted)."""
    labels = cause.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    name = str(labels.get("__name__") or cause.get("metric") or "")
    matchers = [Matcher(str(k), "=", str(v)) for k, v in sorted(labels.items()) if k != "__name__"]
    if is_valid_metric_name(name):
        return f"{name}{{{', '.join(str(m) for m in matchers)}}}"
    if name:
        matchers.insert(0, Matcher("__name__", "=", name))
    if not matchers:
        raise InvalidQuery("the cause has neither a metric name nor labels")
    return "{" + ", ".join(str(m) for m in matchers) + "}"


def grafana_link(
    grafana_url: str | None, incident: Incident, x_range: tuple[float, float]
) -> str | None:
    """The incident's panel in Grafana over the plotted range, when it has one."""
    if not grafana_url or not incident.dashboard_uid:
        return None
    params: dict[str, str | int] = {}
    if incident.panel_id is not None:
        params["viewPanel"] = incident.panel_id
    params["from"] = round(x_range[0] * 1000)
    params["to"] = round(x_range[1] * 1000)
    base = grafana_url.rstrip("/")
    return f"{base}/d/{quote(incident.dashboard_uid, safe='')}?{urlencode(params)}"


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    at_s: float
    what: str
    kind: str  # cause | start | confirmed | end
    time_text: str = ""
    offset_text: str = ""


def timeline(incident: Incident, causes: Sequence[Mapping[str, Any]]) -> list[TimelineEvent]:
    """Cause onsets, the symptom's start, the alarm, the end: in time order."""
    events: list[tuple[float, str, str]] = []
    for rank, cause in enumerate(causes, 1):
        onset = _as_float(cause.get("onset"))
        if onset is not None:
            events.append((onset, f"#{rank} {cause.get('series', '?')} changed", "cause"))
    events.append((incident.start_s, f"symptom {incident.series} left its band", "start"))
    report = incident.report or {}
    symptom = report.get("symptom")
    confirmed = _as_float(symptom.get("at")) if isinstance(symptom, Mapping) else None
    if confirmed is not None:
        events.append((confirmed, "alarm confirmed, root cause analysed", "confirmed"))
    if incident.status == "closed":
        events.append((incident.end_s, "incident ended", "end"))
    else:
        events.append((incident.end_s, "last anomalous point so far (ongoing)", "end"))
    order = {"cause": 0, "start": 1, "confirmed": 2, "end": 3}
    events.sort(key=lambda e: (e[0], order[e[2]]))
    return [
        TimelineEvent(at, what, kind, format_time(at), _offset(at - incident.start_s))
        for at, what, kind in events
    ]


@dataclass(frozen=True, slots=True)
class CauseView:
    """One ranked cause as the page shows it (``svg`` or ``error`` once fetched)."""

    rank: int
    series: str
    metric: str
    labels: list[tuple[str, str]]
    score_text: str
    kind: str
    direction: str
    baseline_text: str
    incident_text: str
    peak_text: str
    magnitude_text: str
    onset_s: float | None
    onset_text: str
    lead_text: str
    entity: str | None
    selector: str | None
    svg: Markup | None = None
    error: str | None = None


def cause_views(report: Mapping[str, Any] | None, limit: int = TOP_CAUSES) -> list[CauseView]:
    """The top ``limit`` causes of a stored report, formatted (no plots yet)."""
    causes = report.get("causes") if report else None
    if not isinstance(causes, Sequence):
        return []
    out = []
    for rank, cause in enumerate([c for c in causes if isinstance(c, Mapping)][:limit], 1):
        evidence = cause.get("evidence")
        ev: Mapping[str, Any] = evidence if isinstance(evidence, Mapping) else {}
        labels = cause.get("labels")
        pairs = (
            sorted((str(k), str(v)) for k, v in labels.items())
            if isinstance(labels, Mapping)
            else []
        )
        onset = _as_float(cause.get("onset"))
        lead = _as_float(cause.get("lead_s"))
        try:
            selector: str | None = cause_selector(cause)
            error = None
        except InvalidQuery as exc:
            selector, error = None, f"no selector for this series: {exc.message}"
        kind = str(ev.get("kind") or "metric")
        if kind == "change_event" and ev.get("event"):
            kind = f"change event ({ev.get('event')})"
        out.append(
            CauseView(
                rank=rank,
                series=str(cause.get("series") or ""),
                metric=str(cause.get("metric") or ""),
                labels=pairs,
                score_text=_fixed(cause.get("score"), 2),
                kind=kind,
                direction=str(ev.get("direction") or NONE),
                baseline_text=_number(ev.get("baseline")),
                incident_text=_number(ev.get("incident_value")),
                peak_text=_number(ev.get("peak_value")),
                magnitude_text=_fixed(ev.get("magnitude"), 1).replace(NONE, ""),
                onset_s=onset,
                onset_text=format_time(onset),
                lead_text=_lead(lead),
                entity=str(cause["entity"]) if cause.get("entity") else None,
                selector=selector,
                error=error,
            )
        )
    return out


def symptom_plot(
    anomalies: SeriesAnomalies, incident: Incident, x_range: tuple[float, float]
) -> Markup:
    """The symptom with its expected band (shaded), expected line (dashed), window, and
    the normal range it must return to (dashed, green) when the incident knows it."""
    scored = anomalies.scored
    report = incident.report or {}
    symptom = report.get("symptom")
    confirmed = _as_float(symptom.get("at")) if isinstance(symptom, Mapping) else None
    markers = [Marker(confirmed, "alarm confirmed")] if confirmed is not None else []
    lines = [Line(scored.values, incident.series), Line(scored.expected, "expected", dashed=True)]
    if incident.normal_low is not None and incident.normal_high is not None:
        # the range the symptom must come back to before the incident closes
        for edge in (incident.normal_low, incident.normal_high):
            flat = np.full(scored.values.shape, edge)
            lines.append(Line(flat, "normal range", dashed=True, colour=_NORMAL_COLOUR))
    svg = time_plot(
        scored.timestamps_s,
        lines,
        x_range=x_range,
        band=Band(scored.lower, scored.upper),
        shades=[Shade(incident.start_s, max(incident.end_s, incident.start_s), "anomaly window")],
        markers=markers,
        title=f"symptom: {incident.series}",
        height=280,
    )
    return Markup(svg)  # noqa: S704 - plots.py escapes every text it writes


def cause_plot(
    series: Series, cause: CauseView, incident: Incident, x_range: tuple[float, float]
) -> Markup:
    """One cause's series on the symptom's time axis, its onset marked."""
    markers = [Marker(cause.onset_s, "onset")] if cause.onset_s is not None else []
    svg = time_plot(
        series.timestamps_s,
        [Line(series.values, cause.series)],
        x_range=x_range,
        shades=[
            Shade(
                incident.start_s,
                max(incident.end_s, incident.start_s),
                "symptom's anomaly window",
                css="window symptom",
            )
        ],
        markers=markers,
        title=f"cause #{cause.rank}: {cause.series}",
        height=170,
    )
    return Markup(svg)  # noqa: S704 - plots.py escapes every text it writes


def pick_symptom(found: Sequence[SeriesAnomalies], incident: Incident) -> SeriesAnomalies | None:
    """The incident's own series among what its query returns (else the first)."""
    for anomalies in found:
        if format_series_name(anomalies.labels) == incident.series:
            return anomalies
    return found[0] if found else None


def llm_view(report: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Provider, model, fallback and reason of the note's writer."""
    llm = report.get("llm") if report else None
    if not isinstance(llm, Mapping):
        return None
    fallback = llm.get("fallback")
    return {
        "provider": str(llm.get("provider") or NONE),
        "model": str(llm.get("model") or NONE),
        "fallback": "yes (template note)" if fallback else "no",
        "reason": str(llm.get("reason") or ""),
        "latency": _fixed(llm.get("latency_s"), 2) + " s" if llm.get("latency_s") else "",
    }


@dataclass(frozen=True, slots=True)
class IncidentRow:
    id: str
    start_text: str
    duration_text: str
    status: str
    rule: str
    title: str
    cause: str
    peak_text: str


def incident_row(incident: Incident) -> IncidentRow:
    duration = format_duration(max(incident.end_s - incident.start_s, 0.0))
    return IncidentRow(
        id=incident.id,
        start_text=format_time(incident.start_s),
        duration_text=duration + (" (ongoing)" if incident.status == "open" else ""),
        status=incident.status,
        rule=incident.rule or NONE,
        title=incident.title,
        cause=incident.cause or NONE,
        peak_text=_fixed(incident.peak_score, 2),
    )


def _as_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _number(value: object) -> str:
    number = _as_float(value)
    return format_number(number) if number is not None else NONE


def _fixed(value: object, digits: int) -> str:
    number = _as_float(value)
    return f"{number:.{digits}f}" if number is not None else NONE


# Lead times and timeline offsets are written one way: format_duration, then before/after.


def _lead(lead_s: float | None) -> str:
    if lead_s is None:
        return NONE
    if abs(lead_s) < 1.0:
        return "with the symptom"
    return f"{format_duration(abs(lead_s))} {'before' if lead_s > 0 else 'after'} the symptom"


def _offset(delta_s: float) -> str:
    if abs(delta_s) < 1.0:
        return "at the symptom's start"
    return f"{format_duration(abs(delta_s))} {'after' if delta_s > 0 else 'before'} its start"
