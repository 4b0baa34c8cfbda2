"""Human pages: the landing page (links, dependency health), the incident list and
one incident's page (symptom and causes plotted live, evidence, note, timeline).

Server-rendered HTML without any script: Jinja2 escapes every value, the plots are
inline SVG from ``plots.py``, and the responses carry a CSP that forbids scripts.
The view models (pure: an incident and fetched series in, display values out) live
in ``incident_views.py``; this module does the I/O and renders them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Literal

import requests
from flask import Blueprint, Response, current_app, render_template, request
from markupsafe import Markup

from plugin_backend import __version__
from plugin_backend.bootstrap import LOCAL_LLM_URL, build_grafana
from plugin_backend.config import Settings
from plugin_backend.errors import BackendError, UpstreamError
from plugin_backend.incidents import Incident
from plugin_backend.scoring.registry import DEFAULT_DETECTOR
from plugin_backend.service import DatasourceService
from plugin_backend.store import Store
from plugin_backend.timegrid import align_range
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

__all__ = ["SECURITY_HEADERS", "Check", "llm_models_url", "pages_blueprint"]

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
PROBE_TIMEOUT_S = 2.0
MAX_RULE_STEPS = 5_000  # plot on the rule's own step up to this many points
STATUSES = ("open", "closed")
DASHBOARDS = (
    ("anomaly-overview", "Anomaly overview"),
    ("incidents", "Incidents"),
    ("plugin-backend-self", "plugin-backend self-monitoring"),
)


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's health: ``ok``, ``error`` or ``off`` (not configured)."""

    name: str
    state: Literal["ok", "error", "off"]
    detail: str
    target: str = ""


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
    settings = _settings()
    named = {value for value, _quality in request.accept_mimetypes}
    if "application/json" in named and "text/html" not in named:
        return json_response(error_body("wrong_datasource_url", wrong_url_message()), 404)
    grafana = str(settings.grafana_url).rstrip("/") if settings.grafana_url else None
    dashboards = [(f"{grafana}/d/{uid}", title) for uid, title in DASHBOARDS] if grafana else []
    return render_template(
        "landing.html",
        product=PRODUCT,
        version=__version__,
        checks=_health_checks(settings),
        grafana_url=grafana,
        dashboards=dashboards,
        auth_enabled=bool(current_app.extensions.get("plugin_backend.auth_enabled", False)),
        advertised_url=settings.advertised_url(),
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
    found = _store().list_incidents(rule=rule, status=status, service=service, limit=limit)
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
    settings = _settings()
    service: DatasourceService = current_app.extensions["plugin_backend.datasource"]
    x_range = plot_range(incident, time.time())
    scoring = symptom_scoring(incident, DEFAULT_DETECTOR)
    step = plot_step(x_range)
    if scoring.step_s is not None and (x_range[1] - x_range[0]) / scoring.step_s <= MAX_RULE_STEPS:
        step = scoring.step_s  # the rule's own grid: the windows the worker found
    symptom_svg, symptom_error, source_down = _symptom(service, incident, x_range, step, scoring)
    causes = cause_views(incident.report)
    causes = [
        _with_plot(
            service, cause, incident=incident, x_range=x_range, step=step, source_down=source_down
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
        grafana_href=grafana_link(
            str(settings.grafana_url) if settings.grafana_url else None, incident, x_range
        ),
        range_text=f"{format_time(x_range[0])} to {format_time(x_range[1])}",
        step_text=format_duration(step),
        scoring_text=scoring.describe(),
        source_kind=service.source.kind,
    )


# -- helpers that touch the app --------------------------------------------------------


def _settings() -> Settings:
    settings: Settings = current_app.extensions["plugin_backend.settings"]
    return settings


def _store() -> Store:
    store: Store = current_app.extensions["plugin_backend.store"]
    return store


def _load(incident_id: str) -> Incident | None:
    if INCIDENT_ID.fullmatch(incident_id) is None:
        return None
    return _store().get_incident(incident_id)


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    html = render_template(
        "page_error.html", product=PRODUCT, status=status, title=title, message=message
    )
    return html, status


def _symptom(
    service: DatasourceService,
    incident: Incident,
    x_range: tuple[float, float],
    step: float,
    scoring: SymptomScoring,
) -> tuple[Markup | None, str | None, bool]:
    """The symptom plot, or why there is none; ``True`` when the source itself failed."""
    try:
        found = service.detection.detect(
            incident.query, TimeRange(*x_range), scoring.options, floor_s=step
        )
    except UpstreamError as exc:
        return None, f"The series source ({service.source.kind}) failed: {exc.message}", True
    except BackendError as exc:
        return None, f"The symptom could not be scored: {exc.message}", False
    except Exception as exc:
        log.exception("symptom plot of incident %s failed", incident.id)
        return None, f"The symptom could not be plotted ({type(exc).__name__}).", False
    anomalies = pick_symptom(found, incident)
    if anomalies is None:
        return None, f"The query {incident.query} returned no series in this range.", False
    return symptom_plot(anomalies, incident, x_range), None, False


def _with_plot(
    service: DatasourceService,
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
    try:
        found = service.source.query_range(
            cause.selector, align_range(TimeRange(*x_range), step), step
        )
    except BackendError as exc:
        return dataclasses.replace(cause, error=f"The series source failed: {exc.message}")
    except Exception as exc:
        log.exception("cause plot of incident %s failed", incident.id)
        return dataclasses.replace(cause, error=f"Could not be plotted ({type(exc).__name__}).")
    if not found:
        return dataclasses.replace(cause, error="No data for this series in this range.")
    series = next((s for s in found if format_series_name(s.labels) == cause.series), found[0])
    return dataclasses.replace(cause, svg=cause_plot(series, cause, incident, x_range))


# -- health checks -----------------------------------------------------------------------


def _health_checks(settings: Settings) -> list[Check]:
    """Every dependency probed at once; none may take longer than the probe timeout."""
    service: DatasourceService = current_app.extensions["plugin_backend.datasource"]
    store = _store()
    probes: list[tuple[str, Callable[[], Check]]] = [
        ("Series source", lambda: _check_source(service, settings)),
        ("Grafana", lambda: _check_grafana(settings)),
        ("LLM", lambda: _check_llm(settings)),
        ("Store", lambda: _check_store(store, settings)),
    ]
    deadline_s = PROBE_TIMEOUT_S + 1.0
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="health")
    try:
        futures = [pool.submit(_never_raises, name, probe) for name, probe in probes]
        wait_futures(futures, timeout=deadline_s)
        return [
            future.result()
            if future.done()
            else Check(name, "error", f"no answer within {deadline_s:g} s")
            for (name, _), future in zip(probes, futures, strict=True)
        ]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _never_raises(name: str, probe: Callable[[], Check]) -> Check:
    try:
        return probe()
    except BackendError as exc:
        return Check(name, "error", exc.message)
    except Exception as exc:
        log.warning("health check %s failed", name, exc_info=True)
        return Check(name, "error", f"{type(exc).__name__}: {exc}")


def _check_source(service: DatasourceService, settings: Settings) -> Check:
    service.check_ready(min(settings.readiness_timeout_s, PROBE_TIMEOUT_S))
    return Check("Series source", "ok", "answers a query", target=service.source.describe())


def _check_grafana(settings: Settings) -> Check:
    if settings.grafana_url is None:
        return Check("Grafana", "off", "not configured (PLUGIN_BACKEND_GRAFANA_URL)")
    bounded = settings.model_copy(
        update={"grafana_timeout_s": min(settings.grafana_timeout_s, PROBE_TIMEOUT_S)}
    )
    client = build_grafana(bounded)
    target = str(settings.grafana_url).rstrip("/")
    if client is None:
        return Check("Grafana", "error", "configured without a token", target=target)
    client.check_ready()
    return Check("Grafana", "ok", "GET /api/health answers", target=target)


def llm_models_url(base_url: str) -> str:
    """``{base}/v1/models`` (``/v1`` not doubled)."""
    base = base_url.strip().rstrip("/")
    return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"


def _check_llm(settings: Settings) -> Check:
    if settings.llm_provider == "none":
        return Check("LLM", "off", "provider none: notes are written from a template")
    url = llm_models_url(str(settings.llm_url) if settings.llm_url else LOCAL_LLM_URL)
    headers = {}
    if settings.llm_api_key is not None:
        headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
    target = f"provider {settings.llm_provider}, {url}"
    try:
        response = requests.get(
            url, headers=headers, timeout=PROBE_TIMEOUT_S, allow_redirects=False
        )
    except requests.Timeout:
        return Check("LLM", "error", f"no answer within {PROBE_TIMEOUT_S:g} s", target=target)
    except requests.ConnectionError:
        return Check("LLM", "error", "cannot connect", target=target)
    except requests.RequestException as exc:
        return Check("LLM", "error", type(exc).__name__, target=target)
    if response.status_code != 200:
        return Check("LLM", "error", f"HTTP {response.status_code}", target=target)
    return Check("LLM", "ok", "GET /v1/models answers", target=target)


def _check_store(store: Store, settings: Settings) -> Check:
    store.ping()
    counts = store.outbox_counts()
    outbox = ", ".join(f"{n} {state}" for state, n in counts.items())
    why = ""
    if counts.get("pending") and settings.grafana_url is None:
        why = (
            " (no Grafana is configured, PLUGIN_BACKEND_GRAFANA_URL: pending annotations "
            "wait for it, and retention drops them after "
            f"{settings.retention_days:g} days)"
        )
    return Check("Store", "ok", f"reachable; annotation outbox: {outbox}{why}", target=repr(store))
