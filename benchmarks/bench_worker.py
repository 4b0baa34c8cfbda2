"""Anomaly onset -> annotation delivered, as the worker runs live.

For each injected fault of the demo estate (two days, 12 faults), a watch rule on
the fault's first symptom runs every 30 s on a simulated clock from 10 min before
the onset; when a cycle opens the incident, its wall-clock processing (fetch,
score, root cause, template note) and the delivery of its annotation to the fake
Grafana over HTTP are timed. End to end = detection delay on the data (onset ->
the cycle that opened it, which includes waiting for the next cycle) + processing
+ delivery. The LLM note adds its own latency (``python -m benchmarks notes``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.adapters.grafana import GrafanaClient
from plugin_backend.delivery import OutboxDeliverer
from plugin_backend.detection import DetectionService
from plugin_backend.explain import ExplainService
from plugin_backend.rules import parse_rules
from plugin_backend.store import Store
from plugin_backend.watch import RuleCycle
from testkit.fakegrafana import FakeGrafana

DAY_START_S = 1764000000.0
DAYS = 2
EVERY_S = 30.0
TOKEN = "bench"


def main() -> None:
    source = DemoSource(seed=7)
    faults = incidents_between(DAY_START_S, DAY_START_S + DAYS * 86_400, seed=7)
    rows = []
    totals, delays, processing, delivery = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, FakeGrafana(token=TOKEN) as grafana:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        store.migrate()
        deliverer = OutboxDeliverer(
            store, GrafanaClient(grafana.url, TOKEN, timeout_s=5), clock=time.time
        )
        for n, fault in enumerate(faults):
            rule = parse_rules(
                f"rules:\n  - name: r{n}\n    expr: '{fault.symptom_series[0]}'\n"
                f"    every: {EVERY_S:.0f}s\n    dashboard_uid: bench\n    panel_id: 1\n"
                # The demo estate injects a fault every 4 h (deploy/demo-rules.yaml).
                "    rate_control: false\n"
            ).rules[0]
            cycle = RuleCycle(
                DetectionService(source, max_history_points=50_000),
                ExplainService(source),
                link_base="http://pb",
            )
            now = fault.start_s - 600.0
            opened = None
            wall = 0.0
            known: list = []
            while now <= fault.start_s + 1800.0 and opened is None:
                started = time.perf_counter()
                result = cycle.run(rule, now, known)
                wall = time.perf_counter() - started
                for incident, annotation in result.changed:
                    known = [k for k in known if k.id != incident.id] + [incident]
                    if incident.id in result.opened and incident.start_s >= fault.start_s - 120:
                        opened = (incident, annotation)
                now += EVERY_S
            if opened is None:
                rows.append([fault.fault, fault.symptom_series[0][:48], "missed", "", "", "", ""])
                continue
            incident, annotation = opened
            started = time.perf_counter()
            store.save_incident(incident, annotation, now_s=time.time())
            deliverer.deliver_due()
            sent = time.perf_counter() - started
            delay = now - EVERY_S - fault.start_s
            total = delay + wall + sent
            delays.append(delay)
            processing.append(wall)
            delivery.append(sent)
            totals.append(total)
            rows.append(
                [
                    fault.fault,
                    fault.symptom_series[0][:48],
                    f"{delay:.0f}",
                    f"{wall * 1000:.0f}",
                    f"{sent * 1000:.0f}",
                    f"{total:.0f}",
                    "yes" if incident.cause == fault.root_cause_series else "no",
                ]
            )
        annotations = len(grafana.annotations())
    header = [
        "fault",
        "rule (first symptom)",
        "delay s",
        "cycle ms",
        "deliver ms",
        "total s",
        "cause ok",
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\nOnset -> annotation (demo estate, {DAYS} days, rule every {EVERY_S:.0f} s)")
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    if totals:

        def p(values: list[float], q: float) -> float:
            return (
                statistics.quantiles(values, n=20)[int(q * 20) - 1]
                if len(values) > 1
                else values[0]
            )

        print(
            f"\nfound {len(totals)}/{len(faults)}; annotations delivered {annotations}; "
            f"detection delay p50 {statistics.median(delays):.0f} s; cycle p50 "
            f"{statistics.median(processing) * 1000:.0f} ms; delivery p50 "
            f"{statistics.median(delivery) * 1000:.0f} ms; end to end p50 "
            f"{statistics.median(totals):.0f} s, p95 {p(totals, 0.95):.0f} s"
        )
