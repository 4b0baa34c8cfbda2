import numpy as np
import pytest

from plugin_backend.scoring.caches import clear_caches
from plugin_backend.scoring.incremental import ScoreCache
from plugin_backend.scoring.registry import get_detector

STEP = 60.0


def _series(n, seed=1):
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000 + STEP * np.arange(n)
    return ts, 10 + np.sin(np.arange(n) / 30) + rng.normal(0, 0.2, n)


@pytest.mark.parametrize("name", ["robust_z", "stl", "holt_winters", "ensemble"])
def test_a_refresh_scores_only_new_points_and_matches_a_full_rescore(name):
    ts, vs = _series(3000)
    cache = ScoreCache()
    detector = get_detector(name)
    cache.score("k", detector, ts[:2600], vs[:2600], STEP)
    # The panel slides forward: it starts later and has 400 new points.
    refreshed = cache.score("k", detector, ts[200:], vs[200:], STEP)
    assert cache.hits == 1
    full = detector.score(ts, vs)
    # The ensemble's transformer runs in float32, whose sums vary with batch size.
    rtol = 1e-5 if name == "ensemble" else 1e-7
    for field in ("expected", "lower", "upper", "score"):
        np.testing.assert_allclose(
            getattr(refreshed, field), getattr(full, field)[200:], rtol=rtol, equal_nan=True
        )
    if name == "ensemble":  # the alarm layer fits each member's own scores
        assert refreshed.member_scores is not None
        assert full.member_scores is not None
        np.testing.assert_allclose(
            refreshed.member_scores, full.member_scores[:, 200:], rtol=rtol, equal_nan=True
        )
        assert refreshed.member_expected is not None
        assert full.member_expected is not None
        np.testing.assert_allclose(
            refreshed.member_expected, full.member_expected[:, 200:], rtol=rtol, equal_nan=True
        )


@pytest.mark.parametrize("members", [("stl",), ("holt_winters",), ("stl", "robust_z")])
def test_a_refresh_of_a_long_history_skips_blocks_before_the_context_and_still_matches(
    members, monkeypatch
):
    # Hourly points for ~14 months: the context (with the sustained view's window)
    # is a small part of the series, so the refresh rescores only its tail and leaves
    # the blocks before it alone.
    step = 3600.0
    rng = np.random.default_rng(4)
    n = 10_000
    ts = 1_700_000_000 + step * np.arange(n)
    vs = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)
    cache = ScoreCache()
    # An ensemble hands each member its own earlier expected values back.
    detector = get_detector("ensemble", members=members)
    assert detector.context_points(step) < n // 2
    cache.score("k", detector, ts[: n - 100], vs[: n - 100], step)
    fits = _count_stl_fits(monkeypatch)
    refreshed = cache.score("k", detector, ts[50:], vs[50:], step)
    refresh_fits = fits[0]
    clear_caches()  # the full rescore below starts cold
    full = detector.score(ts, vs)
    if "stl" in members:  # the refresh fits the new blocks, not the whole series'
        assert 0 < refresh_fits < (fits[0] - refresh_fits) / 10
    assert np.isfinite(refreshed.score[-100:]).all()
    for field in ("expected", "lower", "upper", "score"):
        np.testing.assert_allclose(
            getattr(refreshed, field), getattr(full, field)[50:], rtol=1e-7, equal_nan=True
        )


def _count_stl_fits(monkeypatch):
    from plugin_backend.scoring import stl

    calls = [0]
    decompose = stl.decompose

    def counted(*args, **kwargs):
        calls[0] += 1
        return decompose(*args, **kwargs)

    monkeypatch.setattr(stl, "decompose", counted)
    return calls


def test_changed_values_are_rescored_from_the_first_difference():
    ts, vs = _series(1000)
    cache = ScoreCache()
    detector = get_detector("robust_z")
    cache.score("k", detector, ts, vs, STEP)
    changed = vs.copy()
    changed[900] += 50  # a late sample rewrote history
    rescored = cache.score("k", detector, ts, changed, STEP)
    assert rescored.score[900] > 3
    np.testing.assert_allclose(rescored.score, detector.score(ts, changed).score, equal_nan=True)


def test_the_cache_is_bounded():
    ts, vs = _series(200)
    cache = ScoreCache(max_entries=2)
    detector = get_detector("robust_z")
    for key in "abc":
        cache.score(key, detector, ts, vs, STEP)
    assert len(cache) == 2


def test_a_transformer_refresh_only_forecasts_the_new_blocks():
    detector = get_detector("transformer")
    ts, vs = _series(4000)
    cache = ScoreCache()
    cache.score("k", detector, ts[:3990], vs[:3990], STEP)
    refreshed = cache.score("k", detector, ts, vs, STEP)
    assert cache.hits == 1
    assert len(refreshed) == 4000
    assert np.all(np.isfinite(refreshed.expected[-10:]))
    assert np.all(refreshed.lower[-10:] <= refreshed.expected[-10:])
    # Blocks sit on the absolute time grid, so the refresh equals a full rescore.
    full = detector.score(ts, vs)
    for field in ("expected", "lower", "upper", "score"):
        np.testing.assert_allclose(
            getattr(refreshed, field)[-10:], getattr(full, field)[-10:], rtol=1e-5
        )


def test_warm_up_loads_detectors_and_survives_unknown_ones(caplog):
    import logging

    from plugin_backend.scoring.warmup import warm_up

    with caplog.at_level(logging.INFO):
        warm_up(["robust_z", "no_such_detector"])
    assert "robust_z ready" in caplog.text
    assert "no_such_detector could not be warmed up" in caplog.text


def test_warm_up_runs_the_seasonal_fits_so_the_first_panel_does_not_import_them():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from plugin_backend.scoring.warmup import warm_up\n"
        "assert 'statsmodels.tsa.seasonal' not in sys.modules\n"
        "warm_up(['stl'])\n"
        "print('statsmodels.tsa.seasonal' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "True"


def test_the_cache_says_from_when_it_recomputed_rows_since_it_was_last_asked():
    """What a shared cache rewrites (``scale.state``): all after a cold score, the
    rows from the first new point after a refresh, none when nothing changed or the
    entry was just restored; a point whose value changed counts as new."""
    ts, vs = _series(1200)
    cache = ScoreCache()
    detector = get_detector("robust_z")
    cache.score("k", detector, ts[:1000], vs[:1000], STEP)
    assert cache.take_changed_from("k") == -np.inf
    assert cache.take_changed_from("k") == np.inf  # asked: nothing since
    cache.score("k", detector, ts[50:1100], vs[50:1100], STEP)
    cache.score("k", detector, ts[60:1100], vs[60:1100], STEP)  # nothing new
    assert cache.take_changed_from("k") == ts[1000]
    late = vs[70:1100].copy()
    late[900] += 5.0  # a late sample rewrote a point
    cache.score("k", detector, ts[70:1100], late, STEP)
    assert cache.take_changed_from("k") == ts[970]
    exported = cache.export("k")
    assert exported is not None
    cache.restore("k", *exported)
    assert cache.take_changed_from("k") == np.inf
