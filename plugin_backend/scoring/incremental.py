"""Reuse earlier scores when a panel refreshes: only new (or changed) points are
scored, with enough context before them for the detector's memory.

Detectors are causal with bounded memory (``Detector.history_points``), so a
point scored once keeps its score; a refresh of a live panel scores the few
points that arrived since. A caller may need scores only from some point on
(``needed_from``: the history before it is context): earlier scores are then left
NaN, and an entry serves later requests that need no earlier scores than it has.
Requests for the same key wait for each other, so panels asking for the same
series at once score it once. Pure: a bounded LRU of ``ScoredSeries`` in memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from threading import Lock

import numpy as np

from plugin_backend.scoring.alarm_rate import FitMemo
from plugin_backend.scoring.base import Detector, ScoredSeries
from plugin_backend.types import FloatArray

__all__ = ["ScoreCache"]


@dataclass(frozen=True, slots=True, eq=False)
class _Entry:
    scored: ScoredSeries
    valid_from_s: float  # scores before this time are NaN (not computed)


class ScoreCache:
    """An LRU of scored series keyed by what determines the scores (query, detector
    and its options, step, series labels)."""

    def __init__(self, max_entries: int = 128) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._fit_memos: dict[Hashable, FitMemo] = {}
        self._key_locks: dict[Hashable, Lock] = {}
        self._changed_from: dict[Hashable, float] = {}  # see take_changed_from
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
        *,
        needed_from: int = 0,
    ) -> ScoredSeries:
        """Scores of the series (those before ``needed_from`` may be NaN)."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, Lock())
        with key_lock:  # one scoring per key at a time: the next one reuses it
            return self._score(
                key, detector, timestamps_s, values, step_s=step_s, needed_from=needed_from
            )

    def _score(
        self,
        key: Hashable,
        detector: Detector,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        step_s: float,
        needed_from: int,
    ) -> ScoredSeries:
        needed_from = min(max(needed_from, 0), max(timestamps_s.size - 1, 0))
        needed_s = float(timestamps_s[needed_from]) if timestamps_s.size else 0.0
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
        if cached is not None and cached.valid_from_s > needed_s:
            cached = None  # it lacks scores this request needs
        reused = 0 if cached is None else _reusable_prefix(cached.scored, timestamps_s, values)
        self._forget_fits(key, timestamps_s, reused)
        if cached is None or reused == 0:
            self.misses += 1
            result = detector.score(timestamps_s, values, needed_from=needed_from)
            entry = _Entry(result, needed_s)
            changed_s = -math.inf
        else:
            self.hits += 1
            result = _extend(
                cached.scored,
                reused,
                detector=detector,
                timestamps_s=timestamps_s,
                values=values,
                step_s=step_s,
            )
            entry = _Entry(result, cached.valid_from_s)
            changed_s = float(timestamps_s[reused]) if reused < timestamps_s.size else math.inf
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._changed_from[key] = min(self._changed_from.get(key, math.inf), changed_s)
            while len(self._entries) > self.max_entries:
                evicted, _ = self._entries.popitem(last=False)
                self._fit_memos.pop(evicted, None)
                self._key_locks.pop(evicted, None)
                self._changed_from.pop(evicted, None)
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

    def export(self, key: Hashable) -> tuple[ScoredSeries, FitMemo, float] | None:
        """The scores, block fits and the time scores were computed from (earlier ones
        are NaN) kept under ``key`` (``None``: none), e.g. to hand a series' state to
        another process (``scale.state``)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            return entry.scored, dict(self._fit_memos.get(key, {})), entry.valid_from_s

    def take_changed_from(self, key: Hashable) -> float:
        """The earliest time whose rows under ``key`` were (re)computed since the last
        call or ``restore`` (``-inf``: all of them, ``inf``: none); rows before it are
        the very ones held then (the entry may have dropped leading points since)."""
        with self._lock:
            return self._changed_from.pop(key, math.inf)

    def restore(
        self,
        key: Hashable,
        scored: ScoredSeries,
        memo: FitMemo,
        valid_from_s: float | None = None,
    ) -> None:
        """Keep ``scored`` and ``memo`` under ``key``, as if scored here (``export``'s
        inverse): the next ``score`` extends them exactly as it would have its own."""
        if valid_from_s is None:
            # Scores before a request's ``needed_from`` are NaN: trust them from the first
            # finite one only (a request that needs earlier points rescores).
            finite = np.flatnonzero(np.isfinite(scored.score))
            valid_from_s = float(scored.timestamps_s[finite[0]]) if finite.size else math.inf
        with self._lock:
            self._entries[key] = _Entry(scored, valid_from_s)
            self._entries.move_to_end(key)
            self._fit_memos[key] = dict(memo)
            self._changed_from.pop(key, None)
            while len(self._entries) > self.max_entries:
                evicted, _ = self._entries.popitem(last=False)
                self._fit_memos.pop(evicted, None)
                self._changed_from.pop(evicted, None)

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
    # An ensemble's members get their own expected values back (one row each).
    known = cached.expected if cached.member_expected is None else cached.member_expected
    prior = known[..., ctx_start : first + reused]
    tail = detector.score(
        np.concatenate([ctx_ts, timestamps_s[reused:]]),
        np.concatenate([ctx_vs, values[reused:]]),
        needed_from=ctx_ts.size,
        prior_expected=np.concatenate(
            [prior, np.full((*prior.shape[:-1], timestamps_s.size - reused), np.nan)], axis=-1
        ),
    )
    new = slice(ctx_ts.size, None)
    head = _slice(cached, keep)

    def joined(field: str) -> FloatArray:
        return np.concatenate([getattr(head, field), getattr(tail, field)[new]])

    return ScoredSeries(
        joined("timestamps_s"),
        joined("values"),
        joined("expected"),
        joined("lower"),
        joined("upper"),
        joined("score"),
        member_scores=_joined_rows(head.member_scores, tail.member_scores, new),
        member_expected=_joined_rows(head.member_expected, tail.member_expected, new),
    )


def _joined_rows(head: FloatArray | None, tail: FloatArray | None, new: slice) -> FloatArray | None:
    if head is None or tail is None:
        return None
    return np.concatenate([head, tail[:, new]], axis=1)


def _slice(scored: ScoredSeries, part: slice) -> ScoredSeries:
    return ScoredSeries(
        scored.timestamps_s[part],
        scored.values[part],
        scored.expected[part],
        scored.lower[part],
        scored.upper[part],
        scored.score[part],
        member_scores=None if scored.member_scores is None else scored.member_scores[:, part],
        member_expected=(
            None if scored.member_expected is None else scored.member_expected[:, part]
        ),
    )
