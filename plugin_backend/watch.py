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

from plugin_backend.detection import DetectionService, DetectOptions, SeriesAnomalies
from plugin_backend.errors import BackendError, InsufficientData
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Annotation, Incident, annotation_for, incident_id
from plugin_backend.rules import Rule
from plugin_backend.scoring.windows import AnomalyWindow, WindowPolicy
from plugin_backend.timegrid import align_range
from plugin_backend.types import TimeRange, format_series_name

__all__ = [
    "DETECTION_KEY",
    "CycleResult",
    "RuleCycle",
    "detection_record",
    "incident_title",
    "needs_note",
]

log = logging.getLogger(__name__)

# A live cycle looks back this far: far enough that an incident opened now sees the
# whole NORMAL_RANGE_S before it (as a replay does), and an open one its last window.
DEFAULT_LOOKBACK_S = 3 * 3600.0
# The normal range comes from this long before an incident starts (``_normal_range``);
# after the detector's last window an incident closes once RECOVERY_POINTS consecutive
# points are back inside it, or RECOVERY_GRACE_S later at the latest.
NORMAL_RANGE_S = 7200.0
NORMAL_RANGE_K = 3.0
MIN_NORMAL_POINTS = 10
RECOVERY_POINTS = 3
RECOVERY_GRACE_S = 3600.0
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


#: Where an incident's report keeps the options its rule scored it with, so that its
#: page plots the symptom as the worker saw it.
DETECTION_KEY = "detection"


def detection_record(rule: Rule) -> dict[str, object]:
    """The scoring options of ``rule``, as stored in an incident's report."""
    return {
        "detector": rule.detector,
        "direction": rule.direction,
        "sensitivity": rule.sensitivity,
        "min_deviation": rule.min_deviation,
        "step_s": rule.step_s,
    }


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
        defer_notes: bool = False,
    ) -> None:
        self.detection = detection
        self.explain = explain
        self.link_base = link_base
        self.policy = policy or WindowPolicy()
        # True: a new incident gets the template note, marked pending (``needs_note``),
        # and a task writes the LLM's later, so a slow model never holds up scoring.
        self.defer_notes = defer_notes

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
            rate_control=rule.rate_control,
        )
        try:
            # The rule's step is the finest grid: the same one panels score the series
            # on when it is the scrape interval (the default, 15 s).
            found = self.detection.detect(rule.expr, span, options, floor_s=rule.step_s)
        except InsufficientData as exc:
            return CycleResult(rule.name, now_s, None, note=exc.message)
        result = CycleResult(rule.name, now_s, _latest_score(found))
        gap = self.policy.max_gap_s
        remaining = [i for i in known if i.origin == "rule" and i.rule == rule.name]
        for anomalies in found:
            series = format_series_name(anomalies.labels)
            # [current state, state as known before this cycle (None: opened now),
            #  end of the last detector window matched this cycle (None: none)]
            tracked: list[tuple[Incident, Incident | None, float | None]] = [
                (i, i, None) for i in remaining if i.series == series
            ]
            remaining = [i for i in remaining if i.series != series]
            for window in anomalies.windows:
                at = _overlapping([t[0] for t in tracked], series, window, gap)
                if at is None:
                    incident = self._open(rule, anomalies, window, now_s)
                    result.opened.append(incident.id)
                    followed = _follow_recovery(incident, anomalies, now_s, window.end_s)
                    tracked.append((followed, None, window.end_s))
                else:
                    current, before, window_end = tracked[at]
                    merged = _follow_recovery(
                        _extend(current, window), anomalies, now_s, window.end_s
                    )
                    tracked[at] = (merged, before, max(window.end_s, window_end or 0.0))
            for state, before, window_end in tracked:
                current = _follow_recovery(state, anomalies, now_s, window_end)
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
            report={DETECTION_KEY: detection_record(rule)},
        )
        low, high = _normal_range(anomalies, window.start_s)
        incident = dataclasses.replace(incident, normal_low=low, normal_high=high)
        return self._explained(incident, at_s=window.confirmed_s, window_s=rule.explain_window_s)

    def _explained(self, incident: Incident, *, at_s: float, window_s: float | None) -> Incident:
        if self.explain is None:
            return incident
        try:
            if self.defer_notes:
                report = self.explain.explain(incident.query, at_s, window_s, write_note=False)
            else:
                report = self.explain.explain(incident.query, at_s, window_s)
        except BackendError as exc:
            log.warning("root cause of %s failed: %s", incident.title, exc.message)
            return dataclasses.replace(incident, note=f"Root cause not available: {exc.message}")
        top = report.causes[0].series if report.causes else None
        kept = {k: v for k, v in (incident.report or {}).items() if k == DETECTION_KEY}
        return dataclasses.replace(
            incident, note=report.summary, cause=top, report={**report.to_dict(), **kept}
        )

    def _emit(self, result: CycleResult, incident: Incident, before: Incident | None) -> None:
        if before is not None and not _worth_saving(before, incident):
            return
        # Without a dashboard the incident is only stored (and shown by the incidents kind).
        annotation = (
            annotation_for(incident, link_base=self.link_base) if incident.dashboard_uid else None
        )
        result.changed.append((incident, annotation))


