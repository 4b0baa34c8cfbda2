"""The registry and the detector factory: names and options, what the factory injects
(forecast caches, the transformer's weights), and that injected collaborators never
become options a request can set."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from plugin_backend.errors import InvalidTarget, ModelError
from plugin_backend.scoring import registry
from plugin_backend.scoring.caches import ForecastCaches, shared_caches
from plugin_backend.scoring.ensemble import EnsembleDetector
from plugin_backend.scoring.holt_winters import HoltWinters
from plugin_backend.scoring.registry import DetectorFactory, get_detector
from plugin_backend.scoring.robust_z import RobustZ
from plugin_backend.scoring.stl import SeasonalSTL

STEP = 300.0


def _daily(days: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    n = int(days * 288)
    rng = np.random.default_rng(4)
    ts = 1_700_000_000.0 + STEP * np.arange(n)
    return ts, 10 + np.sin(2 * np.pi * ts / 86_400) + rng.normal(0, 0.1, n)


def test_a_factory_hands_its_own_caches_to_every_detector_it_builds() -> None:
    factory = DetectorFactory(caches=ForecastCaches())
    ensemble = factory.create("ensemble", members=["stl", "holt_winters"])
    assert isinstance(ensemble, EnsembleDetector)
    assert all(member.caches is factory.caches for member in ensemble.members)  # type: ignore[attr-defined]
    shared_before = len(shared_caches().stl_blocks), len(shared_caches().hw_blocks)
    ts, vs = _daily()
    first = ensemble.score(ts, vs)
    assert len(factory.caches.stl_blocks) > 0
    assert len(factory.caches.hw_blocks) > 0
    assert (len(shared_caches().stl_blocks), len(shared_caches().hw_blocks)) == shared_before
    # Scores do not depend on which caches (cold or warm) served the forecasts.
    again = factory.create("ensemble", members=["stl", "holt_winters"]).score(ts, vs)
    cold = DetectorFactory().create("ensemble", members=["stl", "holt_winters"]).score(ts, vs)
    for field in ("expected", "lower", "upper", "score"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
        np.testing.assert_array_equal(getattr(first, field), getattr(cold, field))


@pytest.mark.parametrize(
    ("name", "option"),
    [("stl", "caches"), ("holt_winters", "caches"), ("ensemble", "factory")],
)
def test_injected_collaborators_are_not_options_a_request_can_set(name: str, option: str) -> None:
    with pytest.raises(InvalidTarget, match=f"unknown option '{option}'"):
        get_detector(name, **{option: ForecastCaches()})
    with pytest.raises(InvalidTarget, match=f"unknown option '{option}'"):
        DetectorFactory().create(name, **{option: ForecastCaches()})


def test_the_transformer_loads_the_weights_its_option_names_through_the_factory() -> None:
    import torch

    from plugin_backend.scoring.model import Forecaster, ForecasterConfig

    torch.manual_seed(0)
    model = Forecaster(ForecasterConfig(context=16, horizon=8, d_model=16, ff=32))
    model.eval()
    asked: list[str | None] = []

    def load(path: str | None) -> Forecaster:
        asked.append(path)
        return model

    factory = DetectorFactory(load_model=load)
    with pytest.raises(InvalidTarget, match="unknown option 'load_model'"):
        factory.create("transformer", load_model=load)
    detector = factory.create("transformer", model_path="team/weights")
    assert asked == []  # nothing loads before the first score (after gunicorn forks)
    scored = detector.score(*_daily(1.0))
    assert asked == ["team/weights"]
    assert np.isfinite(scored.score[-50:]).all()
    assert len(factory.caches.transformer_blocks) > 0


def test_registry_lists_every_detector() -> None:
    assert registry.available() == ["robust_z", "stl", "holt_winters", "transformer", "ensemble"]


def test_registry_builds_with_options() -> None:
    detector = registry.get_detector("robust_z", sensitivity=2)
    assert isinstance(detector, RobustZ)
    assert detector.sensitivity == 2.0
    stl = registry.get_detector("stl", min_deviation=0.5, weekly=False)
    assert isinstance(stl, SeasonalSTL)
    assert stl.min_deviation == 0.5
    assert not stl.weekly
    assert isinstance(registry.get_detector("holt_winters"), HoltWinters)


def test_registry_unknown_name() -> None:
    with pytest.raises(InvalidTarget, match=r"unknown detector 'x'; available: robust_z, stl"):
        registry.get_detector("x")


def test_registry_unknown_or_bad_option() -> None:
    with pytest.raises(InvalidTarget, match="'windw'"):
        registry.get_detector("robust_z", windw=10)
    with pytest.raises(InvalidTarget, match="sensitivity"):
        registry.get_detector("stl", sensitivity=0)
    with pytest.raises(InvalidTarget):
        registry.get_detector("robust_z", sensitivity="high")


def test_registry_missing_module_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._DETECTORS, "ghost", "plugin_backend.scoring.no_such_module:Ghost")
    with pytest.raises(ModelError, match="ghost"):
        registry.get_detector("ghost")
    monkeypatch.setitem(registry._DETECTORS, "nonclass", "plugin_backend.errors:InvalidTarget")
    with pytest.raises(ModelError, match="not a Detector"):
        registry.get_detector("nonclass")


def test_importing_the_registry_imports_no_detector() -> None:
    code = (
        "import sys, plugin_backend.scoring.registry as r; r.available(); "
        "bad = [m for m in ('torch', 'statsmodels', 'plugin_backend.scoring.stl', "
        "'plugin_backend.scoring.robust_z', 'plugin_backend.scoring.holt_winters') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
