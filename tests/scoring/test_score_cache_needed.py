"""The score cache scores only what a caller needs, and panels asking for the same
series at once share one scoring."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.scoring.registry import get_detector

STEP = 60.0


def _series(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000 + STEP * np.arange(n)
    return ts, 10 + np.sin(np.arange(n) / 30) + rng.normal(0, 0.2, n)


@pytest.mark.parametrize("name", ["robust_z", "stl"])
def test_scores_from_needed_from_on_are_those_of_a_full_scoring(name):
    ts, vs = _series(4000)
    detector = get_detector(name)
    full = detector.score(ts, vs)
    cache = ScoreCache()
    part = cache.score("k", detector, ts, vs, STEP, needed_from=3000)
    for field in ("expected", "lower", "upper", "score"):
        np.testing.assert_array_equal(getattr(part, field)[3000:], getattr(full, field)[3000:])
    # A refresh that needs no earlier scores reuses the entry ...
    cache.score("k", detector, ts[100:], vs[100:], STEP, needed_from=2900)
    assert (cache.hits, cache.misses) == (1, 1)
    # ... one that needs earlier scores than it holds scores them.
    earlier = cache.score("k", detector, ts, vs, STEP, needed_from=2000)
    assert (cache.hits, cache.misses) == (1, 2)
    np.testing.assert_array_equal(earlier.score[2000:], full.score[2000:])


def test_requests_for_the_same_series_at_once_score_it_once():
    ts, vs = _series(3000)
    detector = get_detector("robust_z")
    scorings = 0
    original = detector.score

    def slow_score(*args, **kwargs):
        nonlocal scorings
        scorings += 1
        time.sleep(0.2)  # long enough for every thread to ask meanwhile
        return original(*args, **kwargs)

    detector.score = slow_score  # type: ignore[method-assign]
    cache = ScoreCache()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.score("k", detector, ts, vs, STEP)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert scorings == 1
    assert (cache.hits, cache.misses) == (3, 1)
    assert all(np.array_equal(r.score, results[0].score, equal_nan=True) for r in results)
