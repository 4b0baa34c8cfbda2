"""Forecast caches: each block's forecast, keyed by a digest of everything it reads.

Detectors are causal with bounded memory, so a block whose inputs did not change
keeps its forecast: a refresh (or an ensemble member, which gets no prior expected
values) recomputes only new blocks. The caches are handed to detectors (the
registry passes them on); a process without its own uses ``shared_caches()``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from plugin_backend.types import FloatArray

if TYPE_CHECKING:
    from plugin_backend.scoring.hw_recursion import LaneState

__all__ = ["LRU", "ForecastCaches", "clear_caches", "shared_caches"]

_V = TypeVar("_V")


class LRU(Generic[_V]):
    """A small thread-safe LRU."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[bytes, _V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> _V | None:
        with self._lock:
            state = self._items.get(key)
            if state is not None:
                self._items.move_to_end(key)
            return state

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def put(self, key: bytes, value: _V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)


@dataclass(frozen=True, eq=False)
class ForecastCaches:
    """The block caches every detector of one scoring context shares."""

    #: Holt-Winters lanes' state after each pass's latest warm-up (~0.5 MB each at 15 s).
    hw_warm_states: LRU[LaneState] = field(default_factory=lambda: LRU(64))
    #: Holt-Winters' chosen forecast of each block (a block's cells, ~6 kB at 15 s).
    hw_blocks: LRU[FloatArray] = field(default_factory=lambda: LRU(2048))
    #: STL's forecast of each block before the phase correction (~6 kB at 15 s).
    stl_blocks: LRU[FloatArray] = field(default_factory=lambda: LRU(4096))
    #: The transformer's quantile forecast of each block (``H x Q`` floats, ~0.5 kB),
    #: keyed by the model and the block's inputs: 65,536 blocks are ~3 days at 15 s
    #: for 8 series (~50 MB).
    transformer_blocks: LRU[FloatArray] = field(default_factory=lambda: LRU(65_536))

    def clear(self) -> None:
        """Forget everything (a cold start)."""
        self.hw_warm_states.clear()
        self.hw_blocks.clear()
        self.stl_blocks.clear()
        self.transformer_blocks.clear()


_SHARED = ForecastCaches()


def shared_caches() -> ForecastCaches:
    """The caches of detectors built without their own (the CLI, tests, benchmarks)."""
    return _SHARED


def clear_caches() -> None:
    """Forget the shared caches' forecasts (a cold start)."""
    _SHARED.clear()
