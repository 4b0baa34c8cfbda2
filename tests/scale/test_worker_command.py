"""``plugin-backend worker --engine celery`` as an operator runs it: two worker
processes (each with its scheduler) on one real redis-server and one real PostgreSQL
store, over the demo estate. Every tick of the rule runs once, in one of them; both
stop cleanly on SIGTERM. Without a broker the command says what to set."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin_backend.store import Store
from tests.needs import REPO, require_installed

RULES_YAML = (
    "rules:\n  - name: checkout-latency\n"
    "    expr: 'http_request_duration_seconds_p99{service=\"checkout\"}'\n"
    "    every: 5s\n    detector: holt_winters\n"
)
TICK_RESULT = re.compile(r"plugin_backend\.rule_tick\[[^\]]+\] succeeded in \S+ (\{.*\})$")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_BACKEND_")}
    env.update(PYTHONPATH=str(REPO), PLUGIN_BACKEND_LOG_FORMAT="text", **extra)
    return env


def test_without_a_broker_the_celery_engine_names_the_setting(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery"],
        env=_env(PLUGIN_BACKEND_RULES=str(rules)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "PLUGIN_BACKEND_BROKER_URL" in done.stderr


def test_celery_dash_a_finds_the_app_configured_from_the_environment() -> None:
    code = (
        "from plugin_backend.scale.app import app\n"
        "print(app.conf.broker_url)\n"
        "print(sorted(q.name for q in app.conf.task_queues))\n"
        "print(sorted(t for t in app.tasks if t.startswith('plugin_backend.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(PLUGIN_BACKEND_BROKER_URL="redis://127.0.0.1:6390/3"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "No module named 'celery'" in done.stderr:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "redis://127.0.0.1:6390/3",
        "['delivery', 'notes', 'rules']",
        "['plugin_backend.alerts', 'plugin_backend.deliver', 'plugin_backend.purge', "
        "'plugin_backend.rule_tick', 'plugin_backend.sweep_notes', 'plugin_backend.write_note']",
    ]


@pytest.mark.slow
def test_two_celery_workers_run_every_tick_once(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    try:
        import celery  # noqa: F401
    except ImportError:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    env = _env(
        PLUGIN_BACKEND_BROKER_URL=redis_url,
        PLUGIN_BACKEND_STORE_URL=postgres_url,
        PLUGIN_BACKEND_WARM_DETECTORS="none",
        PLUGIN_BACKEND_LLM_PROVIDER="none",
    )
    store = Store(postgres_url)
    store.migrate()  # `plugin-backend db upgrade`, once, before the workers start
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    command = [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery"]
    procs = []
    for log in logs:
        with log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    [*command, "--rules", str(rules), "--concurrency", "1"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        deadline = time.monotonic() + 180
        done: list[float] = []
        while time.monotonic() < deadline and len(done) < 4:
            time.sleep(1)
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, log.read_text()[-3000:]
            done = [t.tick_s for t in store.rule_ticks("checkout-latency") if t.state == "done"]
        assert len(done) >= 4, [log.read_text()[-3000:] for log in logs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
    assert codes == [0, 0]
    ticks = store.rule_ticks("checkout-latency")
    store.close()
    ran = [
        ast.literal_eval(m.group(1))
        for log in logs
        for line in log.read_text().splitlines()
        if (m := TICK_RESULT.search(line))
    ]
    ran_ok = sorted(r["tick_s"] for r in ran if r["outcome"] == "ok")
    # every tick the store calls done ran exactly once, in one worker or the other
    assert ran_ok == sorted(t.tick_s for t in ticks if t.state == "done")
    assert len(set(ran_ok)) == len(ran_ok)
    assert all(t.state in {"done", "skipped", "queued"} for t in ticks), ticks


def test_the_celery_worker_serves_its_pool_processes_metrics(
    redis_url: str, tmp_path: Path
) -> None:
    try:
        import celery  # noqa: F401
    except ImportError:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    from testkit.promserver import find_free_port
    from tests.processes import local_session

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    port = find_free_port()
    env = _env(
        PLUGIN_BACKEND_BROKER_URL=redis_url,
        PLUGIN_BACKEND_STORE_URL=f"sqlite:///{tmp_path / 'store.db'}",
        PLUGIN_BACKEND_WARM_DETECTORS="none",
        PLUGIN_BACKEND_LLM_PROVIDER="none",
        PLUGIN_BACKEND_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery"]
    command += ["--rules", str(rules), "--concurrency", "2", "--metrics-port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    http = local_session()
    try:
        deadline = time.monotonic() + 180
        text = ""
        ok = re.compile(
            r'^plugin_backend_worker_cycles_total\{outcome="ok",rule="checkout-latency"\} '
            r"([0-9.e+]+)$",
            re.MULTILINE,
        )
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                text = http.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except OSError:
                text = ""
            found = ok.search(text)
            if found and float(found.group(1)) >= 2:
                break
            time.sleep(1)
        else:
            raise AssertionError(
                f"no two cycles counted: {text[-2000:]}\n{log.read_text()[-3000:]}"
            )
        # one series per rule, whichever pool process ran its last tick
        scores = re.findall(
            r'^plugin_backend_anomaly_score\{rule="checkout-latency"\} ', text, re.M
        )
        assert len(scores) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        http.close()
    assert code == 0


def test_once_is_refused_with_celery_and_names_the_one_process_pass(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery", "--once"],
        env=_env(PLUGIN_BACKEND_RULES=str(rules), PLUGIN_BACKEND_BROKER_URL="redis://x:1/0"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "`plugin-backend worker --once` (no --engine)" in done.stderr, done.stderr


@pytest.mark.slow
def test_sighup_reloads_a_celery_workers_rules_in_place(redis_url: str, tmp_path: Path) -> None:
    """As the one-process worker: SIGHUP swaps in the rules file (an invalid one is
    refused, the rules kept, the refusal counted), in the scheduler and the pool process
    alike, without a restart (Celery's own SIGHUP would restart the worker)."""
    try:
        import celery  # noqa: F401
    except ImportError:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    from testkit.promserver import find_free_port
    from tests.processes import local_session

    port = find_free_port()
    copy = RULES_YAML.replace("checkout-latency", "checkout-copy")
    other = copy + copy.removeprefix("rules:\n").replace("checkout-copy", "checkout-copy2")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(store_url)
    store.migrate()
    env = _env(
        PLUGIN_BACKEND_BROKER_URL=redis_url,
        PLUGIN_BACKEND_STORE_URL=store_url,
        PLUGIN_BACKEND_WARM_DETECTORS="none",
        PLUGIN_BACKEND_LLM_PROVIDER="none",
        PLUGIN_BACKEND_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "plugin_backend", "worker", "--engine", "celery"]
    command += ["--metrics-port", str(port)]
    http = local_session()

    def metric(name: str) -> str:
        text = http.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return " ".join(line for line in text.splitlines() if line.startswith(name + " "))

    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "--rules", str(rules), "--concurrency", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def done_after(rule: str, after_s: float, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            found = store.rule_ticks(rule)
            if any(t.state == "done" and t.tick_s >= after_s for t in found):
                return
            time.sleep(0.5)
        raise AssertionError(f"no tick of {rule} done after {after_s}\n{log.read_text()[-3000:]}")

    try:
        done_after("checkout-latency", 0.0, 180.0)
        pool = _children(proc.pid)
        # an invalid file: refused, the rules kept
        rules.write_text("rules:\n  - name: BAD NAME\n    expr: up\n", encoding="utf-8")
        refused_at = time.time()
        proc.send_signal(signal.SIGHUP)
        done_after("checkout-latency", refused_at + 1.0)
        assert "rules reload refused" in log.read_text()
        assert metric("plugin_backend_rules_reload_failures_total") == (
            "plugin_backend_rules_reload_failures_total 1.0"
        )
        # a valid one: its rule runs (the pool process knows it), the old one stops
        rules.write_text(other, encoding="utf-8")
        reloaded_at = time.time()
        proc.send_signal(signal.SIGHUP)
        done_after("checkout-copy", reloaded_at)
        time.sleep(10.0)  # two periods: the old rule is no longer scheduled
        old = [t for t in store.rule_ticks("checkout-latency") if t.tick_s > reloaded_at + 5.0]
        assert old == [], old
        assert _children(proc.pid) == pool  # reloaded in place, nothing restarted
        assert metric("plugin_backend_rules_loaded") == "plugin_backend_rules_loaded 2.0"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        http.close()
    store.close()
    assert code == 0, log.read_text()[-3000:]
    assert "Restarting celery worker" not in log.read_text()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the Celery pool's)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)
