"""Server-side time-series plots as inline SVG: arrays in, an SVG string out.

Pure (no I/O, no JavaScript, nothing fetched): the incident page embeds the result
as is. Every text that ends up in the SVG (titles, legend labels) is escaped here.

Structure, which the page tests rely on: one ``<svg class="plot">`` with
``data-series-count`` (the number of lines), one ``<path class="series">`` per
line (non-finite values break it into sub-paths), the expected band as
``<path class="band">``, shaded spans as ``<rect class="window">``, vertical
markers as ``<line class="marker">``, and UTC time ticks under the x axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from plugin_backend.types import FloatArray

__all__ = ["Band", "Line", "Marker", "Shade", "Values", "format_number", "time_plot"]

Values = Sequence[float] | FloatArray

WIDTH = 900
HEIGHT = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 64.0, 14.0, 26.0, 34.0
_PALETTE = ("#1f60c4", "#e0752d", "#37872d", "#8f3bb8", "#c4162a", "#0a7b83")
_EXPECTED_COLOUR = "#6e6e6e"
# Candidate tick spacings for the time axis, in seconds.
_TIME_STEPS = (
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    2 * 86400,
    7 * 86400,
)


@dataclass(frozen=True, slots=True)
class Line:
    """One plotted line, ``values`` aligned with the plot's timestamps."""

    values: Values
    label: str
    dashed: bool = False
    colour: str | None = None


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded band between ``lower`` and ``upper`` (the expected range)."""

    lower: Values
    upper: Values
    label: str = "expected band"


@dataclass(frozen=True, slots=True)
class Shade:
    """A shaded time span (an anomaly window)."""

    start_s: float
    end_s: float
    label: str
    css: str = "window"


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line at one instant (an onset)."""

    at_s: float
    label: str


