"""Human pages: the landing page (links, dependency health), the incident list and
one incident's page (symptom and causes plotted live, evidence, note, timeline).

Server-rendered HTML without any script: Jinja2 escapes every value, the plots are
inline SVG from ``plots.py``, and the responses carry a CSP that forbids scripts.
The data comes from use cases (``incident_review.py``: incidents and what their pages
plot; ``health.py``: the dependencies' health); the view models (pure: an incident
and fetched series in, display values out) live in ``incident_views.py``; this
module only reads the request and renders.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Mapping

from flask import Blueprint, Response, current_app, render_template, request
from markupsafe import Markup

from plugin_backend import __version__
from plugin_backend.errors import BackendError
from plugin_backend.health import HealthService
from plugin_backend.incident_review import IncidentReview
from plugin_backend.incidents import Incident
from plugin_backend.scoring.registry import DEFAULT_DETECTOR
from plugin_backend.types import TimeRange, format_series_name
from plugin_backend.web.errors import error_body, wrong_url_message
from plugin_backend.web.http import json_response
from plugin_backend.web.incident_views import (
    TOP_CAUSES,
    CauseView,
    SymptomScoring,
    cause_plot,
    cause_views,
    format_duration,
    format_time,
    grafana_link,
    incident_row,
    llm_view,
    pick_symptom,
    plot_range,
    plot_step,
    symptom_plot,
    symptom_scoring,
    timeline,
)

__all__ = ["SECURITY_HEADERS", "pages_blueprint"]

log = logging.getLogger(__name__)

pages_blueprint = Blueprint("pages", __name__, template_folder="templates")

PRODUCT = "plugin-backend"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
INCIDENT_ID = re.compile(r"[0-9a-f]{16}")
MAX_RULE_STEPS = 5_000  # plot on the rule's own step up to this many points
STATUSES = ("open", "closed")
DASHBOARDS = (
    ("anomaly-overview", "Anomaly overview"),
    ("incidents", "Incidents"),
    ("plugin-backend-self", "plugin-backend self-monitoring"),
)


# == routes (I/O) ======================================================================


@pages_blueprint.after_request
def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


@pages_blueprint.errorhandler(BackendError)
def _backend_error(exc: BackendError) -> tuple[str, int]:
    log.warning("page failed: %s", exc.message)
    return _error_page(exc.http_status, "The page could not be built", exc.message)


@pages_blueprint.get("/")
def landing() -> str | Response:
    """Product, links, and the health of each dependency (each check bounded in time).

    A client that prefers JSON to HTML at the root is the Grafana plugin's *Save & test*
    with the datasource URL missing its ``/datasource``: it gets a 404 naming the right
    URL, not a 200 that would pass the test while every panel fails.
    """
    named = {value for value, _quality in request.accept_mimetypes}
    if "application/json" in named and "text/html" not in named:
        return json_response(error_body("wrong_datasource_url", wrong_url_message()), 404)
    grafana = _grafana_url()
    dashboards = [(f"{grafana}/d/{uid}", title) for uid, title in DASHBOARDS] if grafana else []
    return render_template(
        "landing.html",
        product=PRODUCT,
        version=__version__,
        checks=_health().checks(),
        grafana_url=grafana,
        dashboards=dashboards,
        auth_enabled=bool(current_app.extensions.get("plugin_backend.auth_enabled", False)),
        advertised_url=current_app.extensions["plugin_backend.advertised_url"],
    )


@pages_blueprint.get("/incidents")
def incident_list() -> str | tuple[str, int]:
    """Stored incidents, newest first, filtered by status, rule and service."""
    status = request.args.get("status", "").strip() or None
    rule = request.args.get("rule", "").strip() or None
    service = request.args.get("service", "").strip() or None
    if status is not None and status not in STATUSES:
        return _error_page(400, "Bad filter", f"status must be one of {', '.join(STATUSES)}")
    limit_text = request.args.get("limit", "200")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        return _error_page(400, "Bad filter", "limit must be a whole number from 1 to 1000")
    limit = int(limit_text)
    found = _review().incidents(rule=rule, status=status, service=service, limit=limit)
    return render_template(
        "incident_list.html",
        product=PRODUCT,
        rows=[incident_row(i) for i in found],
        status=status or "",
        rule=rule or "",
        service=service or "",
        limit=limit,
        truncated=len(found) >= limit,
    )


@pages_blueprint.get("/incidents/<incident_id>.json")
def incident_json(incident_id: str) -> Response:
    """The stored incident as JSON, its root-cause report included."""
    incident = _load(incident_id)
    if incident is None:
        return json_response(error_body("not_found", f"no incident {incident_id!r}"), 404)
    return json_response(dataclasses.asdict(incident))


@pages_blueprint.get("/incidents/<path:anything>")
def incident_not_found(anything: str) -> tuple[str, int]:
    """Any other path under ``/incidents/``: the HTML 404, not the API's JSON one."""
    return _error_page(404, "Incident not found", f"There is no incident at {anything!r}.")


