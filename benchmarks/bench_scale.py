"""Scale-out throughput: 1,000 watch rules every 60 s on the Celery engine, with 1, 2
and 4 worker processes (``plugin-backend worker --engine celery --concurrency N``) on
a real redis-server, a real PostgreSQL store and a real Prometheus holding demo-like
series (the demo estate under 21 seeds, 48 series each, backfilled with promtool; one
rule per series), template notes.

The ticks are enqueued by the engine's own ``TickScheduler`` on a clock shifted into
the data's time (the data is backfilled, so "now" is in its past); its wall-clock pace
is real: every 60 s all rules' ticks fall due at once, as they do live. The first
round (each rule's first tick scores 3 h from scratch) runs alone and is timed apart;
then ROUNDS rounds are paced every 60 s and measured:

* rules/s: a round's 1,000 ticks over the time from their schedule to the last one
  done (the engine's capacity when it is saturated within the round, else a bound);
* tick lag: from its schedule to its cycle done (queueing + the cycle), p50 / p95;
* dropped: ticks that waited a whole period in the queue expire (the rule's next tick
  runs instead): a sign the workers do not keep up;
* Redis memory: the server's ``used_memory`` (``INFO memory``) after the rounds less
  before them, and the detector state alone (``MEMORY USAGE`` of every
  ``plugin_backend:state:*`` key, which expire 6 h after a rule's last tick), per rule.

``python -m benchmarks scale [--rules N] [--detector D]``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import percentile, print_table
from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.rules import load_rules
from plugin_backend.scale.scheduler import TickScheduler
from plugin_backend.store import Store
from plugin_backend.types import TimeRange
from testkit.pgserver import PostgresServer
from testkit.promserver import SyntheticSeries, start_backfilled
from testkit.redisserver import RedisServer

EVERY_S = 60.0
ROUNDS = 3
WORKERS = (1, 2, 4)
HISTORY_S = 6 * 3600.0  # backfilled before the first tick: the 3 h lookback + context
SKIP_FAMILIES = {"app_build_info", "up", "pg_connections_max", "http_requests_total"}


def quiet_start(seed: int = 7) -> float:
    """A first tick whose 3 h lookback and the run after it hold no injected fault
    (a steady state: root cause runs only where an incident opens)."""
    t = 1764000000.0
    while True:
        (nxt, *_) = incidents_between(t, t + 86_400, seed=seed)
        start = nxt.end_s + 3 * 3600 + 120
        if not incidents_between(start - 3 * 3600, start + (ROUNDS + 2) * EVERY_S, seed=seed):
            return start
        t = nxt.end_s


def demo_like_series(count: int, start_s: float, end_s: float) -> list[SyntheticSeries]:
    out: list[SyntheticSeries] = []
    span = TimeRange(start_s, end_s)
    seed = 0
    while len(out) < count:
        for s in DemoSource(seed=seed).query_range('{__name__=~".+"}', span, 15.0):
            if s.labels["__name__"] in SKIP_FAMILIES or len(out) >= count:
                continue
            labels = {**s.labels, "estate": f"e{seed}"}
            out.append(SyntheticSeries(labels, s.timestamps_s, s.values, "gauge"))
        seed += 1
    return out


def rules_yaml(series: list[SyntheticSeries], detector: str) -> str:
    lines = ["rules:"]
    for n, s in enumerate(series):
        matchers = ", ".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "__name__")
        lines += [
            f"  - name: r{n:04d}",
            f"    expr: '{s.labels['__name__']}{{{matchers}}}'",
            f"    every: {EVERY_S:.0f}s",
            f"    detector: {detector}",
        ]
    return "\n".join(lines) + "\n"


class ShiftedSender:
    """The Celery sender, with the data-time expiry of a tick moved to wall time."""

    def __init__(self, inner: Any, shift_s: float) -> None:
        self.inner = inner
        self.shift_s = shift_s

    def rule_tick(
        self, rule: str, tick_s: float, *, expires_s: float, lookback_s: float | None = None
    ) -> None:
        self.inner.rule_tick(rule, tick_s, expires_s=expires_s + self.shift_s)

    def housekeeping(self, name: str, *, expires_s: float) -> None:
        return  # no Grafana, no alerts: nothing to deliver


def run_config(
    workers: int,
    *,
    prom_url: str,
    pg: PostgresServer,
    redis_url: str,
    rules_file: Path,
    first_tick_s: float,
    count: int,
    workdir: Path,
) -> dict[str, Any]:
    from plugin_backend.config import load_settings
    from plugin_backend.scale.tasks import CelerySender, create_celery

    database = f"scale{workers}"
    store_url = pg.create_database(database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_BACKEND_")}
    env.update(
        PLUGIN_BACKEND_PROMETHEUS_URL=prom_url,
        PLUGIN_BACKEND_STORE_URL=store_url,
        PLUGIN_BACKEND_BROKER_URL=redis_url,
        PLUGIN_BACKEND_RULES=str(rules_file),
        PLUGIN_BACKEND_LLM_PROVIDER="none",
        PLUGIN_BACKEND_WARM_DETECTORS="none",
        PLUGIN_BACKEND_LOG_LEVEL="WARNING",
        PLUGIN_BACKEND_LOG_FORMAT="text",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    import redis

    client = redis.Redis.from_url(redis_url)
    memory_before = int(client.info("memory")["used_memory"])
    store = Store(store_url)
    store.migrate()
    settings = load_settings({k: v for k, v in env.items() if k.startswith("PLUGIN_BACKEND_")})
    app = create_celery(settings, schedule=False)
    rules = load_rules(str(rules_file))
    log = (workdir / f"workers{workers}.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plugin_backend",
            "worker",
            "--engine",
            "celery",
            "--no-schedule",
            "--concurrency",
            str(workers),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # the first round alone: every rule scores its 3 h from scratch (cold)
        shift = time.time() - first_tick_s
        sender = ShiftedSender(CelerySender(app), shift + 3600.0)  # no expiry here
        cold = TickScheduler(store, lambda: rules, sender, clock=lambda: first_tick_s + 1)
        started = time.time()
        cold.run_once()
        _wait_round(store, first_tick_s, count, timeout_s=3600)
        cold_s = time.time() - started
        # paced rounds: tick k falls due at wall time w0 + 60 k
        w0 = time.time() + 2.0
        shift = w0 - (first_tick_s + EVERY_S)
        clock = lambda: time.time() - shift  # noqa: E731
        live = TickScheduler(
            store, lambda: rules, ShiftedSender(CelerySender(app), shift), clock=clock, poll_s=0.2
        )
        stop = threading.Event()
        thread = threading.Thread(target=live.run_forever, args=(stop,), daemon=True)
        time.sleep(max(w0 - time.time(), 0.0))
        thread.start()
        last_tick = first_tick_s + ROUNDS * EVERY_S
        while clock() < last_tick + 1.0:
            time.sleep(0.5)
        stop.set()
        thread.join(10)
        _wait_round(store, last_tick, count, timeout_s=EVERY_S + 30)
        memory_after = int(client.info("memory")["used_memory"])
        state_keys, state_bytes = _state_memory(client)
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        client.close()
    ticks = [t for t in _rule_ticks(store) if t.tick_s > first_tick_s]
    store.close()
    pg.drop_database(database)
    rounds = []
    lags = []
    for k in range(1, ROUNDS + 1):
        tick = first_tick_s + k * EVERY_S
        due = tick + shift
        done = [t for t in ticks if t.tick_s == tick and t.state == "done"]
        lags += [t.updated_s - due for t in done]
        if done:
            rounds.append((len(done), max(t.updated_s for t in done) - due))
    dropped = sum(1 for t in ticks if t.state == "queued")
    failed = sum(1 for t in ticks if t.state in ("failed", "skipped"))
    per_round = [n / s for n, s in rounds]
    return {
        "workers": workers,
        "cold_s": cold_s,
        "cold_rps": count / cold_s,
        "rps": statistics.median(per_round) if per_round else 0.0,
        "round_s": statistics.median([s for _, s in rounds]) if rounds else float("nan"),
        "p50": percentile(lags, 50) if lags else float("nan"),
        "p95": percentile(lags, 95) if lags else float("nan"),
        "done": len(lags),
        "dropped": dropped,
        "failed": failed,
        "redis_delta": memory_after - memory_before,
        "state_keys": state_keys,
        "state_bytes": state_bytes,
    }


def _state_memory(client: Any) -> tuple[int, int]:
    """How many detector-state keys Redis holds, and their bytes (``MEMORY USAGE``)."""
    from plugin_backend.scale.state import PREFIX

    keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
    return len(keys), sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)


def _rule_ticks(store: Store) -> list[Any]:
    """The rules' ticks (not the housekeeping names the scheduler also claims)."""
    return [t for t in store.rule_ticks(limit=1_000_000) if not t.rule.startswith(":")]


