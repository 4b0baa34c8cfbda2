"""Scoring speed for live panels, excluding the Prometheus fetch.

For each detector and panel shape: the first view (model loaded and libraries
imported, as after the server's warm-up; nothing cached: the panel range plus
the detector's history is fetched, and the range and the alarm threshold's
window before it are scored, as ``DetectionService`` does) and a refresh
(the same panel a minute later: the cache rescores only the new points).
Then the alarm policy alone (``scoring.windows.find_windows``) on 100,000 scores,
with the rate-controlled threshold and at the band's edge, and the resident memory
of a process that serves with the model loaded.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from benchmarks.common import print_table
from plugin_backend.detection import alarm_lookback_points
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.scoring.caches import clear_caches
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.scoring.registry import get_detector
from plugin_backend.scoring.warmup import warm_up
from plugin_backend.scoring.windows import WindowPolicy, find_windows, pager_policy

PANELS = {"24 h at 15 s": (86_400, 15.0), "7 d at 1 min": (7 * 86_400, 60.0)}
DETECTORS = ("robust_z", "stl", "holt_winters", "transformer", "ensemble")
REFRESHES = 20
HISTORY_CAP = 50_000  # PLUGIN_BACKEND_MAX_POINTS_PER_SERIES default


def _series(n: int, step_s: float, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1_767_225_600 - step_s * n + step_s * np.arange(n)
    daily = 100 + 40 * np.sin(2 * np.pi * ts / 86_400) + 10 * np.sin(4 * np.pi * ts / 86_400)
    return ts, daily + rng.normal(0, 3, n)


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _measure(name: str, span_s: int, step_s: float) -> tuple[float, float, int, int]:
    detector = get_detector(name)
    panel = int(span_s / step_s) + 1
    history = min(detector.context_points(step_s), HISTORY_CAP - panel)
    ts, vs = _series(panel + history + REFRESHES * 4, step_s)
    first_n = panel + history
    # Scores are needed from the alarm threshold's window before the panel on.
    needed_from = max(history - alarm_lookback_points(pager_policy(), step_s), 0)
    cache = ScoreCache()
    clear_caches()  # nothing cached: not even the blocks an earlier detector's run left
    started = time.perf_counter()
    cache.score("k", detector, ts[:first_n], vs[:first_n], step_s, needed_from=needed_from)
    first_s = time.perf_counter() - started
    refresh = []
    for i in range(1, REFRESHES + 1):  # each refresh: 4 new points (a minute at 15 s)
        lo, hi = 4 * i, first_n + 4 * i
        started = time.perf_counter()
        # The panel moved on by 4 points, and so did the start of the scores it needs:
        # asking for scores from the first point would rescore everything.
        cache.score("k", detector, ts[lo:hi], vs[lo:hi], step_s, needed_from=needed_from)
        refresh.append(time.perf_counter() - started)
    return first_s, statistics.median(refresh), first_n, first_n - needed_from


def _policy_ms(policy: WindowPolicy, n: int = 100_000, repeats: int = 5) -> float:
    """Best of ``repeats`` runs of the alarm policy over ``n`` scores with many short runs."""
    rng = np.random.default_rng(12)
    score = rng.gamma(1.0, 0.4, n)  # ~8% of points above 1
    ts = 15.0 * np.arange(n, dtype=np.float64)
    values = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0) * score
    zeros = np.zeros(n)
    scored = ScoredSeries(ts, values, zeros, zeros - 1.0, zeros + 1.0, score)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        find_windows(scored, policy)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    rss_before = _rss_mib()
    get_detector("transformer").score(*_series(2_000, 60.0))  # load torch + weights
    rss_model = _rss_mib()
    # Imports (statsmodels: ~0.5 s) are paid at start-up, as the server's warm-up does.
    warm_up(DETECTORS)
    rows = []
    for panel, (span_s, step_s) in PANELS.items():
        for name in DETECTORS:
            first_s, refresh_s, fetched, scored = _measure(name, span_s, step_s)
            rows.append(
                [
                    panel,
                    name,
                    f"{fetched:,}",
                    f"{scored:,}",
                    f"{first_s * 1000:.0f}",
                    f"{refresh_s * 1000:.1f}",
                ]
            )
    print_table(
        "Scoring speed (2-core CPU, no Prometheus fetch): first view scores the panel and the "
        f"alarm window before it, with history as context; refresh = p50 of {REFRESHES} "
        "refreshes with 4 new points each",
        ["panel", "detector", "points fetched", "points scored", "first view ms", "refresh ms"],
        rows,
    )
    print_table(
        "Alarm policy alone on 100,000 scores at 15 s (best of 5, cold: no block fits kept)",
        ["policy", "ms"],
        [
            ["rate-controlled threshold (default)", f"{_policy_ms(WindowPolicy()):.0f}"],
            ["band's edge (rate_control: false)", f"{_policy_ms(WindowPolicy(rate=None)):.0f}"],
        ],
    )
    print_table(
        "Memory of one process",
        ["state", "RSS MiB"],
        [
            ["imports (numpy, plugin_backend.scoring)", f"{rss_before:.0f}"],
            ["transformer loaded and used", f"{rss_model:.0f}"],
            ["after the runs above", f"{_rss_mib():.0f}"],
        ],
    )
