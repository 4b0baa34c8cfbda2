"""Reuse earlier scores when a panel refreshes: only new (or changed) points are
scored, with enough context before them for the detector's memory.

Detectors are causal with bounded memory (``Detector.history_points``), so a
point scored once keeps its score; a refresh of a live panel scores the few
points that arrived since. Pure: a bounded LRU of ``ScoredSeries`` in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from threading import Lock

import numpy as np

from plugin_backend.scoring.alarm_rate import FitMemo
from plugin_backend.scoring.base import Detector, ScoredSeries
from plugin_backend.types import FloatArray

__all__ = ["ScoreCache"]


class ScoreCache:
    """An LRU of scored series keyed by what determines the scores (query, detector
    and its options, step, series labels)."""

    def __init__(self, max_entries: int = 128) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, ScoredSeries] = OrderedDict()
        self._fit_memos: dict[Hashable, FitMemo] = {}
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def score(
        self,
        key: Hashable,
        detector: Detector,
        timestamps_s: FloatArray,
        values: FloatArray,
        step_s: float,
    ) -> ScoredSeries:
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
        reused = 0 if cached is None else _reusable_prefix(cached, timestamps_s, values)
        self._forget_fits(key, timestamps_s, reused)
        if cached is None or reused == 0:
            self.misses += 1
            result = detector.score(timestamps_s, values)
        else:
            self.hits += 1
            result = _extend(
                cached,
                reused,
                detector=detector,
                timestamps_s=timestamps_s,
                values=values,
                step_s=step_s,
            )
        with self._lock:
            self._entries[key] = result
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                evicted, _ = self._entries.popitem(last=False)
                self._fit_memos.pop(evicted, None)
        return result

    def _forget_fits(self, key: Hashable, timestamps_s: FloatArray, reused: int) -> None:
        """Drop block fits whose window may hold a point that is rescored now."""
        with self._lock:
            memo = self._fit_memos.get(key)
            if memo is None:
                return
            if reused == 0:
                memo.clear()
            elif reused < timestamps_s.size:
                changed_s = float(timestamps_s[reused])
                for block in [b for b in memo if b[1] > changed_s]:
                    memo.pop(block, None)

    def export(self, key: Hashable) -> tuple[ScoredSeries, FitMemo] | None:
        """The scores and block fits kept under ``key`` (``None``: none), e.g. to hand a
        series' state to another process (``scale.state``)."""
        with self._lock:
            scored = self._entries.get(key)
            if scored is None:
                return None
            return scored, dict(self._fit_memos.get(key, {}))

    def restore(self, key: Hashable, scored: ScoredSeries, memo: FitMemo) -> None:
        """Keep ``scored`` and ``memo`` under ``key``, as if scored here (``export``'s
        inverse): the next ``score`` extends them exactly as it would have its own."""
        with self._lock:
            self._entries[key] = scored
            self._entries.move_to_end(key)
            self._fit_memos[key] = dict(memo)
            while len(self._entries) > self.max_entries:
                evicted, _ = self._entries.popitem(last=False)
                self._fit_memos.pop(evicted, None)

    def fit_memo(self, key: Hashable) -> FitMemo:
        """The alarm threshold's block fits of the series under ``key`` (the alarm
        layer's state: ``scoring.alarm_rate``), kept and evicted with its scores."""
        with self._lock:
            return self._fit_memos.setdefault(key, {})


def _reusable_prefix(cached: ScoredSeries, timestamps_s: FloatArray, values: FloatArray) -> int:
    """How many leading points of the new request the cache already holds unchanged."""
    if timestamps_s.size == 0:
        return 0
    first = int(np.searchsorted(cached.timestamps_s, timestamps_s[0]))
    if first >= len(cached) or cached.timestamps_s[first] != timestamps_s[0]:
        return 0
    overlap = min(len(cached) - first, timestamps_s.size)
    old_ts = cached.timestamps_s[first : first + overlap]
    old_vs = cached.values[first : first + overlap]
    same = (old_ts == timestamps_s[:overlap]) & (
        (old_vs == values[:overlap]) | (np.isnan(old_vs) & np.isnan(values[:overlap]))
    )
    if same.all():
        return overlap
    return int(np.argmin(same))


def _extend(
    cached: ScoredSeries,
    reused: int,
    *,
    detector: Detector,
    timestamps_s: FloatArray,
    values: FloatArray,
    step_s: float,
) -> ScoredSeries:
    first = int(np.searchsorted(cached.timestamps_s, timestamps_s[0]))
    keep = slice(first, first + reused)
    if reused == timestamps_s.size:
        return _slice(cached, keep)
    context = max(detector.context_points(step_s), 4 * detector.min_points)
    # Context comes from the cache too, so a sliding window never loses history.
    ctx_start = max(0, first + reused - context)
    ctx_ts = cached.timestamps_s[ctx_start : first + reused]
    ctx_vs = cached.values[ctx_start : first + reused]
    tail = detector.score(
        np.concatenate([ctx_ts, timestamps_s[reused:]]),
        np.concatenate([ctx_vs, values[reused:]]),
        needed_from=ctx_ts.size,
        prior_expected=np.concatenate(
            [
                cached.expected[ctx_start : first + reused],
                np.full(timestamps_s.size - reused, np.nan),
            ]
        ),
    )
    new = slice(ctx_ts.size, None)
    head = _slice(cached, keep)
    return ScoredSeries(
        *(
            np.concatenate([getattr(head, f), getattr(tail, f)[new]])
            for f in ("timestamps_s", "values", "expected", "lower", "upper", "score")
        )
    )


def _slice(scored: ScoredSeries, part: slice) -> ScoredSeries:
    return ScoredSeries(
        scored.timestamps_s[part],
        scored.values[part],
        scored.expected[part],
        scored.lower[part],
        scored.upper[part],
        scored.score[part],
    )
