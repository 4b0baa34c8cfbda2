"""The PetShop dataset's training issues as RCA benchmark cases.

PetShop (Amazon Science, CC-BY-4.0; Hardt et al., CLeaR 2024) is a real pet-adoption
application on AWS with injected performance issues and CloudWatch / X-Ray metrics at
5-minute steps. Its training split lives in ``../shared/datasets/petshop-train`` (see
its README); this module reads it when present and never otherwise.

Parsing (pure, :func:`parse_metrics_csv`, :func:`parse_graph_csv`,
:func:`parse_target`) is kept apart from the layout on disk (:func:`load_dataset`)
and from the making of cases (:func:`build_source`).

How an issue becomes a case
    * Every (component, metric, statistic) column becomes one Prometheus series
      named ``petshop_<metric>`` with labels ``service`` (the component: one of the
      project's default identifying labels, so no ranker needs a PetShop setting) and
      ``statistic``: ``petshop_latency_seconds``, ``petshop_requests`` (requests per
      5-minute period, a gauge) and ``petshop_availability_percent``. Empty cells are
      missing samples, as in CloudWatch: they are not written. (Prometheus 2's
      5-minute lookback may show one missing step as the sample before it.)
    * An issue file holds only 5 rows (20 minutes). Its scenario's normal-operation
      period (49 h, recorded weeks later) is moved by whole days (so the time of day
      is kept) to end just before the issue's first row; what would overlap the issue
      is cut. That leaves 25-49 h of history. ``temporal_traffic*`` have no normal
      period and no graph: both are borrowed from ``high_traffic`` (same
      deployment), so their history has high-traffic levels.
    * The target's (node, metric, agg) is the symptom and ``root_cause.node`` the
      true entity. ``root_cause.metric`` is null: there is no exact root series.
    * The incident time is the issue's last row. ``target.timestamp`` lies 5-10 min
      after the first row, before the rows where the issue shows (the rows are
      stamped at the start of their 5-minute period), so ranking at it would show a
      ranker almost nothing; it is kept as :attr:`PetshopIssue.target_s` and
      ``at="target"`` ranks there instead.
    * The call graph (row calls column) becomes ``services: {caller: {depends_on:
      [callees]}}``.
    * Each case moves, by whole days again, into its own 4-day slot of one shared
      timeline, so one backfill holds all 20 issues with their histories.

All 20 training issues share one root cause (``PetSearch_AWS::ECS::Fargate``): good
for measuring how a method copes with real, sparse data; nothing may learn the node.
Fault types are named after the symptom: ``delay`` (latency target, the search
service was slowed) and ``errors`` (availability target, it returned errors).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.rca_case import RcaCase, RcaSource
from plugin_backend.types import format_series_name
from testkit.promserver import FloatArray, SyntheticSeries

__all__ = [
    "DATASET_DIR",
    "FAULTS",
    "MetricsTable",
    "PetshopIssue",
    "build_source",
    "dataset_available",
    "dependency_map",
    "load_dataset",
    "parse_graph_csv",
    "parse_metrics_csv",
    "parse_target",
    "series_labels",
]

DATASET_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "petshop-train"
STEP_S = 300
DAY_S = 86_400
SLOT_S = 4 * DAY_S  # one case (up to 49 h of history + the issue) per slot
EPOCH_S = 1_772_323_200  # 2026-03-01T00:00:00Z
LOOKBACK_S = DAY_S  # what the benchmark fetches before each incident
SCENARIOS = ("high_traffic", "low_traffic", "temporal_traffic1", "temporal_traffic2")
BORROWED_FROM = "high_traffic"  # normal period and graph for scenarios without their own
METRIC_NAMES = {
    "latency": "petshop_latency_seconds",
    "requests": "petshop_requests",
    "availability": "petshop_availability_percent",
}
FAULTS: tuple[str, ...] = ("delay", "errors")
_FAULT_OF_METRIC = {"latency": "delay", "availability": "errors"}
_HEADER_ROWS = ("microservice", "metric", "statistic", "unix_timestamp")

Column = tuple[str, str, str]  # (node, metric, statistic)


# ----------------------------------------------------------------------- parsing


@dataclass(frozen=True, eq=False)
class MetricsTable:
    """One ``metrics.csv``: ``values[t, c]`` of ``columns[c]`` at ``timestamps_s[t]``.

    NaN marks a missing sample.
    """

    timestamps_s: FloatArray
    columns: tuple[Column, ...]
    values: FloatArray

    def shifted(self, by_s: float) -> MetricsTable:
        return MetricsTable(self.timestamps_s + by_s, self.columns, self.values)

    def before(self, end_s: float) -> MetricsTable:
        """The rows stamped strictly before ``end_s``."""
        keep = self.timestamps_s < end_s
        return MetricsTable(self.timestamps_s[keep], self.columns, self.values[keep])


def parse_metrics_csv(text: str) -> MetricsTable:
    """Parse the four header rows (node, metric, statistic, ``unix_timestamp``) and the data.

    Raises ValueError naming the first problem (a bad header, a duplicate column,
    a non-numeric cell, timestamps not strictly ascending).
    """
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if len(rows) < len(_HEADER_ROWS):
        raise ValueError("metrics.csv: fewer than the four header rows")
    for row, want in zip(rows, _HEADER_ROWS, strict=False):
        if row[0] != want:
            raise ValueError(f"metrics.csv: header row {want!r} expected, got {row[0]!r}")
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        raise ValueError("metrics.csv: rows of different lengths")
    columns = tuple(zip(rows[0][1:], rows[1][1:], rows[2][1:], strict=True))
    if len(set(columns)) != len(columns):
        raise ValueError("metrics.csv: duplicate (node, metric, statistic) column")
    data = rows[len(_HEADER_ROWS) :]
    timestamps = np.array([_number(row[0], i, 0) for i, row in enumerate(data)], dtype=np.float64)
    if np.isnan(timestamps).any() or (timestamps.size > 1 and np.any(np.diff(timestamps) <= 0)):
        raise ValueError("metrics.csv: timestamps must be present and strictly ascending")
    values = np.array(
        [[_number(cell, i, j) for j, cell in enumerate(row[1:], 1)] for i, row in enumerate(data)],
        dtype=np.float64,
    ).reshape(len(data), len(columns))
    return MetricsTable(timestamps, columns, values)


def _number(cell: str, row: int, col: int) -> float:
    if cell.strip() == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        msg = f"metrics.csv: data row {row}, column {col}: {cell!r} is not a number"
        raise ValueError(msg) from None


def parse_graph_csv(text: str) -> dict[str, list[str]]:
    """The call graph: ``{caller: [callees]}`` from an adjacency matrix (row calls column)."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows:
        raise ValueError("graph.csv: empty")
    names = rows[0][1:]
    if len(rows) - 1 != len(names) or [row[0] for row in rows[1:]] != names:
        raise ValueError("graph.csv: rows must name the same nodes as the columns, in order")
    graph: dict[str, list[str]] = {}
    for row in rows[1:]:
        callees = [names[j] for j, cell in enumerate(row[1:]) if float(cell or 0) != 0]
        graph[row[0]] = [c for c in callees if c != row[0]]
    return graph


