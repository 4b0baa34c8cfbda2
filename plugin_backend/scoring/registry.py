"""Detector names -> classes, imported lazily by module path, and the factory that
builds detectors with the collaborators the composition root injects.

Importing this module imports no detector (so never torch): a detector's module is
imported on the first ``get_detector`` for its name.

A ``DetectorFactory`` hands every detector it builds the same forecast caches and
model loader: ``bootstrap.build_detection`` makes one per process for the service;
``get_detector`` (the CLI, tests, benchmarks) uses a default with the shared caches
and the transformer's own loading of weights.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from plugin_backend.errors import InvalidTarget, ModelError
from plugin_backend.scoring.base import Detector
from plugin_backend.scoring.caches import ForecastCaches, shared_caches

if TYPE_CHECKING:
    from plugin_backend.scoring.transformer import ModelLoader

__all__ = [
    "DEFAULT_DETECTOR",
    "DetectorFactory",
    "available",
    "detector_class",
    "get_detector",
]

#: Used when a request or config names no detector: STL and Holt-Winters, each on its
#: own rate-controlled threshold (``scoring.ensemble``), members chosen
#: leave-one-corpus-out. The transformer alone has a worst corpus 1.6 points higher
#: (better on the real corpora, worse on the artificial and synthetic ones; the file
#: bootstrap against this default is in benchmarks/RESULTS.md, ``python -m benchmarks
#: detection``).
DEFAULT_DETECTOR = "ensemble"

_DETECTORS: dict[str, str] = {
    "robust_z": "plugin_backend.scoring.robust_z:RobustZ",
    "stl": "plugin_backend.scoring.stl:SeasonalSTL",
    "holt_winters": "plugin_backend.scoring.holt_winters:HoltWinters",
    "transformer": "plugin_backend.scoring.transformer:TransformerDetector",
    "ensemble": "plugin_backend.scoring.ensemble:EnsembleDetector",
}


def available() -> list[str]:
    """Every registered detector name, whether or not its module imports here."""
    return list(_DETECTORS)


def detector_class(name: str, /) -> type[Detector]:
    """The class behind ``name``: ``InvalidTarget`` for an unknown name,
    ``ModelError`` when its module (or a library it needs) cannot be imported."""
    path = _DETECTORS.get(name)
    if path is None:
        raise InvalidTarget(f"unknown detector {name!r}; available: {', '.join(available())}")
    return _load(name, path)


@cache
def _load(name: str, path: str) -> type[Detector]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"detector {name!r} is unavailable: cannot import {module_name} ({exc})"
        ) from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise ModelError(f"detector {name!r} is unavailable: {path} is not a Detector class")
    return cls


#: Constructor arguments the factory passes in, never options a user sets.
INJECTED = frozenset({"caches", "load_model", "factory"})


def _accepted_options(cls: type[Detector]) -> set[str] | None:
    """Keyword options the constructor takes (None: it takes ``**kwargs``), less what
    is injected."""
    names: set[str] = set()
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if param.name != "self" and param.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            names.add(param.name)
    return names - INJECTED


@dataclass(frozen=True, eq=False)
class DetectorFactory:
    """Builds detectors by name with this context's forecast caches and model loader."""

    caches: ForecastCaches = field(default_factory=ForecastCaches)
    #: Loads the transformer's weights (None: the transformer loads them itself).
    load_model: ModelLoader | None = None

    def create(self, name: str, /, **options: Any) -> Detector:
        """A new detector: ``sensitivity`` and ``min_deviation`` go to ``Detector``, the
        rest are the detector's own (e.g. ``window`` for ``robust_z``). An unknown option
        or a bad value raises ``InvalidTarget`` naming it."""
        cls = detector_class(name)
        accepted = _accepted_options(cls)
        unknown = sorted(
            set(options) - accepted if accepted is not None else set(options) & INJECTED
        )
        if unknown:
            raise InvalidTarget(
                f"unknown option {unknown[0]!r} for detector {name!r}; "
                f"accepted: {', '.join(sorted(accepted or ())) or 'none'}"
            )
        try:
            return cls(**options, **self._injected(cls))
        except (TypeError, ValueError) as exc:
            raise InvalidTarget(f"bad options for detector {name!r}: {exc}") from exc

    def _injected(self, cls: type[Detector]) -> dict[str, Any]:
        """The collaborators ``cls``'s constructor asks for by name."""
        offered = {"caches": self.caches, "load_model": self.load_model, "factory": self}
        params = inspect.signature(cls.__init__).parameters
        return {name: value for name, value in offered.items() if name in params}


_DEFAULT_FACTORY = DetectorFactory(caches=shared_caches())


def get_detector(name: str, /, **options: Any) -> Detector:
    """``DetectorFactory.create`` with the shared caches and the detectors' own model
    loading (the CLI, tests, benchmarks; the service gets its factory injected)."""
    return _DEFAULT_FACTORY.create(name, **options)
