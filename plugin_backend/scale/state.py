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
values then compress well) and zlib, in blocks of ``BLOCK_S`` on the absolute time
grid, one hash field each; the block fits as JSON; the time scores were computed from.
A flush rewrites only the blocks whose rows its ticks (re)computed (normally the last
one or two) when Redis still holds the revision this process wrote or read, else the
whole state. Nothing is unpickled.

**Format version.** The ``format`` field holds :data:`STATE_FORMAT`. Bump it whenever
the encoding, or what a detector's stored rows mean (a detector scoring differently),
changes: a worker finding a state of any other format (an older or a newer release,
during a rolling upgrade) treats it as absent and scores the series from scratch, as
after the TTL (logged once per format, counted in ``SharedScoreCache.other_format``),
and its next flush replaces it whole. Releases before format 4 decoded any key with
a ``points`` field and failed on one they did not know, so this format names its
length ``length``: they see no state in it, and rescore too.

What the next tick needs is nearly all of it: the detectors' context (Holt-Winters
49,041 points at 15 s, the ensemble's STL 141,201) exceeds the fetch, so an extension
reads every kept value; the alarm window's scores (20,000 points at 15 s) refit a
threshold every block; the points before the scored span hold only values (their
scores and bands are NaN, nearly free once compressed). So the state is not trimmed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zlib
from collections.abc import Hashable
from threading import Lock
from typing import Any

import numpy as np

from plugin_backend.scoring.alarm_rate import FitMemo
from plugin_backend.scoring.base import Detector, ScoredSeries
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.types import FloatArray

__all__ = [
    "STATE_FORMAT",
    "STATE_TTL_S",
    "SharedScoreCache",
    "decode_state",
    "encode_state",
    "state_key",
    "stored_format",
]

log = logging.getLogger(__name__)

STATE_TTL_S = 6 * 3600  # a series' state is kept this long after its last tick
PREFIX = "plugin_backend:state:"
_FIELDS = ("timestamps_s", "values", "expected", "lower", "upper", "score")
#: The version of what a state holds and how (see "Format version"). 1 (no field) to
#: 3 were the rows in one field, then in blocks.
STATE_FORMAT = 4
_FORMAT = str(STATE_FORMAT).encode()
# The rows are stored in blocks of this span on the absolute time grid (960 points at
# 15 s), each its own field: a tick rewrites only the blocks it changed (its new points
# land in the last one or two), not the whole alarm window.
BLOCK_S = 4 * 3600.0


def state_key(key: Hashable) -> str:
    """The Redis key of a score cache key (query, options, step, labels): a digest of
    its repr, the same in every process."""
    return PREFIX + hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def encode_state(
    scored: ScoredSeries, memo: FitMemo, valid_from_s: float, *, changed_from_s: float = -math.inf
) -> dict[str, bytes]:
    """The hash fields of a series' state: the header, and the blocks of rows that end
    after ``changed_from_s`` (by default all of them; the others are left as stored)."""
    members = [scored.member_scores, scored.member_expected]
    counts = [0 if m is None else int(m.shape[0]) for m in members]
    rows = [np.asarray(getattr(scored, f), dtype=np.float64) for f in _FIELDS]
    for m in members:
        if m is not None:
            rows += list(np.asarray(m, dtype=np.float64))
    table = np.vstack(rows)
    ts = scored.timestamps_s
    blocks = np.floor(ts / BLOCK_S).astype(np.int64)
    fits = [[trigger, start, *fit] for (trigger, start), fit in memo.items()]
    fields = {
        "format": _FORMAT,
        "length": str(table.shape[1]).encode(),
        "members": json.dumps(counts).encode(),
        "valid_from": repr(float(valid_from_s)).encode(),
        "first": repr(float(ts[0]) if ts.size else math.inf).encode(),
        "blocks": json.dumps([int(blocks[0]), int(blocks[-1])] if ts.size else []).encode(),
        "fits": json.dumps(fits).encode(),
    }
    edges = np.flatnonzero(np.diff(blocks)) + 1
    for lo, hi in zip([0, *edges], [*edges, ts.size], strict=True):
        block = int(blocks[lo])
        if (block + 1) * BLOCK_S > changed_from_s:
            part = np.ascontiguousarray(table[:, lo:hi])
            shuffled = part.view(np.uint8).reshape(-1, 8).T.tobytes()
            fields[_block_field(block)] = zlib.compress(shuffled, 1)
    return fields


def stored_format(fields: dict[bytes, bytes]) -> str | None:
    """The format a stored state was written in (``None``: not a state)."""
    raw = fields.get(b"format")
    if raw is None:
        return "1" if b"points" in fields else None
    return raw.decode(errors="replace")


