"""Use cases behind the incident pages: read stored incidents, and fetch again what an
incident page plots (its symptom scored live, each cause's series).

A fetch never raises for a failing source: the result says what failed, in words a
page can show, so the stored analysis stays readable when Prometheus is down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from plugin_backend.detection import DetectionService, DetectOptions, SeriesAnomalies
from plugin_backend.errors import BackendError, UpstreamError
from plugin_backend.incidents import Incident
from plugin_backend.ports import IncidentReader, SeriesSource
from plugin_backend.timegrid import align_range
from plugin_backend.types import Series, TimeRange

__all__ = ["CauseFetch", "IncidentReview", "IncidentStore", "SymptomFetch"]

log = logging.getLogger(__name__)


class IncidentStore(IncidentReader, Protocol):
    """Stored incidents: listed, and one by id."""

    def get_incident(self, incident_id: str) -> Incident | None: ...


@dataclass(frozen=True, slots=True)
class SymptomFetch:
    """The symptom's series scored over the plotted range, or why there are none."""

    found: list[SeriesAnomalies] = field(default_factory=list)
    error: str | None = None
    #: the series source itself failed: fetching the causes would only wait again
    source_down: bool = False


@dataclass(frozen=True, slots=True)
class CauseFetch:
    """A cause's series over the plotted range, or why there are none."""

    series: list[Series] = field(default_factory=list)
    error: str | None = None


class IncidentReview:
    def __init__(
        self, store: IncidentStore, source: SeriesSource, detection: DetectionService
    ) -> None:
        self.store = store
        self.source = source
        self.detection = detection

    def incident(self, incident_id: str) -> Incident | None:
        return self.store.get_incident(incident_id)

    def incidents(
        self, *, rule: str | None, status: str | None, service: str | None, limit: int
    ) -> list[Incident]:
        """Stored incidents, newest first."""
        return self.store.list_incidents(rule=rule, status=status, service=service, limit=limit)

    def symptom(
        self, incident: Incident, time_range: TimeRange, step_s: float, options: DetectOptions
    ) -> SymptomFetch:
        """The incident's query scored over ``time_range`` as ``options`` say."""
        try:
            found = self.detection.detect(incident.query, time_range, options, floor_s=step_s)
        except UpstreamError as exc:
            message = f"The series source ({self.source.kind}) failed: {exc.message}"
            return SymptomFetch(error=message, source_down=True)
        except BackendError as exc:
            return SymptomFetch(error=f"The symptom could not be scored: {exc.message}")
        except Exception as exc:
            log.exception("symptom plot of incident %s failed", incident.id)
            return SymptomFetch(error=f"The symptom could not be plotted ({type(exc).__name__}).")
        return SymptomFetch(found=found)

    def cause_series(self, selector: str, time_range: TimeRange, step_s: float) -> CauseFetch:
        """A cause's series on the step grid over ``time_range``."""
        try:
            found = self.source.query_range(selector, align_range(time_range, step_s), step_s)
        except BackendError as exc:
            return CauseFetch(error=f"The series source failed: {exc.message}")
        except Exception as exc:
            log.exception("cause plot for %s failed", selector)
            return CauseFetch(error=f"Could not be plotted ({type(exc).__name__}).")
        if not found:
            return CauseFetch(error="No data for this series in this range.")
        return CauseFetch(series=found)