def time_plot(
    timestamps_s: Values,
    lines: Sequence[Line],
    *,
    x_range: tuple[float, float],
    band: Band | None = None,
    shades: Sequence[Shade] = (),
    markers: Sequence[Marker] = (),
    title: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An SVG line plot over ``x_range`` (unix seconds), UTC time ticks on the x axis.

    Points outside ``x_range`` are dropped, so plots given the same range share
    their time axis exactly.
    """
    x0, x1 = float(x_range[0]), float(x_range[1])
    if not x1 > x0:
        x1 = x0 + 1.0
    frame = _Frame(x0, x1, width, height)
    keep = [i for i, t in enumerate(timestamps_s) if x0 <= float(t) <= x1]
    ts = [float(timestamps_s[i]) for i in keep]
    series = [[_num(line.values[i]) for i in keep] for line in lines]
    lower = [_num(band.lower[i]) for i in keep] if band is not None else []
    upper = [_num(band.upper[i]) for i in keep] if band is not None else []
    # The y range follows the lines, not the band: a band far wider than the data would
    # flatten a spike into an invisible line. The band is cut at the frame.
    y0, y1 = _y_range([v for s in series for v in s] or [*lower, *upper])
    frame.y0, frame.y1 = y0, y1
    lower = [min(max(v, y0), y1) if math.isfinite(v) else v for v in lower]
    upper = [min(max(v, y0), y1) if math.isfinite(v) else v for v in upper]

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" '
        f'data-series-count="{len(lines)}" data-x-start="{x0:.0f}" data-x-end="{x1:.0f}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'role="img" aria-label="{_esc(title or "time series plot")}">',
        f"<title>{_esc(title or 'time series plot')}</title>",
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{frame.plot_w:.1f}" '
        f'height="{frame.plot_h:.1f}" fill="#ffffff" stroke="#c7d0d9"/>',
    ]
    parts += _y_axis(frame)
    parts += _x_axis(frame)
    for shade in shades:
        parts.append(_shade(frame, shade))
    if band is not None:
        d = _band_path(frame, ts, lower, upper)
        parts.append(
            f'<path class="band" d="{d}" fill="#8ab8ff" fill-opacity="0.35" stroke="none">'
            f"<title>{_esc(band.label)}</title></path>"
        )
    for i, (line, values) in enumerate(zip(lines, series, strict=True)):
        colour = line.colour or (_EXPECTED_COLOUR if line.dashed else _PALETTE[i % len(_PALETTE)])
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        css = "series expected" if line.dashed else "series"
        parts.append(
            f'<path class="{css}" d="{_line_path(frame, ts, values)}" fill="none" '
            f'stroke="{colour}" stroke-width="1.6" stroke-linejoin="round" '
            f'stroke-linecap="round"{dash}><title>{_esc(line.label)}</title></path>'
        )
    for marker in markers:
        parts.append(_marker(frame, marker))
    if not any(math.isfinite(v) for s in series for v in s):
        parts.append(
            f'<text class="empty" x="{_LEFT + frame.plot_w / 2:.1f}" '
            f'y="{_TOP + frame.plot_h / 2:.1f}" text-anchor="middle" fill="#6e6e6e" '
            'font-size="13">no data in this range</text>'
        )
    parts += _legend(frame, lines, band, shades)
    parts.append("</svg>")
    return "\n".join(parts)


def format_number(value: float) -> str:
    """Compact axis/evidence number: ``0.15``, ``76``, ``1.2k``, ``3.4M``, ``2.5e-05``."""
    if not math.isfinite(value):
        return "\N{EN DASH}"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")):
        if magnitude >= limit:
            scale = 1e3 if suffix == "k" else limit
            return f"{value / scale:.3g}{suffix}"
    if magnitude < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4g}"


# -- internals ---------------------------------------------------------------------


class _Frame:
    """Maps data coordinates to SVG pixels."""

    def __init__(self, x0: float, x1: float, width: int, height: int) -> None:
        self.x0, self.x1 = x0, x1
        self.y0, self.y1 = 0.0, 1.0
        self.width, self.height = width, height
        self.plot_w = width - _LEFT - _RIGHT
        self.plot_h = height - _TOP - _BOTTOM

    def x(self, t: float) -> float:
        return _LEFT + (t - self.x0) / (self.x1 - self.x0) * self.plot_w

    def y(self, v: float) -> float:
        return _TOP + (1.0 - (v - self.y0) / (self.y1 - self.y0)) * self.plot_h


def _num(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _esc(text: str) -> str:
    return escape(text, quote=True)


def _y_range(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1.0):
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.06
    return lo - pad, hi + pad


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power


def _y_axis(frame: _Frame) -> list[str]:
    step = _nice_step(frame.y1 - frame.y0)
    first = math.ceil(frame.y0 / step) * step
    out = []
    k = 0
    while (value := first + k * step) <= frame.y1 + step * 1e-9:
        y = frame.y(value)
        out.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + frame.plot_w:.1f}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#e4e8ec"/>'
            f'<text class="ytick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="11" fill="#464c54">{_esc(format_number(_clean(value, step)))}</text>'
        )
        k += 1
    return out


def _clean(value: float, step: float) -> float:
    """Round away float noise (0.30000000000000004) at the tick's precision."""
    digits = max(0, -math.floor(math.log10(step)) + 2)
    return round(value, digits)


def _x_axis(frame: _Frame) -> list[str]:
    span = frame.x1 - frame.x0
    step = next((s for s in _TIME_STEPS if span / s <= 8), _TIME_STEPS[-1])
    first = math.ceil(frame.x0 / step) * step
    daily = step >= 86400 or span > 86400
    base_y = _TOP + frame.plot_h
    out = []
    t = float(first)
    while t <= frame.x1:
        x = frame.x(t)
        moment = datetime.fromtimestamp(t, UTC)
        label = moment.strftime("%d %b %H:%M" if daily else "%H:%M")
        out.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{base_y:.1f}" '
            f'stroke="#eef1f4"/>'
            f'<text class="xtick" x="{x:.1f}" y="{base_y + 15:.1f}" text-anchor="middle" '
            f'font-size="11" fill="#464c54" data-t="{t:.0f}">{_esc(label)}</text>'
        )
        t += step
    day = datetime.fromtimestamp(frame.x0, UTC).strftime("%Y-%m-%d")
    out.append(
        f'<text class="xcaption" x="{_LEFT + frame.plot_w:.1f}" y="{base_y + 30:.1f}" '
        f'text-anchor="end" font-size="11" fill="#6e6e6e">UTC, from {_esc(day)}</text>'
    )
    return out