def dependency_map(graph: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The call graph as ``load_dependency_map`` reads it: a caller depends on its callees."""
    return {"services": {node: {"depends_on": list(callees)} for node, callees in graph.items()}}


@dataclass(frozen=True)
class Target:
    node: str
    metric: str
    statistic: str
    timestamp_s: float
    root_cause_node: str


def parse_target(text: str) -> Target:
    """``target.json``: the symptom (node, metric, agg, timestamp) and ``root_cause.node``."""
    body = json.loads(text)
    try:
        target, root = body["target"], body["root_cause"]
        return Target(
            node=str(target["node"]),
            metric=str(target["metric"]),
            statistic=str(target["agg"]),
            timestamp_s=float(target["timestamp"]),
            root_cause_node=str(root["node"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"target.json: missing {exc}") from exc


# ------------------------------------------------------------------------ on disk


@dataclass(frozen=True)
class PetshopIssue:
    scenario: str
    name: str  # "issue_3"
    target: Target
    metrics: MetricsTable

    @property
    def fault(self) -> str:
        return _FAULT_OF_METRIC.get(self.target.metric, self.target.metric)


@dataclass(frozen=True)
class PetshopData:
    issues: list[PetshopIssue]
    normal: dict[str, MetricsTable]  # scenario -> its (or the borrowed) normal period
    graph: dict[str, list[str]]  # high_traffic's call graph


def dataset_available(root: Path = DATASET_DIR) -> bool:
    return (root / "high_traffic" / "graph.csv").is_file()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load_dataset(root: Path = DATASET_DIR) -> PetshopData:
    """Every training issue of every scenario, with the normal period each one gets."""
    issues: list[PetshopIssue] = []
    normal: dict[str, MetricsTable] = {}
    borrowed = parse_metrics_csv(_read(root / BORROWED_FROM / "noissue" / "metrics.csv"))
    for scenario in SCENARIOS:
        own = root / scenario / "noissue" / "metrics.csv"
        normal[scenario] = parse_metrics_csv(_read(own)) if own.is_file() else borrowed
        issue_dirs = sorted(
            (root / scenario / "train").glob("issue_*"), key=lambda p: int(p.name.split("_")[1])
        )
        for issue_dir in issue_dirs:
            issues.append(
                PetshopIssue(
                    scenario=scenario,
                    name=issue_dir.name,
                    target=parse_target(_read(issue_dir / "target.json")),
                    metrics=parse_metrics_csv(_read(issue_dir / "metrics.csv")),
                )
            )
    graph = parse_graph_csv(_read(root / BORROWED_FROM / "graph.csv"))
    return PetshopData(issues, normal, graph)


# ------------------------------------------------------------------------- cases


def series_labels(node: str, metric: str, statistic: str) -> dict[str, str]:
    name = METRIC_NAMES.get(metric, f"petshop_{metric}")
    return {"__name__": name, "service": node, "statistic": statistic}


def _history_for(issue: PetshopIssue, normal: MetricsTable) -> MetricsTable:
    """The normal period moved to end one step before the issue's first row.

    The move is whole days plus what puts it on the issue's 5-minute grid (under
    5 minutes), so the time of day is kept.
    """
    first = float(issue.metrics.timestamps_s[0])
    gap = first - STEP_S - float(normal.timestamps_s[-1])
    grid = gap % STEP_S
    move = math.ceil((gap - grid) / DAY_S) * DAY_S + grid
    return normal.shifted(move).before(first)


def _case_columns(
    parts: Sequence[MetricsTable],
) -> dict[Column, list[tuple[FloatArray, FloatArray]]]:
    out: dict[Column, list[tuple[FloatArray, FloatArray]]] = {}
    for table in parts:
        for c, column in enumerate(table.columns):
            v = table.values[:, c]
            ok = np.isfinite(v)
            if ok.any():
                out.setdefault(column, []).append((table.timestamps_s[ok], v[ok]))
    return out


def _row_at(issue: PetshopIssue, at_s: float) -> float:
    """The stamp of the issue's last row at or before ``at_s``."""
    ts = issue.metrics.timestamps_s
    return float(ts[max(int(np.searchsorted(ts, at_s, side="right")) - 1, 0)])


