"""Load detectors ahead of the first request (imports, model weights)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from plugin_backend.errors import BackendError
from plugin_backend.scoring.registry import get_detector

__all__ = ["warm_up"]

log = logging.getLogger(__name__)


def warm_up(names: Sequence[str]) -> None:
    """Score a small synthetic series with each detector; failures are logged, never
    raised (a detector that cannot load reports its error when a panel asks for it)."""
    # Three days at 5 min: long enough for the seasonal paths (STL imports statsmodels'
    # decomposition on its first daily fit, ~0.5 s a panel would otherwise wait for).
    n = 3 * 288
    timestamps = np.asarray(1_700_000_000 + 300.0 * np.arange(n), dtype=np.float64)
    values = np.asarray(np.sin(2 * np.pi * np.arange(n) / 288), dtype=np.float64)
    for name in names:
        started = time.perf_counter()
        try:
            get_detector(name).score(timestamps, values)
        except BackendError as exc:
            log.warning("detector %s could not be warmed up: %s", name, exc.message)
            continue
        log.info("detector %s ready in %.2fs", name, time.perf_counter() - started)
