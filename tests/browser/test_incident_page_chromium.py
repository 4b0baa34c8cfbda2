"""The incident pages in a real browser: headless Chromium (Debian's chromium and
chromedriver, driven by selenium, nothing downloaded) against `plugin-backend serve`
under gunicorn, over a store holding a real demo incident and a hostile one."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.detection import DetectionService
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Incident, incident_id
from plugin_backend.rules import parse_rules
from plugin_backend.store import Store
from plugin_backend.watch import RuleCycle
from testkit.promserver import find_free_port
from tests.demo_faults import demo_fault_start

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "test-artifacts" / "incident-page.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FAULT_START_S = demo_fault_start("pg_pool_exhaustion")  # 30 min, seed 7
NOW_S = FAULT_START_S + 3600
RULE = parse_rules(
    """
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 30s
    dashboard_uid: anomaly-overview
    panel_id: 2
    rate_control: false  # a fault every 4 h: deploy/demo-rules.yaml says why
"""
).rules[0]
PAYLOAD = "<script>window.__pwned=1</script>"


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    message = f"{' and '.join(missing)} missing: install the Debian packages chromium and "
    message += "chromium-driver (`make system-deps`)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide a real browser: {message}", pytrace=False)
    pytest.skip(message)


def _incidents() -> tuple[Incident, Incident]:
    """The injected fault as the rule finds and explains it, and a hostile twin."""
    source = DemoSource(seed=7)
    cycle = RuleCycle(DetectionService(source, max_history_points=50_000), ExplainService(source))
    result = cycle.run(RULE, NOW_S, [], lookback_s=3 * 3600)
    (fault,) = [
        i
        for i, _ in result.changed
        if FAULT_START_S <= i.start_s <= FAULT_START_S + 900 and i.report
    ]
    hostile = dataclasses.replace(
        fault,
        id=incident_id("browser-hostile"),
        key="browser-hostile",
        title=f"hostile {PAYLOAD}",
        labels={"service": PAYLOAD},
        note=f'{PAYLOAD}<img src=x onerror="window.__pwned=2">',
        start_s=fault.start_s - 86_400,
        end_s=fault.end_s - 86_400,
    )
    return fault, hostile


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _require_browser()
    fault, hostile = _incidents()
    path = tmp_path_factory.mktemp("browser-store") / "store.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    for incident in (fault, hostile):
        store.save_incident(incident, None, now_s=NOW_S)
    store.close()
    return {"url": f"sqlite:///{path}", "fault": fault, "hostile": hostile}


@pytest.fixture(scope="module")
def backend(seeded, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """`python -m plugin_backend serve` (gunicorn, one worker) over the seeded store."""
    port = find_free_port()
    grafana = f"http://127.0.0.1:{find_free_port()}"  # configured, but nothing listens
    env = {
        **os.environ,
        "PLUGIN_BACKEND_STORE_URL": seeded["url"],
        "PLUGIN_BACKEND_PORT": str(port),
        "PLUGIN_BACKEND_MULTIPROC_DIR": str(tmp_path_factory.mktemp("multiproc")),
        "PLUGIN_BACKEND_LLM_PROVIDER": "none",
        "PLUGIN_BACKEND_WARM_DETECTORS": "none",
        "PLUGIN_BACKEND_GRAFANA_URL": grafana,
        "PLUGIN_BACKEND_GRAFANA_TOKEN": "browser-test",
    }
    for name in ("PLUGIN_BACKEND_PROMETHEUS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)  # the demo estate
    log_path = tmp_path_factory.mktemp("gunicorn") / "stderr.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin_backend", "serve", "--workers", "1"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if session.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield {"url": url, "grafana": grafana, "session": session}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    saved = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-proxy-server",
    ):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    chrome.set_page_load_timeout(20)
    try:
        yield chrome
    finally:
        chrome.quit()
        if saved is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = saved


def _by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _one(driver: Any, selector: str) -> Any:
    found = _by_css(driver, selector)
    assert len(found) == 1, f"{selector}: {len(found)} elements"
    return found[0]


def _assert_drawn(plot: Any) -> None:
    """A plot with at least one series line that really has a shape on screen."""
    lines = plot.find_elements("css selector", "path.series")
    assert lines, "no series line"
    d = lines[0].get_attribute("d")
    assert d.startswith("M")
    assert len(re.findall(r"[ML]", d)) > 20, d[:200]
    assert lines[0].size["width"] > 100  # laid out by the browser, not just in the markup
    assert int(plot.get_attribute("data-series-count")) == len(lines)


def test_from_the_landing_page_to_a_drawn_incident_page(
    backend, seeded, driver, artifacts, record_property
):
    from selenium.webdriver.common.by import By

    fault: Incident = seeded["fault"]
    url = backend["url"]
    driver.get(url + "/")
    assert "plugin-backend" in driver.title
    # open mode is loud: a red alert box, not grey text
    warning = _one(driver, "#auth-status")
    assert warning.text.startswith("Authentication: not configured. This service is OPEN:")
    assert warning.get_attribute("role") == "alert"
    assert warning.value_of_css_property("background-color") == "rgba(253, 226, 225, 1)"
    assert warning.value_of_css_property("border-top-color") == "rgba(164, 22, 26, 1)"
    health = {
        row.find_element(By.CSS_SELECTOR, "td").text: row.get_attribute("data-state")
        for row in _by_css(driver, "#health tr.check")
    }
    assert health == {"Series source": "ok", "Grafana": "error", "LLM": "off", "Store": "ok"}

    _one(driver, "#link-incidents").click()
    assert driver.current_url == url + "/incidents"
    rows = _by_css(driver, "tr.incident")
    assert [r.get_attribute("data-id") for r in rows] == [fault.id, seeded["hostile"].id]
    rows[0].find_element(By.CSS_SELECTOR, "a.incident-link").click()
    assert driver.current_url == f"{url}/incidents/{fault.id}"
    assert _one(driver, "#title").text == fault.title

    symptom = _one(driver, "#symptom svg.plot")
    _assert_drawn(symptom)
    assert int(symptom.get_attribute("data-series-count")) == 4  # + normal range edges
    assert len(symptom.find_elements(By.CSS_SELECTOR, "path.band")) == 1
    assert symptom.find_element(By.CSS_SELECTOR, "path.band").size["height"] > 10
    assert len(symptom.find_elements(By.CSS_SELECTOR, "rect.window")) == 1
    # what the page says it scored with is what the rule scored with (issue 17, 7)
    scoring = " ".join(_one(driver, "#scoring").text.split())
    assert "the ensemble detector (direction both, sensitivity 1), as its rule scored it" in (
        scoring
    )
    assert "holt_winters" not in scoring
    # one way to write a lead time, in the causes and the timeline alike
    page = _one(driver, "main").text
    assert "T-" not in page
    assert "min before the symptom" in page or "s before the symptom" in page
    # the y axis follows the data, and a latency's band never goes below zero (issue 17, 8)
    ticks = [
        float(t.text.replace("k", "e3").replace("M", "e6"))
        for t in symptom.find_elements(By.CSS_SELECTOR, "text.ytick")
    ]
    assert ticks
    assert min(ticks) >= 0
    assert fault.normal_low is not None
    assert fault.normal_low >= 0  # the range the latency must come back to

    assert fault.report is not None
    causes = _by_css(driver, "article.cause")
    assert len(causes) == min(len(fault.report["causes"]), 5)
    cause_plots = _by_css(driver, "article.cause svg.plot")
    assert len(cause_plots) == len(causes)
    for plot in cause_plots:
        _assert_drawn(plot)
        for edge in ("data-x-start", "data-x-end"):  # one time axis for all plots
            assert plot.get_attribute(edge) == symptom.get_attribute(edge)
    assert fault.report["causes"][0]["series"] in causes[0].text

    start_ms = round((fault.start_s - 3600) * 1000)
    end_ms = round((fault.end_s + 1800) * 1000)
    assert _one(driver, "#grafana-link").get_attribute("href") == (
        f"{backend['grafana']}/d/anomaly-overview?viewPanel=2&from={start_ms}&to={end_ms}"
    )
    assert driver.execute_script("return document.scripts.length") == 0

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 200, 4000))  # + browser chrome
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000
    shown = str(SCREENSHOT.relative_to(REPO))
    artifacts.append(shown)
    record_property("screenshot", shown)
    print(f"screenshot: {shown}")


def test_hostile_content_is_text_and_never_runs(backend, seeded, driver):
    hostile: Incident = seeded["hostile"]
    driver.get(backend["url"] + "/incidents")
    assert PAYLOAD in _one(driver, f'tr[data-id="{hostile.id}"]').text
    driver.get(f"{backend['url']}/incidents/{hostile.id}")
    assert _one(driver, "#title").text == f"hostile {PAYLOAD}"
    assert PAYLOAD in _one(driver, "#labels").text
    assert _one(driver, "#note").text.startswith(PAYLOAD + "<img src=x")
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    assert driver.execute_script("return document.scripts.length") == 0
    assert driver.execute_script("return document.images.length") == 0
    headers = backend["session"].get(f"{backend['url']}/incidents/{hostile.id}").headers
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
