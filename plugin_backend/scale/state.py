"""Per-rule detector state any worker can resume: the score cache in Redis.

A rule's cycle extends the scores (and the alarm threshold's block fits) its last
cycle kept instead of rescoring three hours: about 7x cheaper, and not only faster:
a detector with state (Holt-Winters) scores a series started three hours ago a little
differently from one it has followed since. So with Celery, where a rule's ticks land
on any worker, that state lives in Redis, not in the memory of the process that ran
the last tick: a tick on worker B after worker A extends A's state, and finds exactly
what one worker would have.

``SharedScoreCache`` is the worker's ``ScoreCache`` plus Redis: ``score`` first takes
the series' state from Redis when Redis holds a newer revision than this process
(another worker ran the rule since); ``flush`` (after each tick, by the task) writes
back what the tick changed. A rule runs on one worker at a time (its lease), so a
series has one writer. Entries expire ``STATE_TTL_S`` after their last write: a rule
that stopped (or a renamed one) leaves nothing behind; a rule that comes back after
longer is scored from scratch, as after a restart. Redis unreachable: the worker goes
on with its own memory (a warning), as the one-process worker does.

Encoding (exact: the restored state is bit for bit the one written): the rows of the
scores (an ensemble's member rows too: its alarms are fitted per member), float64 with
their bytes shuffled (each value's first bytes together, then its second...: similar
values then compress well) and zlib; the block fits as JSON; the time scores were
computed from. Nothing is unpickled. A key written by an earlier version (no
``format``) is read as it was written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Hashable
from threading import Lock
from typing import Any

import numpy as np

from plugin_backend.scoring.alarm_rate import FitMemo
from plugin_backend.scoring.base import Detector, ScoredSeries
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.types import FloatArray

__all__ = ["STATE_TTL_S", "SharedScoreCache", "decode_state", "encode_state", "state_key"]

log = logging.getLogger(__name__)

STATE_TTL_S = 6 * 3600  # a series' state is kept this long after its last tick
PREFIX = "plugin_backend:state:"
_FIELDS = ("timestamps_s", "values", "expected", "lower", "upper", "score")
_FORMAT = b"2"  # shuffled bytes, member rows, valid_from


def state_key(key: Hashable) -> str:
    """The Redis key of a score cache key (query, options, step, labels): a digest of
    its repr, the same in every process."""
    return PREFIX + hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def encode_state(scored: ScoredSeries, memo: FitMemo, valid_from_s: float) -> dict[str, bytes]:
    rows = [np.asarray(getattr(scored, f), dtype=np.float64) for f in _FIELDS]
    members = [scored.member_scores, scored.member_expected]
    counts = [0 if m is None else int(m.shape[0]) for m in members]
    for m in members:
        if m is not None:
            rows += list(np.asarray(m, dtype=np.float64))
    table = np.ascontiguousarray(np.vstack(rows))
    shuffled = table.view(np.uint8).reshape(-1, 8).T.tobytes()
    fits = [[trigger, start, *fit] for (trigger, start), fit in memo.items()]
    return {
        "format": _FORMAT,
        "points": str(table.shape[1]).encode(),
        "members": json.dumps(counts).encode(),
        "valid_from": repr(float(valid_from_s)).encode(),
        "scores": zlib.compress(shuffled, 1),
        "fits": json.dumps(fits).encode(),
    }


def decode_state(fields: dict[bytes, bytes]) -> tuple[ScoredSeries, FitMemo, float | None]:
    """``encode_state``'s inverse; the last item is ``None`` for a key of the earlier
    format (the cache then trusts the scores from the first finite one)."""
    points = int(fields[b"points"])
    raw = zlib.decompress(fields[b"scores"])
    if fields.get(b"format") == _FORMAT:
        table = np.frombuffer(raw, dtype=np.uint8).reshape(8, -1).T.copy().view(np.float64)
        counts = [int(c) for c in json.loads(fields[b"members"])]
        valid_from_s: float | None = float(fields[b"valid_from"])
    else:
        table = np.frombuffer(raw, dtype=np.float64)
        counts, valid_from_s = [0, 0], None
    rows: list[FloatArray] = [row.copy() for row in table.reshape(-1, points)]
    base = len(_FIELDS)
    member_scores = np.vstack(rows[base : base + counts[0]]) if counts[0] else None
    member_expected = np.vstack(rows[base + counts[0] :]) if counts[1] else None
    memo: FitMemo = {
        (str(trigger), float(start)): (float(a), float(b), float(c), float(d))
        for trigger, start, a, b, c, d in json.loads(fields[b"fits"])
    }
    timestamps_s, values, expected, lower, upper, score = rows[:base]
    scored = ScoredSeries(
        timestamps_s,
        values,
        expected,
        lower,
        upper,
        score,
        member_scores=member_scores,
        member_expected=member_expected,
    )
    return scored, memo, valid_from_s


class SharedScoreCache(ScoreCache):
    """A ``ScoreCache`` whose entries any worker resumes through Redis (``client``: a
    ``redis.Redis``)."""

    def __init__(self, client: Any, max_entries: int = 128, ttl_s: int = STATE_TTL_S) -> None:
        super().__init__(max_entries)
        self.client = client
        self.ttl_s = ttl_s
        self._revisions: dict[Hashable, int] = {}  # key -> revision this process holds
        self._touched: set[Hashable] = set()
        self._shared_lock = Lock()
        self.resumed = 0  # entries taken over from another worker

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
        self._take_newer(key)
        result = super().score(key, detector, timestamps_s, values, step_s, needed_from=needed_from)
        with self._shared_lock:
            self._touched.add(key)
        return result

    def flush(self) -> int:
        """Write the state of every series scored since the last flush; returns how
        many were written."""
        with self._shared_lock:
            touched, self._touched = self._touched, set()
        written = 0
        for key in touched:
            exported = self.export(key)
            if exported is None:  # evicted meanwhile
                continue
            name = state_key(key)
            try:
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(name, mapping=encode_state(*exported))
                pipe.hincrby(name, "revision", 1)
                pipe.expire(name, self.ttl_s)
                revision = int(pipe.execute()[1])
            except Exception as exc:  # redis.RedisError, OSError: keep going on memory
                log.warning("detector state not shared (Redis): %s", exc)
                continue
            with self._shared_lock:
                self._revisions[key] = revision
            written += 1
        return written

    def _take_newer(self, key: Hashable) -> None:
        name = state_key(key)
        try:
            revision = self.client.hget(name, "revision")
            if revision is None:
                return
            if int(revision) == self._revisions.get(key) and self.export(key) is not None:
                return  # this process wrote the newest state and still holds it
            fields = self.client.hgetall(name)
        except Exception as exc:
            log.warning("detector state not read (Redis): %s", exc)
            return
        if not fields or b"scores" not in fields:
            return
        scored, memo, valid_from_s = decode_state(fields)
        self.restore(key, scored, memo, valid_from_s)
        with self._shared_lock:
            self._revisions[key] = int(fields[b"revision"])
            self.resumed += 1