def _wait_round(store: Store, tick_s: float, count: int, *, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        states = [t.state for t in _rule_ticks(store) if t.tick_s == tick_s]
        if len(states) >= count and all(s != "queued" and s != "running" for s in states):
            return
        time.sleep(0.5)


def main(count: int = 1000, detector: str = "robust_z") -> None:
    first_tick = quiet_start()
    series = demo_like_series(count, first_tick - HISTORY_S, first_tick + (ROUNDS + 1) * EVERY_S)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        rules_file = workdir / "rules.yaml"
        rules_file.write_text(rules_yaml(series, detector), encoding="utf-8")
        built = time.perf_counter()
        prom = start_backfilled(series, workdir / "prom", timeout_s=120)
        backfill_s = time.perf_counter() - built
        pg = PostgresServer().start()
        redis = RedisServer().start()
        try:
            for n in WORKERS:
                results.append(
                    run_config(
                        n,
                        prom_url=prom.url,
                        pg=pg,
                        redis_url=redis.url(n),
                        rules_file=rules_file,
                        first_tick_s=first_tick,
                        count=count,
                        workdir=workdir,
                    )
                )
                print(f"  {n} workers: {results[-1]}", flush=True)
        finally:
            redis.stop()
            pg.stop()
            prom.stop()
    base = results[0]["rps"] or 1.0
    rows = [
        [
            str(r["workers"]),
            f"{r['cold_s']:.0f} s ({r['cold_rps']:.1f}/s)",
            f"{r['rps']:.1f}",
            f"{r['round_s']:.1f} s",
            f"{r['p50']:.1f} / {r['p95']:.1f} s",
            f"{r['rps'] / base:.2f}x",
            f"{r['done']} / {r['dropped']} / {r['failed']}",
            f"{r['workers'] / r['rps'] * 1000:.0f} ms" if r["rps"] else "n/a",
            f"{r['redis_delta'] / 2**20:.1f} MiB ({r['redis_delta'] / count / 1024:.1f} KiB)",
            f"{r['state_keys']} keys, {r['state_bytes'] / 2**20:.1f} MiB "
            f"({r['state_bytes'] / max(r['state_keys'], 1) / 1024:.1f} KiB)",
        ]
        for r in results
    ]
    print_table(
        f"Scale-out: {count} rules ({detector}) every {EVERY_S:.0f} s, Celery on Redis, "
        f"PostgreSQL store, Prometheus ({len(series)} series, backfill {backfill_s:.0f} s); "
        f"{os.cpu_count()} CPUs",
        [
            "worker processes",
            "first round (cold)",
            "rules/s (warm)",
            "round done in",
            "tick lag p50 / p95",
            "speed-up",
            "done / dropped / failed",
            "process-time per rule",
            "Redis used_memory delta (per rule)",
            "detector state in Redis (per key)",
        ],
        rows,
    )


def state_main(detectors: tuple[str, ...] = ("robust_z", "holt_winters", "ensemble")) -> None:
    """``python -m benchmarks scale-state``: the Redis memory of one series' detector
    state when a rule at 15 s steps scores with the rate-controlled alarms (the rules'
    default), whose threshold window (3.5 days at 15 s) and the detector's context are
    kept, as the worker fetches them (the points budget, ``max_points_per_series``).
    One tick on worker A (cold), one more (warm, its own state), one on worker B (it
    takes A's state over from Redis; B scored another series first, as a pool process
    running many rules has); a real redis-server, the demo estate's checkout latency.
    Timings are one run each on whatever machine runs it."""
    import zlib

    import numpy as np
    import redis

    from plugin_backend.config import Settings
    from plugin_backend.detection import DetectionService, DetectOptions
    from plugin_backend.scale.state import SharedScoreCache, encode_state, state_key
    from plugin_backend.timegrid import align_range

    expr = 'http_request_duration_seconds_p99{service="checkout"}'
    budget = Settings().max_points_per_series
    now = 1764019200.0
    rows = []
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url(0))
        for detector in detectors:
            client.flushdb()
            caches = [SharedScoreCache(client), SharedScoreCache(client)]
            source = DemoSource(seed=7)
            workers = [DetectionService(source, cache=c, max_history_points=budget) for c in caches]
            options = DetectOptions(detector=detector)
            # B has run other rules before (a pool process's detectors are warm)
            other = 'http_errors_ratio{service="frontend"}'
            workers[1].detect(other, align_range(TimeRange(now - 3 * 3600, now), 15.0), options)
            timings, writes = [], []
            for at, tick in ((0, now), (0, now + 60.0), (1, now + 120.0)):
                span = align_range(TimeRange(tick - 3 * 3600, tick), 15.0)
                started = time.perf_counter()
                workers[at].detect(expr, span, options, floor_s=15.0)
                scored_s = time.perf_counter() - started
                started = time.perf_counter()
                before = caches[at].written_bytes
                caches[at].flush()
                timings.append((scored_s, time.perf_counter() - started))
                writes.append(caches[at].written_bytes - before)
            (series,) = source.query_range(expr, TimeRange(now - 60, now), 15.0)
            labels = tuple(sorted(series.labels.items()))
            key = (expr, detector, options.sensitivity, options.min_deviation, 15.0, labels)
            usage = int(client.memory_usage(state_key(key), samples=0) or 0)
            exported = caches[1].export(key)
            assert exported is not None
            scored, memo, valid_from_s = exported
            fields = encode_state(scored, memo, valid_from_s)
            blocks = sum(len(v) for k, v in fields.items() if k.startswith("block:"))
            table_rows = 6 + sum(
                0 if m is None else m.shape[0]
                for m in (scored.member_scores, scored.member_expected)
            )
            previous = len(
                zlib.compress(
                    np.vstack(
                        [
                            getattr(scored, f)
                            for f in (
                                "timestamps_s",
                                "values",
                                "expected",
                                "lower",
                                "upper",
                                "score",
                            )
                        ]
                    ).tobytes(),
                    1,
                )
            )
            span_d = (scored.timestamps_s[-1] - scored.timestamps_s[0]) / 86_400
            rows.append(
                [
                    detector,
                    f"{len(scored)} ({span_d:.1f} d)",
                    str(table_rows),
                    f"{usage / 1024:.0f} KiB",
                    f"{blocks / 1024:.0f} KiB",
                    f"{previous / 1024:.0f} KiB",
                    f"{timings[0][0] * 1000:.0f} ms",
                    f"{timings[1][0] * 1000:.0f} ms",
                    f"{timings[1][1] * 1000:.0f} ms",
                    f"{writes[1] / 1024:.0f} KiB",
                    f"{timings[2][0] * 1000:.0f} ms",
                    f"{usage * 1000 / 2**30:.2f} GiB",
                ]
            )
        client.close()
    print_table(
        f"Detector state in Redis per series: a rule at 15 s steps, rate-controlled "
        f"alarms, points budget {budget}; {os.cpu_count()} CPUs",
        [
            "detector",
            "points kept (span)",
            "rows",
            "MEMORY USAGE per key",
            "of which scores",
            "6 rows, unshuffled",
            "tick A cold",
            "tick A warm",
            "flush (encode + write)",
            "written by that flush",
            "tick B (takes A's state over)",
            "per 1,000 single-series rules",
        ],
        rows,
    )