def needs_note(incident: Incident) -> bool:
    """Whether ``incident``'s note is the template, waiting for the LLM's
    (``RuleCycle(defer_notes=True)``)."""
    llm = (incident.report or {}).get("llm")
    return isinstance(llm, dict) and llm.get("pending") is True


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
    """The symptom's normal range before ``start_s``: the median of its values over the
    ``NORMAL_RANGE_S`` before, +- ``NORMAL_RANGE_K`` robust spreads (the larger of the
    values' MAD-sigma and the band's typical half-width). Robust to an earlier anomaly
    taking up to half of that period. The incident closes once the symptom is back."""
    scored = anomalies.scored
    before = (scored.timestamps_s >= start_s - NORMAL_RANGE_S) & (scored.timestamps_s < start_s)
    values = scored.values[before]
    values = values[np.isfinite(values)]
    half = ((scored.upper - scored.lower) / 2.0)[before]
    half = half[np.isfinite(half)]
    if values.size < MIN_NORMAL_POINTS:
        return None, None
    level = float(np.median(values))
    mad_sigma = 1.4826 * float(np.median(np.abs(values - level)))
    spread = max(mad_sigma, float(np.median(half)) if half.size else 0.0, 1e-9 * abs(level))
    low = level - NORMAL_RANGE_K * spread
    seen = scored.values[np.isfinite(scored.values)]
    if seen.size and float(seen.min()) >= 0.0:  # a latency or a rate: never below zero
        low = max(low, 0.0)
    return low, level + NORMAL_RANGE_K * spread


def _follow_recovery(
    incident: Incident, anomalies: SeriesAnomalies, now_s: float, window_end_s: float | None
) -> Incident:
    """After the detector's last window (ending ``window_end_s``), keep ``incident`` open
    while its symptom stays outside its normal range, for up to ``RECOVERY_GRACE_S``;
    it ends at its last abnormal point once ``RECOVERY_POINTS`` consecutive points are
    back inside (or when the grace runs out: the new level is taken as normal).

    The detector's band adapts to a sustained shift within minutes (a level that
    persists becomes its expectation), so its windows end long before a fault does;
    an on-call engineer wants the incident to last until the symptom recovers. The
    grace bounds it where "back to normal" is ill-defined (a daily cycle moves the
    level over hours)."""
    low, high = incident.normal_low, incident.normal_high
    if low is None or high is None or window_end_s is None:
        return incident
    horizon = window_end_s + RECOVERY_GRACE_S
    scored = anomalies.scored
    after = (
        (scored.timestamps_s > window_end_s)
        & (scored.timestamps_s <= horizon)
        & np.isfinite(scored.values)
    )
    t, v = scored.timestamps_s[after], scored.values[after]
    last_outside = None
    inside_run = 0
    for ts, out in zip(t.tolist(), ((v < low) | (v > high)).tolist(), strict=True):
        if out:
            inside_run = 0
            last_outside = ts
        else:
            inside_run += 1
            if inside_run >= RECOVERY_POINTS:
                end = max(incident.end_s, last_outside or incident.end_s)
                return dataclasses.replace(incident, end_s=end, status="closed")
    end = max(incident.end_s, last_outside or incident.end_s)
    if horizon <= now_s:  # the grace ran out without a recovery
        return dataclasses.replace(incident, end_s=end, status="closed")
    if last_outside is None:  # nothing abnormal after the window (yet)
        return incident
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
    """Saved (and re-annotated) on a status or start change, a much higher peak, once
    the open incident has grown by ``ANNOTATION_REFRESH_S`` (not on every cycle), or
    when a closed incident's end moves (a detector window that flickers again within
    its gap after the recovery: the record keeps the end a replay would find)."""
    return (
        before.status != after.status
        or before.start_s != after.start_s
        or after.end_s - before.end_s >= ANNOTATION_REFRESH_S
        or (after.status == "closed" and after.end_s != before.end_s)
        or (after.peak_score or 0.0) > (before.peak_score or 0.0) * 1.2
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
