"""The human pages (landing, incident list, incident page) and their SVG plots, over the
demo estate and a real incident found and explained by a rule cycle."""

from __future__ import annotations

import dataclasses
import html
import math
import re
import socket

import numpy as np
import pytest
from markupsafe import escape
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.adapters.llm_openai import models_url
from plugin_backend.config import load_settings
from plugin_backend.detection import DetectionService
from plugin_backend.errors import StoreError, UpstreamError
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Incident, annotation_for, incident_id
from plugin_backend.rules import parse_rules
from plugin_backend.store import Store
from plugin_backend.telemetry import Telemetry
from plugin_backend.watch import RuleCycle
from plugin_backend.web import create_app
from plugin_backend.web.incident_views import (
    cause_selector,
    format_duration,
    format_time,
    grafana_link,
    plot_range,
    plot_step,
)
from plugin_backend.web.pages import SECURITY_HEADERS
from plugin_backend.web.plots import Band, Line, Shade, format_number, time_plot
from testkit.promserver import find_free_port
from tests.demo_faults import demo_fault_start

FAULT_START_S = demo_fault_start("pg_pool_exhaustion")  # 30 min, seed 7
NOW_S = FAULT_START_S + 3600
RULES = parse_rules(
    """
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 30s
    dashboard_uid: anomaly-overview
    panel_id: 2
    labels: {team: payments}
    rate_control: false  # a fault every 4 h: deploy/demo-rules.yaml says why
"""
)
HOSTILE_LABEL = "<script>alert(1)</script>"
HOSTILE_NOTE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def found() -> list[Incident]:
    """What the rule finds around the injected fault, explained (real reports)."""
    source = DemoSource(seed=7)
    cycle = RuleCycle(
        DetectionService(source, max_history_points=50_000),
        ExplainService(source),
        link_base="http://pb:8080",
    )
    result = cycle.run(RULES.rules[0], NOW_S, [], lookback_s=3 * 3600)
    return [incident for incident, _ in result.changed]


@pytest.fixture(scope="module")
def fault(found: list[Incident]) -> Incident:
    (incident,) = [
        i for i in found if FAULT_START_S <= i.start_s <= FAULT_START_S + 900 and i.report
    ]
    return incident


def _other(fault: Incident) -> Incident:
    """A second closed incident of the same rule and service, two hours earlier."""
    return dataclasses.replace(
        fault,
        id=incident_id("other"),
        key="other",
        start_s=fault.start_s - 7200,
        end_s=fault.end_s - 7200,
    )


def _hostile(fault: Incident) -> Incident:
    """An open incident whose labels, title, note and cause hold markup."""
    assert fault.report is not None
    report = dict(fault.report)
    cause = dict(report["causes"][0])
    cause["labels"] = {**cause["labels"], "service": HOSTILE_LABEL}
    cause["series"] = f'pg_connections_in_use{{service="{HOSTILE_LABEL}"}}'
    report["causes"] = [cause]
    return dataclasses.replace(
        fault,
        id=incident_id("hostile"),
        key="hostile",
        title=f"hostile {HOSTILE_LABEL}",
        status="open",
        rule="hostile-rule",
        labels={"service": HOSTILE_LABEL},
        note=HOSTILE_NOTE,
        report=report,
        start_s=fault.start_s - 86_400,
        end_s=fault.end_s - 86_400,
    )


@pytest.fixture
def store(tmp_path, found, fault) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'pages.db'}")
    store.migrate()
    for incident in found:
        store.save_incident(incident, None, now_s=NOW_S)
    store.save_incident(_hostile(fault), None, now_s=NOW_S)
    store.save_incident(_other(fault), None, now_s=NOW_S)
    return store


def _settings(**extra: str):
    return load_settings({"PLUGIN_BACKEND_LLM_PROVIDER": "none", **extra})


def _app(store, source=None, **extra: str):
    return create_app(
        _settings(**extra),
        source=source if source is not None else DemoSource(seed=7),
        telemetry=Telemetry(CollectorRegistry()),
        store=store,
    )


