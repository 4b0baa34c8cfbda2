"""The service as users run it: `plugin-backend serve` under gunicorn, 2 workers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict

from testkit.promserver import find_free_port
from testkit.testdata import DATA_END_S

pytestmark = pytest.mark.integration


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def backend(prometheus_url, tmp_path_factory):
    port = find_free_port()
    multiproc_dir = tmp_path_factory.mktemp("multiproc")
    (multiproc_dir / "stale_from_last_run.db").write_bytes(b"garbage")
    env = {
        **os.environ,
        "PLUGIN_BACKEND_PROMETHEUS_URL": prometheus_url,
        "PLUGIN_BACKEND_PORT": str(port),
        "PLUGIN_BACKEND_MULTIPROC_DIR": str(multiproc_dir),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path_factory.mktemp("gunicorn") / "stderr.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin_backend", "serve", "--workers", "2"],
            env=env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + 60
    while True:
        try:
            if session.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or workers still warming up
            pass
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
    yield {"url": url, "proc": proc, "log": log_path, "session": session, "dir": multiproc_dir}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _panel_query(session, url):
    body = {
        "range": {"from": _iso(DATA_END_S - 3600), "to": _iso(DATA_END_S)},
        "intervalMs": 15_000,
        "maxDataPoints": 1_000,
        "targets": [{"refId": "A", "target": "promql", "payload": {"expr": "bench_gauge"}}],
    }
    response = session.post(url + "/datasource/query", json=body, timeout=30)
    return response.status_code, len(response.json())


def _counter(text: str, endpoint: str, status_class: str) -> float:
    pattern = (
        r"^plugin_backend_http_requests_total\{"
        + rf'endpoint="{re.escape(endpoint)}",method="POST",status_class="{status_class}"'
        + r"\} ([0-9.e+]+)$"
    )
    values = [float(v) for v in re.findall(pattern, text, flags=re.MULTILINE)]
    return sum(values)


def test_startup_log_names_the_source_and_the_grafana_url(backend):
    log = backend["log"].read_text()
    assert "Prometheus API at http://127.0.0.1:" in log
    assert "/datasource" in log


def test_queries_through_two_workers_are_counted_once_each_in_metrics(backend):
    url, session = backend["url"], backend["session"]

    def one(_):
        own = requests.Session()
        own.trust_env = False
        return _panel_query(own, url)

    # The kernel hands connections to either worker; send concurrent batches until
    # both have served (each writes its own counter file), then check the scrape sums.
    sent, results = 0, []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(50):
            results += pool.map(one, range(16))
            sent += 16
            pids = {p.name.split("_")[-1] for p in backend["dir"].glob("counter_*.db")}
            if len(pids) == 2:
                break
    assert len(pids) == 2, f"only {pids} served after {sent} requests"
    assert results == [(200, 10)] * sent

    first = session.get(url + "/metrics", timeout=10).text
    second = session.get(url + "/metrics", timeout=10).text
    assert _counter(first, "/datasource/query", "2xx") == sent
    assert _counter(second, "/datasource/query", "2xx") == sent
    assert "plugin_backend_build_info" in first
    assert (
        "plugin_backend_source_request_duration_seconds_count"
        f'{{operation="query_range",source="prometheus"}} {sent}.0'
    ) in first


def _served_per_worker(multiproc_dir) -> dict[str, float]:
    """Requests each worker has counted so far (its own counter file, by pid)."""
    return {
        path.stem.split("_")[-1]: sum(
            value
            for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path))
            if '"plugin_backend_http_requests_total"' in key and '"/datasource/query"' in key
        )
        for path in multiproc_dir.glob("counter_*.db")
    }


def test_a_burst_of_panel_queries_is_spread_over_both_workers(backend):
    """A dashboard sends its panels at once, each on a new connection: both workers
    take some (one worker that accepts the whole burst leaves the other idle)."""
    url = backend["url"]
    before = _served_per_worker(backend["dir"])
    start = threading.Barrier(16)

    def one(_):
        own = requests.Session()
        own.trust_env = False
        start.wait(timeout=30)
        return _panel_query(own, url)

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(one, range(16))) == [(200, 10)] * 16
    after = _served_per_worker(backend["dir"])
    served = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    assert sum(served.values()) == 16
    assert len([n for n in served.values() if n > 0]) == 2, served


def test_serve_on_a_port_in_use_exits_with_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "PLUGIN_BACKEND_PORT": str(port),
            "PLUGIN_BACKEND_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        }
        done = subprocess.run(
            [sys.executable, "-m", "plugin_backend", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_the_stale_multiprocess_dir_was_wiped_at_startup(backend):
    assert not (backend["dir"] / "stale_from_last_run.db").exists()


def test_errors_are_json_through_gunicorn(backend):
    url, session = backend["url"], backend["session"]
    response = session.post(
        url + "/datasource/query", data=b"{broken", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_sigterm_stops_the_server_cleanly(backend):
    proc = backend["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