def build_source(data: PetshopData, *, at: Literal["end", "target"] = "end") -> RcaSource:
    """Every issue as a case on one shared timeline, and the series to backfill."""
    cases: list[RcaCase] = []
    pieces: dict[Column, list[tuple[FloatArray, FloatArray]]] = {}
    for k, issue in enumerate(data.issues):
        history = _history_for(issue, data.normal[issue.scenario])
        slot = EPOCH_S + k * SLOT_S
        move = math.ceil((slot - float(history.timestamps_s[0])) / DAY_S) * DAY_S
        for column, parts in _case_columns(
            [history.shifted(move), issue.metrics.shifted(move)]
        ).items():
            pieces.setdefault(column, []).extend(parts)
        t = issue.target
        noticed = (
            float(issue.metrics.timestamps_s[-1]) if at == "end" else _row_at(issue, t.timestamp_s)
        )
        cases.append(
            RcaCase(
                source="petshop",
                fault=issue.fault,
                name=f"{issue.scenario}/{issue.name}",
                noticed_s=noticed + move,
                symptom_series=format_series_name(series_labels(t.node, t.metric, t.statistic)),
                root_cause_entity=t.root_cause_node,
                root_cause_series=None,
                step_s=STEP_S,
                lookback_s=LOOKBACK_S,
            )
        )
    series = [
        SyntheticSeries(
            labels=series_labels(*column),
            timestamps_s=np.concatenate([ts for ts, _ in parts]),
            values=np.concatenate([v for _, v in parts]),
        )
        for column, parts in pieces.items()
    ]
    return RcaSource(
        name="petshop",
        faults=FAULTS,
        cases=cases,
        series=series,
        dependencies=dependency_map(data.graph),
        note=f"PetShop train, {len(cases)} real issues at 5 min, ranked at "
        + ("the issue's last row" if at == "end" else "target.timestamp"),
    )