@pytest.fixture
def closed_port() -> int:
    return find_free_port()  # nothing listens there: connections are refused at once


@pytest.fixture
def grafana_url(closed_port) -> str:
    return f"http://127.0.0.1:{closed_port}"


@pytest.fixture
def client(store, grafana_url):
    app = _app(store, PLUGIN_BACKEND_GRAFANA_URL=grafana_url, PLUGIN_BACKEND_GRAFANA_TOKEN="t")
    return app.test_client()


def _esc(text: str) -> str:
    """As Jinja escapes (``"`` becomes ``&#34;``)."""
    return str(escape(text))


def _text(response) -> str:
    assert response.content_type.startswith("text/html"), response.content_type
    return response.get_data(as_text=True)


# -- incident list -----------------------------------------------------------------------


def test_the_list_shows_every_incident_newest_first_with_its_columns(client, found, fault):
    body = _text(client.get("/incidents"))
    ids = re.findall(r'<tr class="incident" data-id="([0-9a-f]{16})"', body)
    stored = sorted([*found, _hostile(fault), _other(fault)], key=lambda i: i.start_s, reverse=True)
    assert ids == [i.id for i in stored]
    row = body[body.index(f'data-id="{fault.id}"') :].split("</tr>")[0]
    assert format_time(fault.start_s) in row
    assert FAULT_START_S <= fault.start_s <= FAULT_START_S + 600  # the fault's first minutes
    assert format_duration(fault.end_s - fault.start_s) in row
    assert fault.end_s - fault.start_s > 25 * 60  # the incident lasts as long as the fault
    assert "closed" in row
    assert "checkout-latency" in row
    assert _esc(fault.title) in row
    assert _esc(fault.cause or "") in row
    assert f"{fault.peak_score:.2f}" in row
    assert f'href="/incidents/{fault.id}"' in row


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=open", {"hostile"}),
        ("status=closed", {"fault", "other"}),
        ("rule=hostile-rule", {"hostile"}),
        ("rule=checkout-latency&status=closed", {"fault", "other"}),
        ("service=checkout", {"fault", "other"}),
        (f"service={HOSTILE_LABEL}", {"hostile"}),
        ("rule=nope", set()),
        ("status=&rule=&service=", {"fault", "other", "hostile"}),
    ],
)
def test_the_list_filters_by_status_rule_and_service(client, found, fault, query, expected):
    names = {fault.id: "fault", _hostile(fault).id: "hostile", _other(fault).id: "other"}
    body = _text(client.get(f"/incidents?{query}"))
    shown = {names.get(i, "other") for i in re.findall(r'data-id="([0-9a-f]{16})"', body)}
    assert shown == expected
    if not expected:
        assert "No incidents match." in body


@pytest.mark.parametrize("query", ["status=bogus", "limit=0", "limit=x"])
def test_bad_filters_are_a_400_page(client, query):
    response = client.get(f"/incidents?{query}")
    assert response.status_code == 400
    assert "Bad filter" in _text(response)


# -- incident page -----------------------------------------------------------------------


