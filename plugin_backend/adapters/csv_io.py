"""The CLI's CSV format: read one series, write its scores back.

Input: a header with (at least) ``timestamp`` and ``value`` columns, any order,
extra columns ignored. A timestamp is ISO-8601 (``2015-09-01 11:30:00`` as NAB
writes it, ``2015-09-01T11:30:00Z``, ``...+02:00``; without a zone it is UTC) or
epoch seconds (epoch milliseconds when above 1e11). A value is a number; empty
or ``NaN`` is a missing point. Real exports are taken as they come: rows out of time
order (a clock stepped back) are scored in time order, a repeated timestamp keeps
the later row, and gaps (no row for more than 8 typical steps) are scored as they are;
each adds a warning naming the lines. Only unparsable input is refused.

Errors are :class:`~plugin_backend.errors.RequestError` naming the file and the
1-based line (the header is line 1).

Output: one row per input row, in input order (:meth:`CsvSeries.per_input_row`):
``timestamp,value,expected,lower,upper,score,is_anomaly``, timestamps as
they were read (or ISO-8601 UTC), numbers in Python's shortest round-trip form,
missing numbers empty, ``is_anomaly`` as ``1``/``0``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from plugin_backend.errors import RequestError
from plugin_backend.scoring.base import ScoredSeries
from plugin_backend.types import FloatArray

__all__ = [
    "SCORED_HEADER",
    "CsvSeries",
    "format_number",
    "load_series_csv",
    "parse_timestamp",
    "read_series_csv",
    "write_scored_csv",
]

SCORED_HEADER = ("timestamp", "value", "expected", "lower", "upper", "score", "is_anomaly")
_EPOCH_MS_ABOVE = 1e11


@dataclass(frozen=True, slots=True, eq=False)
class CsvSeries:
    """A series read from CSV, with each kept row's original timestamp text."""

    timestamps_s: FloatArray
    values: FloatArray
    warnings: list[str]
    timestamp_text: list[str]
    #: For every input data row, in input order (duplicates included): its timestamp
    #: text, its own value, the index of the kept (time-ordered) row it maps to, and
    #: whether it is that kept row.
    row_timestamp_text: list[str] = field(default_factory=list)
    row_values: FloatArray = field(default_factory=lambda: np.empty(0))
    row_index: npt.NDArray[np.intp] = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    row_kept: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=np.bool_))

    def per_input_row(
        self, scored: ScoredSeries, is_anomaly: npt.ArrayLike
    ) -> tuple[ScoredSeries, npt.NDArray[np.bool_], list[str]]:
        """Results spread back over every input row, in input order: a duplicate row
        shows its own value beside its kept twin's band and score; only the kept row
        can alarm."""
        idx = self.row_index
        flags = np.asarray(is_anomaly, dtype=np.bool_)[idx]
        kept = self.row_kept
        spread = ScoredSeries(
            scored.timestamps_s[idx],
            self.row_values,
            scored.expected[idx],
            scored.lower[idx],
            scored.upper[idx],
            scored.score[idx],
        )
        return spread, flags & kept, self.row_timestamp_text


def read_series_csv(path: str | Path) -> tuple[FloatArray, FloatArray, list[str]]:
    """``(timestamps_s, values, warnings)`` of the CSV at ``path``."""
    series = load_series_csv(path)
    return series.timestamps_s, series.values, series.warnings


