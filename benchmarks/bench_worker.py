"""Anomaly onset -> annotation delivered, as the worker runs live.

For each injected fault of the demo estate (two days, 12 faults), a watch rule on
the fault's first symptom runs every 30 s on a simulated clock from 10 min before
the onset; when a cycle opens the incident, its wall-clock processing (fetch,
score, root cause, template note) and the delivery of its annotation to the fake
Grafana over HTTP are timed. End to end = detection delay on the data (onset ->
the cycle that opened it, which includes waiting for the next cycle) + processing
+ delivery. The LLM note adds its own latency (``python -m benchmarks notes``).

False incidents (:mod:`benchmarks.false_incidents`): each distinct rule, plus the
frontend's latency, replayed over the two days (``worker --since``), with the
benchmark's alarms (at the band's edge) and with the default rate control; then the
issue's scenario: a rule on the frontend's p99 over a 12 h replay of the incident
simulator's estate with one fault (``testkit.incidents``, backfilled into a real
Prometheus: 12 h of data in all, so the rule starts cold), per fault and seed.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table
from benchmarks.false_incidents import (
    FaultWindow,
    RuleTally,
    replay_incidents,
    tally,
    total,
    watch_rule,
)
from plugin_backend.adapters.demo import DemoIncident, DemoSource, incidents_between
from plugin_backend.adapters.grafana import GrafanaClient
from plugin_backend.adapters.prometheus import PrometheusClient
from plugin_backend.delivery import OutboxDeliverer
from plugin_backend.detection import DetectionService
from plugin_backend.explain import ExplainService
from plugin_backend.incidents import Incident
from plugin_backend.ports import SeriesSource
from plugin_backend.rules import parse_rules
from plugin_backend.store import Store
from plugin_backend.watch import RuleCycle
from testkit.fakegrafana import FakeGrafana
from testkit.incidents import IncidentCase, merge_cases, simulate
from testkit.promserver import start_backfilled

DAY_START_S = 1764000000.0
DAYS = 2
EVERY_S = 30.0
TOKEN = "bench"
FRONTEND_LATENCY = 'http_request_duration_seconds_p99{service="frontend"}'
# The demo's effects end up to lag + ramp (4 + 2 min) after its fault ends.
DEMO_SYMPTOMS_TAIL_S = 360.0
# The scenario: faults whose first symptom is the frontend's p99, 12 h each.
SIM_FAULTS = ("cpu_hog", "memory_leak", "slow_dependency", "disk_saturation")
SIM_SEEDS = (1, 2, 3)
SIM_HISTORY_S = 11 * 3600.0
SIM_AFTER_S = 3600.0
SIM_EPOCH_S = 1_769_904_000.0
# Cases this far apart share one Prometheus without seeing each other's history.
SIM_SPACING_S = 20 * 86_400.0


def main() -> None:
    onset_to_annotation()
    demo_false_incidents()
    sim_false_incidents()


def onset_to_annotation() -> None:
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
            known: list[Incident] = []
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


def _cycle(source: SeriesSource) -> RuleCycle:
    return RuleCycle(DetectionService(source, max_history_points=50_000), None)


def _alarms(rate_control: bool) -> str:
    return "rate-controlled" if rate_control else "band edge"


def _tally_rows(tallies: list[tuple[str, RuleTally]]) -> list[list[str]]:
    return [
        [
            alarms,
            t.rule,
            f"{t.found}/{t.faults}",
            str(t.true),
            str(t.false),
            f"{t.false_per_day:.2f}",
        ]
        for alarms, t in tallies
    ]


TALLY_HEADER = ["alarms", "rule", "faults found", "true", "false", "false/rule/day"]


def demo_window(fault: DemoIncident) -> FaultWindow:
    return FaultWindow(fault.start_s, fault.end_s + DEMO_SYMPTOMS_TAIL_S)


def _unlabelled(series: str) -> str:
    return series.replace('job="demo", ', "")


def demo_false_incidents() -> None:
    source = DemoSource(seed=7)
    start, end = DAY_START_S, DAY_START_S + DAYS * 86_400
    faults = incidents_between(start, end, seed=7)
    windows = [demo_window(f) for f in faults]
    firsts = (_unlabelled(f.symptom_series[0]) for f in faults)
    exprs = list(dict.fromkeys([*firsts, FRONTEND_LATENCY]))
    tallies: list[tuple[str, RuleTally]] = []
    for rate_control in (False, True):
        mine = []
        for n, expr in enumerate(exprs):
            rule = watch_rule(f"r{n}", expr, rate_control=rate_control)
            found = replay_incidents(_cycle(source), rule, start, end)
            touching = [
                demo_window(f)
                for f in faults
                if expr in {_unlabelled(s) for s in (*f.symptom_series, f.root_cause_series)}
            ]
            mine.append(tally(expr, found, windows, end - start, affecting=touching))
        tallies += [(_alarms(rate_control), t) for t in mine]
        tallies.append((_alarms(rate_control), total("all rules", mine)))
    print_table(
        f"False incidents (demo estate, {DAYS} days replayed, {len(faults)} faults; a fault's "
        "window: onset - 2 min to its symptoms' end + 10 min)",
        TALLY_HEADER,
        _tally_rows(tallies),
    )


def sim_cases() -> list[IncidentCase]:
    cases = []
    for k, (fault, seed) in enumerate((f, s) for f in SIM_FAULTS for s in SIM_SEEDS):
        onset = SIM_EPOCH_S + k * SIM_SPACING_S + SIM_HISTORY_S
        cases.append(simulate(fault, seed, onset, history_s=SIM_HISTORY_S, after_s=SIM_AFTER_S))
    return cases


def _selector(case: IncidentCase) -> str:
    labels = case.find(case.symptom_series).labels
    matchers = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{labels['__name__']}{{{matchers}}}"


def _replay_case(source: SeriesSource, case: IncidentCase, rate_control: bool) -> RuleTally:
    rule = watch_rule("frontend-latency", _selector(case), rate_control=rate_control)
    end = case.start_s + SIM_AFTER_S
    start = end - SIM_HISTORY_S - SIM_AFTER_S
    found = replay_incidents(_cycle(source), rule, start, end)
    window = FaultWindow(case.start_s, math.inf)  # the fault lasts past the data's end
    return tally(f"{case.fault} seed {case.seed}", found, [window], end - start)


def sim_false_incidents() -> None:
    cases = sim_cases()
    tallies: list[tuple[str, RuleTally]] = []
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        server = start_backfilled(merge_cases(cases), Path(tmp), timeout_s=180)
        source = PrometheusClient(base_url=server.url)
        try:
            for rate_control in (True, False):
                mine = [_replay_case(source, case, rate_control) for case in cases]
                tallies += [(_alarms(rate_control), t) for t in mine]
                tallies.append((_alarms(rate_control), total("all cases", mine)))
        finally:
            source.close()
            server.stop()
    print_table(
        "False incidents (incident simulator, frontend-0 p99 rule, 12 h replay with one fault "
        "from 1 h before its end; only those 12 h of data)",
        TALLY_HEADER,
        _tally_rows(tallies),
    )