def test_the_incident_page_shows_the_incident_its_plots_and_its_causes(client, fault):
    response = client.get(f"/incidents/{fault.id}")
    assert response.status_code == 200
    body = _text(response)
    assert _esc(fault.title) in body
    assert _esc(fault.note) in body
    assert format_time(fault.start_s) in body  # start
    assert format_time(fault.end_s) in body  # end
    assert format_duration(fault.end_s - fault.start_s) in body
    # LLM provenance: the template writer (no LLM configured in the rule cycle)
    assert '<span class="llm-provider">none</span>' in body
    assert "yes (template note)" in body

    assert fault.report is not None
    causes = fault.report["causes"][:5]
    plots = re.findall(r'<svg [^>]*class="plot"[^>]*>', body)
    assert len(plots) == 1 + len(causes)
    symptom = body[body.index('id="symptom"') : body.index('id="root-cause"')]
    # the series, its expected line and the two edges of the normal range
    assert 'data-series-count="4"' in symptom
    assert symptom.count("<title>normal range</title>") == 2
    assert '<path class="band"' in symptom
    assert '<rect class="window"' in symptom
    assert '<path class="series expected"' in symptom
    assert len(re.findall(r'<article class="card cause"', body)) == len(causes)
    for cause in causes:
        assert _esc(cause["series"]) in body
    # evidence of the top cause: the pool's 20-45 connections at rest (by time of day) ->
    # its value in the incident, its lead on the symptom, onset, score
    top = body[body.index('id="cause-1"') :]
    evidence = causes[0]["evidence"]
    assert 20 <= evidence["baseline"] <= 45
    # well above its level at rest (at the alarm, 2-3 min in, the pool is still filling)
    assert evidence["incident_value"] > evidence["baseline"] + 10
    before, during = (format_number(evidence[k]) for k in ("baseline", "incident_value"))
    assert f"{before} &rarr; {during}" in top
    lead_s = causes[0]["lead_s"]
    assert lead_s > 0  # the pool filled up before checkout slowed down
    assert f"{format_duration(lead_s)} before the symptom" in top  # one way, everywhere
    assert format_time(causes[0]["onset"]) in top
    assert f"{causes[0]['score']:.2f}" in top
    # every plot on the same time axis: [start - 1 h, end + 30 min]
    starts = set(re.findall(r'data-x-start="(\d+)"', body))
    ends = set(re.findall(r'data-x-end="(\d+)"', body))
    assert starts == {f"{fault.start_s - 3600:.0f}"}
    assert ends == {f"{fault.end_s + 1800:.0f}"}
    # timeline: cause onset, symptom start, alarm, end, in that order
    timeline = body[body.index('id="timeline"') :]
    order = [timeline.index(k) for k in ("kind-cause", "kind-start", "kind-confirmed", "kind-end")]
    assert order == sorted(order)
    assert re.search(r"\d+ (s|min)( \d+ s)? before its start", timeline)
    assert "T-" not in timeline
    assert "T+" not in timeline


def test_the_symptom_is_scored_as_its_rule_scored_it_and_says_so(client, fault):
    # The rule (no detector given) used the default detector on its 15 s grid; the page
    # says so, and plots the windows the worker found, not a detector of its own.
    assert fault.report["detection"] == {
        "detector": "ensemble",
        "direction": "both",
        "sensitivity": 1.0,
        "min_deviation": 0.0,
        "step_s": 15.0,
    }
    body = _text(client.get(f"/incidents/{fault.id}"))
    scoring = html.unescape(body[body.index('id="scoring"') :].split("</p>")[0])
    assert "one point every 15 s" in scoring
    assert "the ensemble detector (direction both, sensitivity 1), as its rule scored it" in (
        " ".join(scoring.split())
    )
    assert "holt_winters" not in scoring


def test_an_incident_without_recorded_options_names_the_default_detector(store, fault):
    bare = dataclasses.replace(
        fault,
        id="00000000000000aa",
        key="alert:bare",
        report={k: v for k, v in fault.report.items() if k != "detection"},
    )
    store.save_incident(bare, None, now_s=NOW_S)
    body = _text(_app(store).test_client().get(f"/incidents/{bare.id}"))
    scoring = " ".join(html.unescape(body[body.index('id="scoring"') :].split("</p>")[0]).split())
    assert "the ensemble detector (direction both, sensitivity 1): the default" in scoring


def test_the_grafana_link_opens_the_incident_panel_over_the_plotted_range(
    client, fault, grafana_url
):
    body = _text(client.get(f"/incidents/{fault.id}"))
    (href,) = re.findall(r'id="grafana-link" href="([^"]+)"', body)
    start_ms = round((fault.start_s - 3600) * 1000)
    end_ms = round((fault.end_s + 1800) * 1000)
    assert html.unescape(href) == (
        f"{grafana_url}/d/anomaly-overview?viewPanel=2&from={start_ms}&to={end_ms}"
    )


