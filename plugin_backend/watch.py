"""One watch rule's cycle: score the recent window, open / extend / close incidents,
explain new ones. A self-contained unit of work: a rule, the time and the rule's
known incidents in; the incidents to save (with their annotations) and the rule's
current score out. Nothing here touches the store or Grafana, so a task queue can
spread cycles over many machines unchanged.

Replaying history (``worker --since 6h``) is one cycle over the longer window:
scores and alarms are causal (the score at t uses data up to t only), so each
window found in the replay is exactly what a live cycle would have found, and its
root cause is explained at the time it was first alarmed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from plugin_backend.datasource.step import align_range
from plugin_backend.detection import DetectionService, DetectOptions, SeriesAnomalies
from plugin_backend.errors import BackendError, InsufficientData
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Annotation, Incident, annotation_for, incident_id
from plugin_backend.rules import Rule
from plugin_backend.scoring.windows import AnomalyWindow, WindowPolicy
from plugin_backend.types import TimeRange, format_series_name

__all__ = ["CycleResult", "RuleCycle", "incident_title"]

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK_S = 3600.0
# The normal range is the band's extent over this long before an incident starts; an
# incident closes once this many consecutive points are back inside it, or after
# MAX_OPEN_S of a shift that never recovers.
NORMAL_RANGE_S = 1800.0
MIN_NORMAL_POINTS = 5
RECOVERY_POINTS = 3
MAX_OPEN_S = 6 * 3600.0
# While an incident is open it is saved and its annotation grows at most this often.
ANNOTATION_REFRESH_S = 300.0


@dataclass(frozen=True, slots=True)
class CycleResult:
    rule: str
    now_s: float
    score: float | None  # the rule's latest anomaly score (max over its series)
    changed: list[tuple[Incident, Annotation | None]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    note: str | None = None  # why nothing could be scored, when so


def incident_title(rule: str, series: str, direction: str | None) -> str:
    what = {"up": "above", "down": "below"}.get(direction or "", "outside")
    return f"{rule}: {series} {what} its expected band"


class RuleCycle:
    def __init__(
        self,
        detection: DetectionService,
        explain: ExplainService | None,
        *,
        link_base: str | None = None,
        policy: WindowPolicy | None = None,
    ) -> None:
        self.detection = detection
        self.explain = explain
        self.link_base = link_base
        self.policy = policy or WindowPolicy()

    def run(
        self,
        rule: Rule,
        now_s: float,
        known: Sequence[Incident],
        *,
        lookback_s: float = DEFAULT_LOOKBACK_S,
    ) -> CycleResult:
        span = align_range(TimeRange(now_s - lookback_s, now_s), rule.step_s)
        options = DetectOptions(
            detector=rule.detector,
            direction=rule.direction,
            sensitivity=rule.sensitivity,
            min_deviation=rule.min_deviation,
        )
        try:
            found = self.detection.detect(rule.expr, span, rule.step_s, options)
        except InsufficientData as exc:
            return CycleResult(rule.name, now_s, None, note=exc.message)
        result = CycleResult(rule.name, now_s, _latest_score(found))
        gap = self.policy.max_gap_s
        remaining = [i for i in known if i.origin == "rule" and i.rule == rule.name]
        for anomalies in found:
            series = format_series_name(anomalies.labels)
            # (current state, state as known before this cycle; None: opened now)
            tracked: list[tuple[Incident, Incident | None]] = [
                (i, i) for i in remaining if i.series == series
            ]
            remaining = [i for i in remaining if i.series != series]
            for window in anomalies.windows:
                at = _overlapping([t[0] for t in tracked], series, window, gap)
                if at is None:
                    incident = self._open(rule, anomalies, window, now_s)
                    result.opened.append(incident.id)
                    tracked.append((_follow_recovery(incident, anomalies, now_s), None))
                else:
                    current, before = tracked[at]
                    extended = _extend(current, window)
                    tracked[at] = (_follow_recovery(extended, anomalies, now_s), before)
            for state, before in tracked:
                current = _follow_recovery(state, anomalies, now_s)
                if current.status == "open" and current.end_s < now_s - gap:
                    current = dataclasses.replace(current, status="closed")
                self._emit(result, current, before)
        # Incidents of series that returned no data: closed where they were.
        for incident in remaining:
            if incident.status == "open" and incident.end_s < now_s - gap:
                self._emit(result, dataclasses.replace(incident, status="closed"), incident)
        result.closed.extend(i.id for i, _ in result.changed if i.status == "closed")
        return result

    def _open(
        self, rule: Rule, anomalies: SeriesAnomalies, window: AnomalyWindow, now_s: float
    ) -> Incident:
        series = format_series_name(anomalies.labels)
        key = f"rule:{rule.name}:{series}:{window.start_s:.0f}"
        incident = Incident(
            id=incident_id(key),
            key=key,
            origin="rule",
            title=incident_title(rule.name, series, window.direction),
            query=rule.expr,
            series=series,
            start_s=window.start_s,
            end_s=window.end_s,
            status="open" if window.open else "closed",
            rule=rule.name,
            labels={**dict(anomalies.labels), **rule.labels},
            peak_score=_finite(window.peak_score),
            direction=window.direction,
            dashboard_uid=rule.dashboard_uid,
            panel_id=rule.panel_id,
            created_s=now_s,
            updated_s=now_s,
        )
        low, high = _normal_range(anomalies, window.start_s)
        incident = dataclasses.replace(incident, normal_low=low, normal_high=high)
        return self._explained(incident, at_s=window.confirmed_s, window_s=rule.explain_window_s)

    def _explained(self, incident: Incident, *, at_s: float, window_s: float) -> Incident:
        if self.explain is None:
            return incident
        try:
            report = self.explain.explain(incident.query, at_s, window_s)
        except BackendError as exc:
            log.warning("root cause of %s failed: %s", incident.title, exc.message)
            return dataclasses.replace(incident, note=f"Root cause not available: {exc.message}")
        top = report.causes[0].series if report.causes else None
        return dataclasses.replace(
            incident, note=report.summary, cause=top, report=report.to_dict()
        )

    def _emit(self, result: CycleResult, incident: Incident, before: Incident | None) -> None:
        if before is not None and not _worth_saving(before, incident):
            return
        # Without a dashboard the incident is only stored (and shown by the incidents kind).
        annotation = (
            annotation_for(incident, link_base=self.link_base) if incident.dashboard_uid else None
        )
        result.changed.append((incident, annotation))


def _latest_score(found: Sequence[SeriesAnomalies]) -> float | None:
    latest: list[float] = []
    for anomalies in found:
        finite = anomalies.scored.score[np.isfinite(anomalies.scored.score)]
        if finite.size:
            latest.append(float(finite[-1]))
    return max(latest) if latest else None


def _overlapping(
    known: Sequence[Incident], series: str, window: AnomalyWindow, gap_s: float
) -> int | None:
    for at, incident in enumerate(known):
        if (
            incident.series == series
            and incident.start_s <= window.end_s + gap_s
            and window.start_s <= incident.end_s + gap_s
        ):
            return at
    return None


def _normal_range(anomalies: SeriesAnomalies, start_s: float) -> tuple[float | None, float | None]:
    """The band's extent over the ``NORMAL_RANGE_S`` before ``start_s``: the range the
    symptom must come back to before its incident closes."""
    scored = anomalies.scored
    before = (scored.timestamps_s >= start_s - NORMAL_RANGE_S) & (scored.timestamps_s < start_s)
    lower, upper = scored.lower[before], scored.upper[before]
    lower, upper = lower[np.isfinite(lower)], upper[np.isfinite(upper)]
    if lower.size < MIN_NORMAL_POINTS or upper.size < MIN_NORMAL_POINTS:
        return None, None
    return float(lower.min()), float(upper.max())


def _follow_recovery(incident: Incident, anomalies: SeriesAnomalies, now_s: float) -> Incident:
    """Keep ``incident`` open while its symptom is outside its normal range; close it at
    the last abnormal point once ``RECOVERY_POINTS`` consecutive points are back inside.

    The detector's band adapts to a sustained shift within minutes (a level that
    persists becomes its expectation), so its windows end long before the fault does;
    an on-call engineer wants the incident to last until the symptom recovers. A
    shift that never recovers is closed after ``MAX_OPEN_S`` (the new normal)."""
    low, high = incident.normal_low, incident.normal_high
    if low is None or high is None:
        return incident
    scored = anomalies.scored
    after = (scored.timestamps_s > incident.start_s) & np.isfinite(scored.values)
    t, v = scored.timestamps_s[after], scored.values[after]
    if t.size == 0:
        return incident
    outside = (v < low) | (v > high)
    inside_run = 0
    last_outside = None
    for ts, out in zip(t.tolist(), outside.tolist(), strict=True):
        if out:
            inside_run = 0
            last_outside = ts
        else:
            inside_run += 1
            if inside_run >= RECOVERY_POINTS and (last_outside or 0) >= incident.start_s:
                end = max(incident.end_s, last_outside or incident.end_s)
                return dataclasses.replace(incident, end_s=end, status="closed")
    if last_outside is None:  # never left its normal range after the start
        return incident
    end = max(incident.end_s, last_outside)
    if end - incident.start_s >= MAX_OPEN_S:
        return dataclasses.replace(incident, end_s=end, status="closed")
    return dataclasses.replace(incident, end_s=end, status="open")


def _extend(incident: Incident, window: AnomalyWindow) -> Incident:
    peak = max(incident.peak_score or 0.0, _finite(window.peak_score) or 0.0)
    return dataclasses.replace(
        incident,
        start_s=min(incident.start_s, window.start_s),
        end_s=max(incident.end_s, window.end_s),
        peak_score=peak,
        status="open" if window.open else "closed",
    )


def _worth_saving(before: Incident, after: Incident) -> bool:
    """Saved (and re-annotated) on a status or start change, a much higher peak, or once
    the open incident has grown by ``ANNOTATION_REFRESH_S``, not on every cycle."""
    return (
        before.status != after.status
        or before.start_s != after.start_s
        or after.end_s - before.end_s >= ANNOTATION_REFRESH_S
        or (after.peak_score or 0.0) > (before.peak_score or 0.0) * 1.2
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
