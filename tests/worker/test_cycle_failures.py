"""A rule cycle whose store write fails is visible: the worker (a real process, on
SQLite and on a real PostgreSQL server) logs it at ERROR with the cause, counts it
in its metrics, and `worker --once` exits non-zero; nothing half-saved is left, and
the next run, once the store accepts writes again, opens the incident."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from plugin_backend.store import Store
from testkit.promserver import find_free_port

# Runs `plugin-backend worker` as a subprocess, as operators do.
pytestmark = pytest.mark.processes

# the demo estate injects a fault every 4 h 7 min, so 6 h of replay always open an
# incident: paged at the band's edge, since a rate-controlled pager (one alarm per three
# days) learns a fault every four hours as the series' normal
RULES = """\
rules:
  - name: checkout-latency
    expr: 'http_request_duration_seconds_p99{service="checkout"}'
    every: 5s
    detector: holt_winters
    rate_control: false
    dashboard_uid: anomaly-overview
    panel_id: 2
"""
CAUSE = "disk quota exceeded"
WORKER = [sys.executable, "-m", "plugin_backend", "worker"]


def _refuse_annotations(store: Store) -> None:
    """Make the database itself refuse every new outbox row (as a full disk would)."""
    with store.engine.begin() as conn:
        if store.backend == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
                    f"BEGIN SELECT RAISE(ABORT, '{CAUSE}'); END"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN RAISE EXCEPTION '{CAUSE}'; END $$"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )


def _accept_annotations(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("DROP TRIGGER refuse" + (" ON outbox" if store.backend != "sqlite" else ""))
        )


def _setup(tmp_path: Path, store_url: str) -> Iterator[tuple[Store, Path, dict[str, str]]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {
        **os.environ,
        "PLUGIN_BACKEND_STORE_URL": store_url,
        "PLUGIN_BACKEND_LLM_PROVIDER": "none",
        "PLUGIN_BACKEND_LOG_FORMAT": "json",
    }
    for name in ("PLUGIN_BACKEND_PROMETHEUS_URL", "PLUGIN_BACKEND_GRAFANA_URL"):
        env.pop(name, None)  # the demo estate; incidents stored, annotations queued
    store = Store(store_url)
    store.migrate()
    yield store, rules, env
    store.close()


@pytest.fixture
def setup(tmp_path: Path, store_url: str) -> Iterator[tuple[Store, Path, dict[str, str]]]:
    yield from _setup(tmp_path, store_url)


@pytest.fixture
def sqlite_setup(tmp_path: Path) -> Iterator[tuple[Store, Path, dict[str, str]]]:
    yield from _setup(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")


def _worker_once(rules: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WORKER, "--rules", str(rules), "--once", "--since", "6h"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _error_lines(stderr: str) -> list[dict]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["level"] == "error"]


def test_worker_once_exits_non_zero_on_a_failed_store_write_and_loses_nothing(setup):
    store, rules, env = setup
    _refuse_annotations(store)
    failed = _worker_once(rules, env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "0 incidents opened" in failed.stdout
    assert "1 steps failed" in failed.stdout
    assert "rule checkout-latency failed (store): " in failed.stderr
    (error,) = _error_lines(failed.stderr)
    assert error["msg"].startswith("rule checkout-latency failed (store)")
    assert CAUSE in error["msg"]
    # the incident and its annotation are one transaction: neither was kept
    assert store.list_incidents() == []
    assert store.outbox_rows() == []

    _accept_annotations(store)
    again = _worker_once(rules, env)
    assert again.returncode == 0, again.stderr
    assert "0 steps failed" in again.stdout
    incidents = store.list_incidents()
    assert incidents
    assert store.outbox_counts()["pending"] == len(incidents)


def test_the_running_worker_counts_failed_cycles_in_its_metrics(tmp_path, sqlite_setup):
    store, rules, env = sqlite_setup
    _refuse_annotations(store)
    port = find_free_port()
    metrics = ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    log = tmp_path / "worker.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*WORKER, "--rules", str(rules), "--since", "6h", *metrics],
            env=env,
            stdout=handle,
            stderr=handle,
        )
    sample = 'plugin_backend_worker_cycle_failures_total{cause="store",step="rule"}'
    try:
        deadline = time.monotonic() + 120
        text = ""
        while sample + " 0.0" in text or sample not in text:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.ConnectionError:
                continue
        # the fixed label set is exported from the start, at zero
        assert 'plugin_backend_worker_cycle_failures_total{cause="crash",step="rule"} 0.0' in text
        assert 'plugin_backend_worker_cycles_total{outcome="error",rule="checkout-latency"}' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    errors = _error_lines(log.read_text())
    assert errors
    assert all(CAUSE in e["msg"] for e in errors if e["msg"].startswith("rule "))