def decode_state(fields: dict[bytes, bytes]) -> tuple[ScoredSeries, FitMemo, float]:
    """``encode_state``'s inverse (of every field stored). ``ValueError``: not a state
    of :data:`STATE_FORMAT`, or its stored blocks do not make up the state."""
    if fields.get(b"format") != _FORMAT:
        raise ValueError(f"a state of format {stored_format(fields)}, not {STATE_FORMAT}")
    try:
        points = int(fields[b"length"])
        counts = [int(c) for c in json.loads(fields[b"members"])]
        valid_from_s = float(fields[b"valid_from"])
        span = json.loads(fields[b"blocks"])
        first = float(fields[b"first"])
        fits = json.loads(fields[b"fits"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the state's header is incomplete: {exc!r}") from None
    n_rows = len(_FIELDS) + sum(counts)
    parts = [np.empty((n_rows, 0))]
    for block in range(span[0], span[-1] + 1) if span else ():
        raw = fields.get(_block_field(block).encode())
        if raw is not None:
            try:
                shuffled = zlib.decompress(raw)
            except zlib.error as exc:
                raise ValueError(f"block {block} does not decompress: {exc}") from None
            flat = np.frombuffer(shuffled, dtype=np.uint8).reshape(8, -1).T
            parts.append(flat.copy().view(np.float64).reshape(n_rows, -1))
    table = np.hstack(parts)
    # the first block may still hold points the state has dropped since
    table = table[:, np.searchsorted(table[0], first) :]
    if table.shape[1] != points:
        raise ValueError(f"{table.shape[1]} points stored in blocks, {points} expected")
    rows: list[FloatArray] = [row.copy() for row in table.reshape(-1, points)]
    base = len(_FIELDS)
    member_scores = np.vstack(rows[base : base + counts[0]]) if counts[0] else None
    member_expected = np.vstack(rows[base + counts[0] :]) if counts[1] else None
    memo: FitMemo = {
        (str(trigger), float(start)): (float(a), float(b), float(c), float(d))
        for trigger, start, a, b, c, d in fits
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


def _block_field(block: int) -> str:
    return f"block:{block}"


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
        self.other_format = 0  # states of another format found, and scored from scratch
        self._formats_logged: set[str] = set()
        self.written_bytes = 0  # field bytes sent to Redis by flushes

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
            changed_from_s = self.take_changed_from(key)
            exported = self.export(key)
            if exported is None:  # evicted meanwhile
                continue
            try:
                revision = self._write(key, exported, changed_from_s)
            except Exception as exc:  # redis.RedisError, OSError: keep going on memory
                log.warning("detector state not shared (Redis): %s", exc)
                with self._shared_lock:
                    self._revisions.pop(key, None)  # the next flush writes it whole
                continue
            with self._shared_lock:
                self._revisions[key] = revision
            written += 1
        return written

    def _write(
        self, key: Hashable, exported: tuple[ScoredSeries, FitMemo, float], changed_from_s: float
    ) -> int:
        """Write the header and the blocks changed since ``changed_from_s`` when Redis
        holds the revision this process last wrote or read (so the other blocks are
        its own), else every block; drop the blocks the state has left. Returns the
        revision written."""
        import redis

        name = state_key(key)
        with self._shared_lock:
            base = self._revisions.get(key)
        scored = exported[0]
        first = int(np.floor(scored.timestamps_s[0] / BLOCK_S)) if len(scored) else 0
        for _ in range(2):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(name)
                    revision, stored_format, span = pipe.hmget(name, "revision", "format", "blocks")
                    whole = (
                        base is None
                        or revision is None
                        or int(revision) != base
                        or stored_format != _FORMAT
                    )
                    fields = encode_state(
                        *exported, changed_from_s=-math.inf if whole else changed_from_s
                    )
                    if whole:  # replaces every field (another format's too) but the revision
                        stale = [
                            k
                            for k in pipe.hkeys(name)
                            if k != b"revision" and k.decode() not in fields
                        ]
                    else:
                        was = json.loads(span) if span else []
                        left = range(was[0], min(first, was[-1] + 1)) if was else range(0)
                        stale = [_block_field(b).encode() for b in left]
                    pipe.multi()
                    self.written_bytes += sum(len(v) for v in fields.values())
                    if stale:
                        pipe.hdel(name, *stale)
                    pipe.hset(name, mapping=fields)
                    pipe.hincrby(name, "revision", 1)
                    pipe.expire(name, self.ttl_s)
                    return int(pipe.execute()[-2])
                except redis.WatchError:  # another writer meanwhile (a lost lease)
                    base = None  # write it whole
        raise RuntimeError("the state changed under every write")

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
        found = stored_format(fields)
        if found is None:
            return
        if found != str(STATE_FORMAT):
            self._other_format(found)
            return
        try:
            scored, memo, valid_from_s = decode_state(fields)
        except ValueError as exc:  # blocks missing: scored from scratch
            log.warning("detector state not resumed: %s", exc)
            return
        self.restore(key, scored, memo, valid_from_s)
        with self._shared_lock:
            self._revisions[key] = int(fields[b"revision"])
            self.resumed += 1

    def _other_format(self, found: str) -> None:
        """A state another release wrote: absent to this one (its next flush replaces it)."""
        with self._shared_lock:
            self.other_format += 1
            first = found not in self._formats_logged
            self._formats_logged.add(found)
        if first:
            log.warning(
                "detector state in Redis of format %s, this release reads format %d: "
                "such series are scored from scratch and their state rewritten",
                found,
                STATE_FORMAT,
            )