def test_without_grafana_there_is_no_link(store, fault):
    body = _text(_app(store).test_client().get(f"/incidents/{fault.id}"))
    assert 'id="grafana-link"' not in body
    assert "no Grafana panel for this incident" in body


def test_the_json_variant_is_the_stored_incident(client, fault):
    response = client.get(f"/incidents/{fault.id}.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    data = response.get_json()
    assert data["id"] == fault.id
    assert data["title"] == fault.title
    assert data["report"]["causes"][0]["series"] == fault.cause
    assert set(data) == {f.name for f in dataclasses.fields(Incident)}


@pytest.mark.parametrize(
    "bad",
    [
        "0123456789abcdef",  # well formed, unknown
        "zzz",
        "3FCC2C17CEDB8A27",  # ids are lower-case hex
        "0123456789abcdef0",
        "0123456789abcde",
        "..%2F..%2Fetc",
        "%3Cscript%3E",
    ],
)
def test_unknown_or_malformed_ids_are_a_404_page(client, bad):
    response = client.get(f"/incidents/{bad}")
    assert response.status_code == 404
    body = _text(response)
    assert "Incident not found" in body
    assert "<script>" not in body


def test_an_unknown_id_as_json_is_a_json_404(client):
    response = client.get("/incidents/0123456789abcdef.json")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


class _BrokenSource(DemoSource):
    """The demo estate whose queries fail as an unreachable Prometheus does."""

    def query_range(self, expr, time_range, step_s):
        raise UpstreamError("Prometheus at http://prom:9090: cannot connect (refused)")


def test_a_failing_source_leaves_the_page_up_with_a_message(store, fault):
    client = _app(store, source=_BrokenSource(seed=7)).test_client()
    response = client.get(f"/incidents/{fault.id}")
    assert response.status_code == 200
    body = _text(response)
    assert 'id="symptom-error"' in body
    assert "The series source (demo) failed" in body
    assert "cannot connect (refused)" in body
    assert 'class="plot"' not in body
    # the stored analysis is still shown, without plots
    assert _esc(fault.note) in body
    assert "Not fetched: the series source failed." in body


def test_hostile_labels_titles_and_notes_show_as_text(client, fault):
    hostile = _hostile(fault)
    body = _text(client.get(f"/incidents/{hostile.id}"))
    assert "<script" not in body.lower()
    assert "<img" not in body.lower()
    assert _esc(HOSTILE_LABEL) in body
    assert _esc(HOSTILE_NOTE) in body
    listing = _text(client.get("/incidents"))
    assert "<script" not in listing.lower()
    assert _esc(f"hostile {HOSTILE_LABEL}") in listing


@pytest.mark.parametrize("path", ["/", "/incidents", "/incidents/0123456789abcdef", "DETAIL"])
def test_pages_forbid_scripts_and_sniffing(client, fault, path):
    response = client.get(f"/incidents/{fault.id}" if path == "DETAIL" else path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "script-src" not in response.headers["Content-Security-Policy"]


def test_a_store_failure_is_an_html_503(store, monkeypatch):
    def broken(**_):
        raise StoreError("store 'sqlite:///x': OperationalError: disk I/O error")

    monkeypatch.setattr(store, "list_incidents", broken)
    response = _app(store).test_client().get("/incidents")
    assert response.status_code == 503
    assert "disk I/O error" in _text(response)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- landing page ------------------------------------------------------------------------


def _health(body: str) -> dict[str, tuple[str, str]]:
    rows = re.findall(
        r'<tr class="check" data-state="(\w+)">\s*<td>([^<]+)</td>\s*<td[^>]*>[^<]*</td>\s*'
        r"<td>([^<]*)</td>",
        body,
    )
    return {name: (state, html.unescape(detail)) for state, name, detail in rows}


def test_the_landing_page_links_and_reports_unreachable_dependencies_fast(store, closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    app = _app(
        store,
        PLUGIN_BACKEND_GRAFANA_URL=url,
        PLUGIN_BACKEND_GRAFANA_TOKEN="t",
        PLUGIN_BACKEND_LLM_PROVIDER="openai",
        PLUGIN_BACKEND_LLM_URL=url + "/v1",
        PLUGIN_BACKEND_LLM_MODEL="m",
    )
    response = app.test_client().get("/")
    assert response.status_code == 200
    body = _text(response)
    assert "plugin-backend" in body
    assert "0.1.0" in body
    for href in ("/incidents", "/openapi.json", "/metrics"):
        assert f'href="{href}"' in body
    for uid in ("anomaly-overview", "incidents", "plugin-backend-self"):
        assert f'href="{url}/d/{uid}"' in body
    health = _health(body)
    assert health["Series source"][0] == "ok"
    state, detail = health["Grafana"]
    assert state == "error"
    assert detail.startswith(f"cannot reach Grafana at {url} (GET /api/health): ")
    assert "refused" in detail
    state, detail = health["LLM"]
    assert state == "error"
    assert detail.startswith(f"cannot reach LLM at {url}/v1/models: ")
    assert "refused" in detail
    assert f"{url}/v1/models" in body
    assert health["Store"][0] == "ok"
    assert "annotation outbox: 0 pending, 0 delivered, 0 failed" in health["Store"][1]
    assert re.search(r'class="card alarm" id="auth-status" role="alert">', body)
    assert "Authentication: not configured. This service is OPEN:" in body


def test_a_dependency_that_never_answers_is_reported_at_the_probe_timeout(store):
    # accepts connections, never answers: the page still comes, naming the probe's bound
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        app = _app(
            store,
            PLUGIN_BACKEND_LLM_PROVIDER="openai",
            PLUGIN_BACKEND_LLM_URL=url + "/v1",
            PLUGIN_BACKEND_LLM_MODEL="m",
        )
        response = app.test_client().get("/")
    assert response.status_code == 200
    assert _health(_text(response))["LLM"] == (
        "error",
        f"LLM at {url}/v1/models did not answer within 2s",
    )


def test_the_landing_page_without_grafana_or_llm_says_not_configured(store, fault):
    store.save_incident(fault, annotation_for(fault, link_base=None), now_s=NOW_S)
    app = _app(store)
    app.extensions["plugin_backend.auth_enabled"] = True
    body = _text(app.test_client().get("/"))
    health = _health(body)
    assert health["Grafana"][0] == "off"
    assert health["LLM"][0] == "off"
    assert "No Grafana configured" in body
    assert "Authentication: enabled" in body
    # the incidents' annotations wait in the outbox: the page says why
    assert health["Store"][1].startswith("reachable; annotation outbox: 1 pending")
    assert "no Grafana is configured, PLUGIN_BACKEND_GRAFANA_URL" in health["Store"][1]
    assert "retention drops them after 30 days" in health["Store"][1]


def test_a_broken_store_shows_in_the_health_table(store, monkeypatch):
    def broken():
        raise StoreError("store 'sqlite:///x': OperationalError: unable to open database file")

    monkeypatch.setattr(store, "ping", broken)
    health = _health(_text(_app(store).test_client().get("/")))
    assert health["Store"] == (
        "error",
        "store 'sqlite:///x': OperationalError: unable to open database file",
    )


# -- pure parts: plots and view models ---------------------------------------------------


def test_a_plot_has_one_path_per_line_a_band_a_window_and_utc_ticks():
    t = 1764018000.0 + np.arange(0, 3600, 15.0)
    values = np.sin(t / 300)
    svg = time_plot(
        t,
        [Line(values, "value"), Line(values * 0.9, "expected", dashed=True)],
        x_range=(t[0], t[-1]),
        band=Band(values - 0.2, values + 0.2),
        shades=[Shade(t[100], t[120], "window")],
    )
    assert svg.startswith("<svg ")
    assert svg.endswith("</svg>")
    assert 'class="plot"' in svg
    assert 'data-series-count="2"' in svg
    assert len(re.findall(r'<path class="series', svg)) == 2
    assert svg.count('<path class="band"') == 1
    assert svg.count('<rect class="window"') == 1
    ticks = re.findall(r'<text class="xtick"[^>]*>([^<]+)</text>', svg)
    assert ticks[:2] == ["21:00", "21:10"]  # 1764018000 is 21:00 UTC
    assert re.findall(r'<text class="ytick"[^>]*>([^<]+)</text>', svg)


def test_nan_gaps_break_lines_and_bands():
    t = np.arange(10.0)
    values = np.array([1, 2, np.nan, 3, 4, np.nan, np.nan, 5, np.inf, 6], dtype=float)
    svg = time_plot(t, [Line(values, "v")], x_range=(0, 9), band=Band(values - 1, values + 1))
    (d,) = re.findall(r'<path class="series" d="([^"]*)"', svg)
    assert d.count("M") == 4  # [1 2] [3 4] [5] [6]
    assert d.count("h0.1") == 2  # lone points stay visible
    (band,) = re.findall(r'<path class="band" d="([^"]*)"', svg)
    assert band.count("Z") == 4
    assert "nan" not in svg.lower()
    assert "inf" not in svg.lower()


def test_points_outside_the_range_are_dropped_and_an_empty_plot_says_so():
    t = np.arange(0.0, 100.0, 10.0)
    svg = time_plot(t, [Line(t, "v")], x_range=(20, 50))
    (d,) = re.findall(r'<path class="series" d="([^"]*)"', svg)
    assert d.count(",") == 4  # 20, 30, 40, 50
    empty = time_plot([], [Line([], "v")], x_range=(0, 60))
    assert "no data in this range" in empty
    assert 'data-series-count="1"' in empty


def test_plot_texts_are_escaped():
    svg = time_plot(
        [0.0, 1.0],
        [Line([1.0, 2.0], f'up{{x="{HOSTILE_LABEL}"}}')],
        x_range=(0, 1),
        title=HOSTILE_NOTE,
        shades=[Shade(0, 1, "<b>w</b>")],
    )
    for markup in ("<script", "<img", "<b>"):
        assert markup not in svg
    assert html.escape(HOSTILE_LABEL) in svg


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (0.15, "0.15"), (76.0, "76"), (12_345.0, "12.3k"), (3.4e6, "3.4M")],
)
def test_numbers_are_compact(value, text):
    assert format_number(value) == text
    assert format_number(math.nan) == "\N{EN DASH}"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (45, "45 s"),
        (210, "3 min 30 s"),
        (600, "10 min"),
        (3900, "1 h 05 min"),
        (180_000, "2 d 2 h"),
    ],
)
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text