def load_series_csv(path: str | Path) -> CsvSeries:
    """Like :func:`read_series_csv`, keeping the timestamp strings for writing back."""
    name = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return _parse(handle, name)
    except OSError as exc:
        raise RequestError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RequestError(f"{name}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise RequestError(f"{name}: malformed CSV: {exc}") from exc


def parse_timestamp(text: str) -> float:
    """Unix seconds of an ISO-8601 (naive = UTC) or epoch s/ms timestamp.

    Raises ``ValueError`` when ``text`` is neither.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty timestamp")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"timestamp {text!r} is not finite")
        return number / 1000.0 if abs(number) > _EPOCH_MS_ABOVE else number
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _parse(handle: TextIO, name: str) -> CsvSeries:
    reader = csv.reader(handle)
    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip().lower() for cell in row]
            break
    if header is None:
        raise RequestError(f"{name}: empty file, expected a header with timestamp and value")
    header_line = reader.line_num
    missing = [col for col in ("timestamp", "value") if col not in header]
    if missing:
        raise RequestError(
            f"{name} line {header_line}: header has no {' or '.join(missing)} column "
            f"(found {', '.join(repr(c) for c in header)})"
        )
    t_col, v_col = header.index("timestamp"), header.index("value")

    rows: list[tuple[float, str, float, int]] = []  # (stamp, text, value, line), input order
    for row in reader:
        if any(cell.strip() for cell in row):
            rows.append((*_parse_cells(row, reader.line_num, name, t_col, v_col), reader.line_num))
    return _time_ordered(rows)


#: Lines named one by one in a warning before the rest are counted.
_MAX_NAMED_LINES = 10


def _time_ordered(rows: Sequence[tuple[float, str, float, int]]) -> CsvSeries:
    """Input rows in time order, one per timestamp (the later input row wins)."""
    warnings: list[str] = []
    stepped_back = []
    latest = -math.inf
    latest_at = (0, "")
    for stamp, text, _, line in rows:
        if stamp < latest:
            stepped_back.append(
                f"line {line} ({text!r}, before line {latest_at[0]}'s {latest_at[1]!r})"
            )
        elif stamp > latest:
            latest, latest_at = stamp, (line, text)
    if stepped_back:
        warnings.append(
            f"{len(stepped_back)} row(s) out of time order (a clock step?), scored in time "
            f"order: {_named(stepped_back)}"
        )
    stamps_in = np.asarray([r[0] for r in rows], dtype=np.float64)
    order = np.argsort(stamps_in, kind="stable")  # ties keep input order
    sorted_stamps = stamps_in[order]
    # rows of equal stamp form a run; the run's last row (in input order) is kept
    new_run = np.ones(order.shape[0], dtype=np.bool_)
    new_run[1:] = sorted_stamps[1:] != sorted_stamps[:-1]
    last_of_run = np.ones(order.shape[0], dtype=np.bool_)
    last_of_run[:-1] = new_run[1:]
    kept_positions = order[last_of_run]
    row_index = np.empty(order.shape[0], dtype=np.intp)
    row_index[order] = np.cumsum(new_run) - 1
    row_kept = np.zeros(order.shape[0], dtype=np.bool_)
    row_kept[kept_positions] = True
    duplicates = [
        f"line {rows[i][3]} ({rows[i][1]!r}, also on line "
        f"{rows[int(kept_positions[row_index[i]])][3]})"
        for i in np.flatnonzero(~row_kept).tolist()
    ]
    if duplicates:
        warnings.append(
            f"{len(duplicates)} duplicate timestamp(s), keeping the later row: {_named(duplicates)}"
        )
    kept = [rows[i] for i in kept_positions.tolist()]
    gaps = _gaps([r[0] for r in kept])
    if gaps:
        named = [
            f"line {after[3]} {_duration(after[0] - before[0])} after line {before[3]}"
            for before, after in ((kept[i], kept[i + 1]) for i in gaps)
        ]
        warnings.append(
            f"{len(gaps)} gap(s) longer than {_GAP_STEPS} typical steps "
            f"({_duration(_typical_step(kept))}), scored as they are: {_named(named)}"
        )
    return CsvSeries(
        timestamps_s=np.asarray([r[0] for r in kept], dtype=np.float64),
        values=np.asarray([r[2] for r in kept], dtype=np.float64),
        warnings=warnings,
        timestamp_text=[r[1] for r in kept],
        row_timestamp_text=[r[1] for r in rows],
        row_values=np.asarray([r[2] for r in rows], dtype=np.float64),
        row_index=row_index,
        row_kept=row_kept,
    )


#: A gap: no row for longer than this many typical steps (the span of the alarm
#: layer's run trigger, which does not average across it: ``scoring.alarm_rate``).
_GAP_STEPS = 8


def _typical_step(kept: Sequence[tuple[float, str, float, int]]) -> float:
    return float(np.median(np.diff([r[0] for r in kept]))) if len(kept) > 1 else 0.0


def _gaps(stamps: Sequence[float]) -> list[int]:
    """Positions ``i`` (time order) after which no row comes for longer than
    ``_GAP_STEPS`` typical steps."""
    if len(stamps) < 2:
        return []
    steps = np.diff(np.asarray(stamps, dtype=np.float64))
    typical = float(np.median(steps))
    return np.flatnonzero(steps > _GAP_STEPS * typical).tolist() if typical > 0 else []


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _named(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED_LINES])
    more = len(items) - _MAX_NAMED_LINES
    return shown + (f" and {more} more" if more > 0 else "")


def _parse_cells(
    row: list[str], line: int, name: str, t_col: int, v_col: int
) -> tuple[float, str, float]:
    needed = max(t_col, v_col) + 1
    if len(row) < needed:
        raise RequestError(
            f"{name} line {line}: expected at least {needed} columns, got {len(row)}"
        )
    t_text = row[t_col].strip()
    try:
        stamp = parse_timestamp(t_text)
    except ValueError:
        raise RequestError(
            f"{name} line {line}: cannot parse timestamp {t_text!r} "
            "(expected ISO-8601 or epoch seconds/milliseconds)"
        ) from None
    v_text = row[v_col].strip()
    try:
        value = float(v_text) if v_text else math.nan
    except ValueError:
        raise RequestError(
            f"{name} line {line}: cannot parse value {v_text!r} as a number"
        ) from None
    return stamp, t_text, value


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float; empty for NaN."""
    value = float(value)
    return "" if math.isnan(value) else repr(value)


def _iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@contextmanager
def _open_for_write(dest: str | Path | TextIO) -> Iterator[TextIO]:
    if isinstance(dest, str | Path):
        with open(dest, "w", newline="", encoding="utf-8") as handle:
            yield handle
    else:
        yield dest


def write_scored_csv(
    dest: str | Path | TextIO,
    scored: ScoredSeries,
    is_anomaly: npt.ArrayLike,
    *,
    timestamp_text: Sequence[str] | None = None,
) -> None:
    """Write ``scored`` as ``timestamp,value,expected,lower,upper,score,is_anomaly``.

    ``timestamp_text`` (e.g. :attr:`CsvSeries.timestamp_text`) keeps the input's
    own timestamp strings; without it timestamps are written as ISO-8601 UTC.
    ``dest`` is a path or an open text file (opened with ``newline=""``).
    """
    n = len(scored)
    flags = np.asarray(is_anomaly, dtype=np.bool_)
    if flags.shape != (n,):
        raise ValueError(f"is_anomaly has shape {flags.shape}, expected ({n},)")
    if timestamp_text is not None and len(timestamp_text) != n:
        raise ValueError(f"timestamp_text has {len(timestamp_text)} entries, expected {n}")
    stamps: Iterable[str] = (
        timestamp_text
        if timestamp_text is not None
        else (_iso_utc(ts) for ts in scored.timestamps_s.tolist())
    )
    columns = [
        [format_number(x) for x in np.asarray(arr, dtype=np.float64).tolist()]
        for arr in (scored.values, scored.expected, scored.lower, scored.upper, scored.score)
    ]
    marks = ["1" if f else "0" for f in flags.tolist()]
    try:
        with _open_for_write(dest) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(SCORED_HEADER)
            writer.writerows(zip(stamps, *columns, marks, strict=True))
    except OSError as exc:
        raise RequestError(f"{dest}: cannot write: {exc.strerror or exc}") from exc