@pages_blueprint.get("/incidents/<incident_id>")
def incident_page(incident_id: str) -> str | tuple[str, int]:
    """One incident: symptom and causes plotted live on one time axis, evidence, note."""
    incident = _load(incident_id)
    if incident is None:
        return _error_page(
            404, "Incident not found", f"There is no incident with the id {incident_id!r}."
        )
    review = _review()
    x_range = plot_range(incident, time.time())
    scoring = symptom_scoring(incident, DEFAULT_DETECTOR)
    step = plot_step(x_range)
    if scoring.step_s is not None and (x_range[1] - x_range[0]) / scoring.step_s <= MAX_RULE_STEPS:
        step = scoring.step_s  # the rule's own grid: the windows the worker found
    symptom_svg, symptom_error, source_down = _symptom(review, incident, x_range, step, scoring)
    causes = cause_views(incident.report)
    causes = [
        _with_plot(
            review, cause, incident=incident, x_range=x_range, step=step, source_down=source_down
        )
        for cause in causes
    ]
    report = incident.report or {}
    stored = report.get("causes")
    raw_causes = [c for c in stored if isinstance(c, Mapping)] if isinstance(stored, list) else []
    return render_template(
        "incident_detail.html",
        product=PRODUCT,
        incident=incident,
        row=incident_row(incident),
        end_text=format_time(incident.end_s),
        labels=sorted((str(k), str(v)) for k, v in incident.labels.items()),
        symptom_svg=symptom_svg,
        symptom_error=symptom_error,
        causes=causes,
        candidates=report.get("candidates"),
        llm=llm_view(incident.report),
        events=timeline(incident, raw_causes[:TOP_CAUSES]),
        grafana_href=grafana_link(_grafana_url(), incident, x_range),
        range_text=f"{format_time(x_range[0])} to {format_time(x_range[1])}",
        step_text=format_duration(step),
        scoring_text=scoring.describe(),
        source_kind=review.source.kind,
    )


# -- helpers that touch the app --------------------------------------------------------


def _review() -> IncidentReview:
    review: IncidentReview = current_app.extensions["plugin_backend.incident_review"]
    return review


def _health() -> HealthService:
    health: HealthService = current_app.extensions["plugin_backend.health"]
    return health


def _grafana_url() -> str | None:
    """Grafana's base URL without a trailing slash, or ``None``."""
    url: str | None = current_app.extensions["plugin_backend.grafana_url"]
    return url


def _load(incident_id: str) -> Incident | None:
    if INCIDENT_ID.fullmatch(incident_id) is None:
        return None
    return _review().incident(incident_id)


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    html = render_template(
        "page_error.html", product=PRODUCT, status=status, title=title, message=message
    )
    return html, status


def _symptom(
    review: IncidentReview,
    incident: Incident,
    x_range: tuple[float, float],
    step: float,
    scoring: SymptomScoring,
) -> tuple[Markup | None, str | None, bool]:
    """The symptom plot, or why there is none; ``True`` when the source itself failed."""
    fetched = review.symptom(incident, TimeRange(*x_range), step, scoring.options)
    if fetched.error is not None:
        return None, fetched.error, fetched.source_down
    anomalies = pick_symptom(fetched.found, incident)
    if anomalies is None:
        return None, f"The query {incident.query} returned no series in this range.", False
    return symptom_plot(anomalies, incident, x_range), None, False


def _with_plot(
    review: IncidentReview,
    cause: CauseView,
    *,
    incident: Incident,
    x_range: tuple[float, float],
    step: float,
    source_down: bool,
) -> CauseView:
    if cause.selector is None:
        return cause
    if source_down:  # one timeout is enough: do not wait on the source once per cause
        return dataclasses.replace(cause, error="Not fetched: the series source failed.")
    fetched = review.cause_series(cause.selector, TimeRange(*x_range), step)
    if fetched.error is not None:
        return dataclasses.replace(cause, error=fetched.error)
    found = fetched.series
    series = next((s for s in found if format_series_name(s.labels) == cause.series), found[0])
    return dataclasses.replace(cause, svg=cause_plot(series, cause, incident, x_range))