def _line_path(frame: _Frame, ts: Sequence[float], values: Sequence[float]) -> str:
    parts: list[str] = []
    pen_down = False
    for t, v in zip(ts, values, strict=True):
        if not math.isfinite(v):
            pen_down = False
            continue
        cmd = "L" if pen_down else "M"
        parts.append(f"{cmd}{frame.x(t):.1f},{frame.y(v):.1f}")
        pen_down = True
    # A lone point between gaps still shows: round caps on a zero-length segment.
    out: list[str] = []
    for i, part in enumerate(parts):
        out.append(part)
        lone = part[0] == "M" and (i + 1 == len(parts) or parts[i + 1][0] == "M")
        if lone:
            out.append("h0.1")
    return " ".join(out)


def _band_path(
    frame: _Frame, ts: Sequence[float], lower: Sequence[float], upper: Sequence[float]
) -> str:
    runs: list[list[tuple[float, float, float]]] = [[]]
    for t, lo, hi in zip(ts, lower, upper, strict=True):
        if math.isfinite(lo) and math.isfinite(hi):
            runs[-1].append((t, lo, hi))
        elif runs[-1]:
            runs.append([])
    paths = []
    for run in runs:
        if not run:
            continue
        top = [f"{frame.x(t):.1f},{frame.y(hi):.1f}" for t, _, hi in run]
        bottom = [f"{frame.x(t):.1f},{frame.y(lo):.1f}" for t, lo, _ in reversed(run)]
        paths.append("M" + " L".join(top + bottom) + " Z")
    return " ".join(paths)


def _shade(frame: _Frame, shade: Shade) -> str:
    start = min(max(shade.start_s, frame.x0), frame.x1)
    end = min(max(shade.end_s, frame.x0), frame.x1)
    x = frame.x(start)
    w = max(frame.x(end) - x, 2.0)  # a one-point window stays visible
    css = _esc(shade.css)
    colour = "#f2495c" if shade.css == "window" else "#ffb357"
    return (
        f'<rect class="{css}" x="{x:.1f}" y="{_TOP}" width="{w:.1f}" '
        f'height="{frame.plot_h:.1f}" fill="{colour}" fill-opacity="0.18">'
        f"<title>{_esc(shade.label)}</title></rect>"
    )


def _marker(frame: _Frame, marker: Marker) -> str:
    if not frame.x0 <= marker.at_s <= frame.x1:
        return ""
    x = frame.x(marker.at_s)
    return (
        f'<line class="marker" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" '
        f'y2="{_TOP + frame.plot_h:.1f}" stroke="#ff7f0e" stroke-width="1.2" '
        f'stroke-dasharray="3 3"><title>{_esc(marker.label)}</title></line>'
    )


def _legend(
    frame: _Frame, lines: Sequence[Line], band: Band | None, shades: Sequence[Shade]
) -> list[str]:
    entries: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        if any(label == line.label for _, label in entries):
            continue  # e.g. the two edges of one range: one legend entry
        colour = line.colour or (_EXPECTED_COLOUR if line.dashed else _PALETTE[i % len(_PALETTE)])
        dash = ' stroke-dasharray="4 3"' if line.dashed else ""
        swatch = f'<line x1="0" x2="16" y1="-4" y2="-4" stroke="{colour}" stroke-width="2"{dash}/>'
        entries.append((swatch, line.label))
    if band is not None:
        swatch = '<rect x="0" y="-9" width="16" height="9" fill="#8ab8ff" fill-opacity="0.5"/>'
        entries.append((swatch, band.label))
    for shade in shades[:1]:
        colour = "#f2495c" if shade.css == "window" else "#ffb357"
        swatch = f'<rect x="0" y="-9" width="16" height="9" fill="{colour}" fill-opacity="0.4"/>'
        entries.append((swatch, shade.label))
    out = ['<g class="legend" font-size="11" fill="#24292e">']
    x = _LEFT
    limit = _LEFT + frame.plot_w
    for swatch, label in entries:
        text = label if len(label) <= 70 else label[:69] + "…"
        room = 26 + 6.2 * len(text)
        if x + room > limit and x > _LEFT:
            break
        out.append(
            f'<g transform="translate({x:.1f},{_TOP - 8})">{swatch}'
            f'<text x="20" y="0">{_esc(text)}</text></g>'
        )
        x += room + 10
    out.append("</g>")
    return out