def test_cause_selectors_quote_label_values():
    cause = {
        "metric": "pg_connections_in_use",
        "labels": {"__name__": "pg_connections_in_use", "service": 'a"b\\c', "job": "demo"},
    }
    assert cause_selector(cause) == 'pg_connections_in_use{job="demo", service="a\\"b\\\\c"}'
    weird = {"metric": "", "labels": {"__name__": "not a name", "x": "1"}}
    assert cause_selector(weird) == '{__name__="not a name", x="1"}'


def test_the_plotted_range_stops_at_now_and_steps_are_whole(fault):
    assert plot_range(fault, fault.end_s + 60) == (fault.start_s - 3600, fault.end_s + 60)
    assert plot_step((0, 5400)) == 15.0
    assert plot_step((0, 3 * 86400)) == 360.0


def test_grafana_links_escape_the_dashboard_uid(fault):
    odd = dataclasses.replace(fault, dashboard_uid="a/b c", panel_id=None)
    assert (
        grafana_link("http://g:3000/", odd, (1.0, 2.0))
        == "http://g:3000/d/a%2Fb%20c?from=1000&to=2000"
    )
    assert grafana_link(None, fault, (1.0, 2.0)) is None


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:8091", "http://h:8091/v1/models"),
        ("http://h:8091/v1/", "http://h:8091/v1/models"),
    ],
)
def test_the_llm_probe_url(base, url):
    assert models_url(base) == url
