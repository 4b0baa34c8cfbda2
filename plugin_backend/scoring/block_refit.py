"""The block-refit loop STL and Holt-Winters share.

The series is cut into blocks on the absolute time grid
(:mod:`plugin_backend.scoring.grid_cells`); each block is forecast from the history
before it only, so a block's forecast never changes once its points are in, and a
cache can rescore a tail. The subclass forecasts the blocks; this class decides
which blocks are needed, takes known ones from ``prior_expected``, and builds the
band from the forecast's own past residuals
(:func:`~plugin_backend.scoring.residual_band.residual_band`).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from plugin_backend.scoring.base import Band, Detector
from plugin_backend.scoring.grid_cells import Season, grid, group_bounds, known_blocks, season_of
from plugin_backend.scoring.residual_band import residual_band, scale_reach
from plugin_backend.scoring.robust import IntArray
from plugin_backend.types import FloatArray

__all__ = ["BlockRefitDetector", "BlockSpan"]


@dataclass(frozen=True, slots=True)
class BlockSpan:
    """One block to forecast: it starts at cell ``start``; its points are ``[lo, hi)``."""

    start: int
    lo: int
    hi: int


class BlockRefitDetector(Detector):
    """Template: ``_forecast_blocks`` forecasts the needed blocks, the rest is shared."""

    #: Trailing residuals behind the band width.
    scale_window: int

    @abstractmethod
    def _block_cells(self, season: Season | None) -> int:
        """Cells per block (per refit)."""

    @abstractmethod
    def _forecast_blocks(
        self,
        cells: IntArray,
        values: FloatArray,
        season: Season | None,
        block: int,
        spans: list[BlockSpan],
    ) -> list[FloatArray]:
        """Each span's forecast of its points ``cells[lo:hi]`` (NaN where none), from
        the points before its block only."""

    def _expected_reach(self, season: Season | None) -> int:
        """How far back the band of one point reads expected values, in points."""
        return scale_reach(self.scale_window, season)

    def _reuses_expected(self, season: Season | None) -> bool:
        """Whether finite ``prior_expected`` values are this detector's forecasts (False
        where the shown expected values are adjusted after forecasting)."""
        return True

    def _adjust_expected(
        self, cells: IntArray, values: FloatArray, expected: FloatArray, season: Season | None
    ) -> FloatArray:
        """The expected values shown and banded, from the blocks' forecasts."""
        return expected

    def _band(
        self,
        timestamps_s: FloatArray,
        values: FloatArray,
        *,
        needed_from: int = 0,
        prior_expected: FloatArray | None = None,
    ) -> Band:
        step, cells = grid(timestamps_s)
        season = season_of(step)
        block = self._block_cells(season)
        expected = np.full(values.shape[0], np.nan)
        known = known_blocks(
            cells, block, prior_expected if self._reuses_expected(season) else None
        )
        # Rows before needed_from may stay NaN; the band of the rows from there looks
        # back _expected_reach points, so blocks ending before that are not needed.
        first_cell = (
            cells[needed_from] - self._expected_reach(season)
            if 0 < needed_from < cells.size
            else None
        )
        spans: list[BlockSpan] = []
        for lo, hi in group_bounds(cells // block):
            start = int(cells[lo] // block) * block
            if first_cell is not None and start + block <= first_cell:
                continue
            if start in known:
                assert prior_expected is not None
                expected[lo:hi] = prior_expected[lo:hi]
            else:
                spans.append(BlockSpan(start, lo, hi))
        for span, forecast in zip(
            spans, self._forecast_blocks(cells, values, season, block, spans), strict=True
        ):
            expected[span.lo : span.hi] = forecast
        expected = self._adjust_expected(cells, values, expected, season)
        return residual_band(
            values,
            expected,
            self.scale_window,
            cells=cells,
            period=season.period if season is not None else 0,
            needed_from=needed_from,
        )
