"""Per-rule detector state in Redis: a rule's ticks alternating between two workers
(two score caches, as two processes have) find what one worker finds, bit for bit,
and each worker extends the other's state instead of rescoring. Real redis-server;
the demo estate's checkout latency through its pg_pool_exhaustion fault, scored by
Holt-Winters (a detector with state: a cold start scores it differently)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.detection import DetectionService, DetectOptions, SeriesAnomalies
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.timegrid import align_range
from plugin_backend.types import TimeRange
from tests.needs import require_installed

try:
    import redis

    from plugin_backend.scale.state import (
        BLOCK_S,
        STATE_FORMAT,
        STATE_TTL_S,
        SharedScoreCache,
        state_key,
    )
except ImportError:  # pragma: no cover - CI installs the scale extra
    redis = None  # type: ignore[assignment]

pytestmark = pytest.mark.processes

# 21:00 UTC on the replayed day, 47 min after the demo estate's pg_pool_exhaustion
# (demo_fault_start: 19:43 UTC, 30 min) ended: a tick between 20:13 and 22:43 holds the
# whole fault in its 3 h lookback, so the rule's cycle opens its incident.
AFTER_FAULT_S = 1764018000.0
EXPR = 'http_request_duration_seconds_p99{service="checkout"}'
# Band-edge alarms, as the demo's rules have: its faults recur several times a day,
# more often than the rate-controlled pager's one alarm per three days, which learns
# them as normal once its window (3.5 days at 15 s) holds them. Each tick also asks
# with rate control, so the alarm thresholds' block fits travel through Redis too.
OPTIONS = DetectOptions(detector="holt_winters", rate_control=False)
RATE_CONTROLLED = DetectOptions(detector="holt_winters")
# The server's default: room for that window before the range.
BUDGET = 50_000
TICKS = [AFTER_FAULT_S - 900 + 180 * k for k in range(14)]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    if redis is None:
        require_installed("the scale extra", "celery and redis, the scale-out engine")
    c = redis.Redis.from_url(redis_url, decode_responses=False)
    yield c
    c.close()


def _tick(
    service: DetectionService, now_s: float, options: DetectOptions = OPTIONS
) -> list[SeriesAnomalies]:
    span = align_range(TimeRange(now_s - 3 * 3600, now_s), 15.0)
    return service.detect(EXPR, span, options, floor_s=15.0)


def _alarms(found: list[SeriesAnomalies]) -> list[tuple[float, float, bool]]:
    return [(w.start_s, w.end_s, w.open) for a in found for w in a.windows]


@pytest.mark.parametrize("detector", ["holt_winters", "ensemble"])
def test_ticks_alternating_between_two_workers_find_what_one_worker_finds(
    client: redis.Redis, detector: str
) -> None:
    """Holt-Winters, and the default ensemble (STL + Holt-Winters), whose alarms are
    fitted on each member's scores and whose members reuse their own forecasts: the
    member rows travel through Redis too."""
    source = DemoSource(seed=7)
    options = DetectOptions(detector=detector, rate_control=False)
    rate_controlled = DetectOptions(detector=detector)
    one = DetectionService(source, cache=ScoreCache(), max_history_points=BUDGET)
    caches = [SharedScoreCache(client), SharedScoreCache(client)]
    workers = [DetectionService(source, cache=c, max_history_points=BUDGET) for c in caches]
    alarms_seen = 0
    for n, now in enumerate(TICKS):
        expected = _tick(one, now, options)
        # A, A, A, B, A, B, B, A, ...: the rule moves whichever way the queue sends it
        at = (n // 3 + n) % 2 if n >= 3 else 0
        # Rate control first: it needs the scores of its window before the range too.
        rate_found = _tick(workers[at], now, rate_controlled)
        found = _tick(workers[at], now, options)
        caches[at].flush()
        assert _alarms(found) == _alarms(expected), f"tick {n} on worker {at}"
        assert _alarms(rate_found) == _alarms(_tick(one, now, rate_controlled))
        for got, want in zip(found, expected, strict=True):
            assert np.array_equal(got.scored.score, want.scored.score, equal_nan=True)
            assert np.array_equal(got.scored.upper, want.scored.upper, equal_nan=True)
        # and the state the next tick extends is the same, member rows and all
        key = (EXPR, detector, 1.0, 0.0, 15.0, _labels(source))
        mine, theirs = caches[at].export(key), one.cache.export(key)
        assert mine is not None
        assert theirs is not None
        assert mine[1:] == theirs[1:]  # block fits, scored from
        for field in ("score", "expected", "member_scores", "member_expected"):
            a, b = getattr(mine[0], field), getattr(theirs[0], field)
            assert (a is None) == (b is None), (n, field)
            assert a is None or np.array_equal(a, b, equal_nan=True), (n, field)
        alarms_seen += len(_alarms(expected))
    assert alarms_seen, "the fault's window is among the ticks"
    # each worker took the other's state over, and never scored three hours from scratch
    # after the first tick
    assert caches[1].resumed >= 2
    assert caches[0].resumed >= 2
    assert caches[1].misses == 0
    assert caches[0].misses == 1


def test_the_state_expires_after_its_ttl_and_a_cold_worker_still_scores(
    client: redis.Redis,
) -> None:
    source = DemoSource(seed=7)
    cache = SharedScoreCache(client)
    _tick(DetectionService(source, cache=cache), TICKS[0])
    assert cache.flush() == 1
    (name,) = client.keys("plugin_backend:state:*")
    key = (EXPR, OPTIONS.detector, OPTIONS.sensitivity, OPTIONS.min_deviation, 15.0)
    assert name == state_key((*key, _labels(source))).encode()
    assert STATE_TTL_S - 60 < client.ttl(name) <= STATE_TTL_S
    client.flushdb()  # as after the TTL: nothing to resume, the next worker starts over
    cold = SharedScoreCache(client)
    assert _tick(DetectionService(source, cache=cold), TICKS[1])
    assert (cold.resumed, cold.misses) == (0, 1)


def _labels(source: DemoSource) -> tuple[tuple[str, str], ...]:
    span = TimeRange(TICKS[0] - 60, TICKS[0])
    (series,) = source.query_range(EXPR, span, 15.0)
    return tuple(sorted(series.labels.items()))


def test_a_worker_taking_over_under_a_short_fetch_budget_does_not_rescore(
    client: redis.Redis,
) -> None:
    """A fetch budget shorter than the alarm window: every tick's scores are needed from
    its first point, where a detector's warm-up leaves them NaN. The worker taking over
    knows from when they were computed, so it extends them as their writer would."""
    source = DemoSource(seed=7)
    budget = 4_000  # 16.7 h at 15 s, less than the threshold's window
    one = DetectionService(source, cache=ScoreCache(), max_history_points=budget)
    caches = [SharedScoreCache(client), SharedScoreCache(client)]
    workers = [DetectionService(source, cache=c, max_history_points=budget) for c in caches]
    for n, now in enumerate(TICKS[:4]):
        found = _tick(workers[n % 2], now, RATE_CONTROLLED)
        caches[n % 2].flush()
        expected = _tick(one, now, RATE_CONTROLLED)
        assert _alarms(found) == _alarms(expected)
        for got, want in zip(found, expected, strict=True):
            assert np.array_equal(got.known.score, want.known.score, equal_nan=True)
            assert np.isnan(got.known.score[0])  # the case at hand: warm-up NaN first
    assert (caches[0].misses, caches[1].misses) == (1, 0)
    assert (caches[0].resumed, caches[1].resumed) == (1, 2)


def test_a_warm_tick_rewrites_only_the_blocks_it_changed(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first flush writes every block of the state, a warm tick's flush only the
    block(s) its new points land in; blocks the state has slid past are dropped; and a
    worker taking over after such partial writes scores what one worker scores."""
    written: list[list[str]] = []
    hset = redis.client.Pipeline.hset

    def spy(self: Any, name: Any, *args: Any, mapping: Any = None, **kw: Any) -> Any:
        written.append([k for k in (mapping or {}) if k.startswith("block:")])
        return hset(self, name, *args, mapping=mapping, **kw)

    monkeypatch.setattr(redis.client.Pipeline, "hset", spy)
    source = DemoSource(seed=7)
    one = DetectionService(source, cache=ScoreCache(), max_history_points=BUDGET)
    caches = [SharedScoreCache(client), SharedScoreCache(client)]
    workers = [DetectionService(source, cache=c, max_history_points=BUDGET) for c in caches]
    key = (EXPR, "holt_winters", 1.0, 0.0, 15.0, _labels(source))
    # A: cold, a tick 3 min later, one 5 h later (its window has left a block behind)
    for now in (TICKS[0], TICKS[1], TICKS[1] + 5 * 3600):
        _tick(workers[0], now, RATE_CONTROLLED)
        caches[0].flush()
    cold, warm, later = written
    assert len(cold) >= 10  # 8.4 days of 15 s points in blocks of 4 h
    assert 1 <= len(warm) <= 2
    assert 1 <= len(later) <= 3
    exported = caches[0].export(key)
    assert exported is not None
    first, last = (int(t // BLOCK_S) for t in exported[0].timestamps_s[[0, -1]])
    stored = {k for k in client.hkeys(state_key(key)) if k.startswith(b"block:")}
    assert stored == {f"block:{b}".encode() for b in range(first, last + 1)}
    # B takes over what A wrote in parts
    now = TICKS[1] + 5 * 3600 + 180
    found = _tick(workers[1], now, RATE_CONTROLLED)
    _tick(one, TICKS[0], RATE_CONTROLLED)
    _tick(one, TICKS[1], RATE_CONTROLLED)
    _tick(one, TICKS[1] + 5 * 3600, RATE_CONTROLLED)
    expected = _tick(one, now, RATE_CONTROLLED)
    assert (caches[1].resumed, caches[1].misses) == (1, 0)
    assert _alarms(found) == _alarms(expected)
    for got, want in zip(found, expected, strict=True):
        assert np.array_equal(got.known.score, want.known.score, equal_nan=True)


def _as_written_by(client: redis.Redis, name: bytes, release: str) -> None:
    """Make the stored state look as another release wrote it: the previous one (format
    3: this layout, its length in ``points``) or a newer one (format 5), as a new
    revision."""
    client.hincrby(name, "revision", 1)
    if release == "previous":
        length = client.hget(name, "length")
        assert length is not None
        client.hdel(name, "length")
        client.hset(name, mapping={"points": length, "format": b"3"})
    else:
        client.hset(name, mapping={"format": b"5", "rows": b"\x00 a layout not known here"})


@pytest.mark.parametrize("release", ["previous", "newer"])
def test_a_state_of_another_format_is_scored_from_scratch_and_rewritten(
    client: redis.Redis, release: str, caplog: pytest.LogCaptureFixture
) -> None:
    """During a rolling upgrade a worker meets states written by another release: it
    treats them as absent (scores from scratch, as after the TTL, and finds what a cold
    worker finds), says so once, and its flush replaces them whole in its own format,
    which the next worker resumes."""
    source = DemoSource(seed=7)
    key = (EXPR, "holt_winters", 1.0, 0.0, 15.0, _labels(source))
    name = state_key(key).encode()
    writer = SharedScoreCache(client)
    _tick(DetectionService(source, cache=writer, max_history_points=BUDGET), TICKS[0])
    writer.flush()
    _as_written_by(client, name, release)

    caplog.set_level(logging.WARNING, logger="plugin_backend.scale.state")
    upgraded = SharedScoreCache(client)
    service = DetectionService(source, cache=upgraded, max_history_points=BUDGET)
    found = _tick(service, TICKS[1])
    cold = _tick(DetectionService(source, max_history_points=BUDGET), TICKS[1])
    assert _alarms(found) == _alarms(cold)
    for got, want in zip(found, cold, strict=True):
        assert np.array_equal(got.known.score, want.known.score, equal_nan=True)
    assert (upgraded.resumed, upgraded.misses, upgraded.other_format) == (0, 1, 1)

    upgraded.flush()
    stored = client.hgetall(name)
    assert stored[b"format"] == str(STATE_FORMAT).encode()
    assert b"points" not in stored  # what the previous release would decode
    assert b"rows" not in stored
    # the next worker resumes what the upgraded one wrote
    follower = SharedScoreCache(client)
    _tick(DetectionService(source, cache=follower, max_history_points=BUDGET), TICKS[2])
    assert (follower.resumed, follower.misses, follower.other_format) == (1, 0, 0)

    # met again (another worker of that release wrote it since): counted, not logged again
    _as_written_by(client, name, release)
    _tick(service, TICKS[3])  # on what it holds in memory
    assert (upgraded.resumed, upgraded.misses, upgraded.other_format) == (0, 1, 2)
    logged = [r for r in caplog.records if "format" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.WARNING
