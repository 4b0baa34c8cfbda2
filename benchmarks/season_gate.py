"""Ensemble members chosen per series by its own measured seasonality, or by its
members' own forecast errors, for the detection benchmark's ``--season`` tables
(measured, not adopted: the default is ``scoring.ensemble``'s fixed STL + Holt-Winters).

The idea: on a series with little daily shape a seasonal forecast adds variance and a
robust level model (robust_z) is the right one; on a series with a strong daily shape
STL and Holt-Winters are. So before each block (``grid_cells.season_of``: 3 h at
5 min) a statistic of the series' own history decides which members' alarms count.

**Seasonal strength** (``seasonal_strength``), on the bin medians (as STL bins them,
``COARSE_PERIOD`` bins a day) of the ``HISTORY_DAYS`` days before the block, robust
STL as the STL detector fits it:

* ``fs``: Wang, Smith & Hyndman's ``F_S = max(0, 1 - Var(R) / Var(S + R))``;
* ``fs_robust``: the same with squared MADs instead of variances;
* ``acf``: the autocorrelation at the daily lag (about the median).

NaN before two days of history (or without a daily period): the default members.

**Gates** (``GATE_VARIANTS``): where the statistic is below a threshold ``tau`` (the one
knob, chosen leave one corpus out), the *weak* members page instead of STL +
Holt-Winters, each at its share ``1 / k`` of the risk as in the union:
``switch`` robust_z alone; ``add`` robust_z + STL + Holt-Winters; ``rz+hw`` and
``rz+stl`` robust_z in place of one seasonal member.

**Forecast skill** (``SKILL_VARIANTS``, knob-free): instead of a proxy for whether
a seasonal model helps, each member's own forecast error, the median ``|value -
expected|`` over the ``SKILL_WINDOW`` points before the block: ``switch`` robust_z
alone where its error is the lowest of the three, ``add`` robust_z joins where it
is, ``best`` the member with the lowest error alone, ``inv2`` STL + Holt-Winters
with shares in inverse proportion to their errors (weighted Bonferroni).

Every gate reads only history before the point's block and each member's tail fit
is its own (``benchmarks.fusion.member_fit``), so alarms on a prefix are the prefix
of alarms; a gated share is a per-point risk, so the union's bound holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from benchmarks.bench_detection import (
    NO_ANOMALY_CORPUS,
    ScoredFile,
    Scores,
    _fmt,
    _lookup,
    assess,
    ensemble_of,
)
from benchmarks.common import print_table
from benchmarks.fusion import member_fit
from plugin_backend.scoring.alarm_rate import RateFit, RatePolicy
from plugin_backend.scoring.grid_cells import cell_values, grid, season_of
from plugin_backend.scoring.robust import row_nanmedian
from plugin_backend.scoring.windows import WindowPolicy, alarms
from plugin_backend.types import FloatArray

__all__ = [
    "GATE_STATISTICS",
    "GATE_VARIANTS",
    "MEMBERS",
    "SKILL_VARIANTS",
    "gated_normalized",
    "print_season",
    "season_loco_rows",
    "season_results",
    "season_rows",
    "seasonal_strength",
    "skill_shares",
    "strength_shares",
]

#: The members every gate chooses among (rows of the shares, in this order).
MEMBERS = ("robust_z", "stl", "holt_winters")
DEFAULT = (0.0, 0.5, 0.5)  # STL + Holt-Winters, the default ensemble
GATE_STATISTICS = ("fs", "fs_robust", "acf")
#: Members that page where the statistic is below ``tau`` (indices into ``MEMBERS``).
GATE_VARIANTS: dict[str, tuple[int, ...]] = {
    "switch": (0,),
    "add": (0, 1, 2),
    "rz+hw": (0, 2),
    "rz+stl": (0, 1),
}
SKILL_VARIANTS = ("switch", "add", "best", "inv2")
HISTORY_DAYS = 4
SKILL_WINDOW = 2000
SKILL_MIN_POINTS = 256
SKILL_BLOCK = 64


def seasonal_strength(timestamps_s: FloatArray, values: FloatArray) -> FloatArray:
    """Rows ``fs``, ``fs_robust``, ``acf`` per point, each from the ``HISTORY_DAYS``
    days before the point's block (NaN with less than two days of it)."""
    from statsmodels.tsa.seasonal import STL

    from plugin_backend.scoring.stl_fit import _stl_windows

    n = int(timestamps_s.shape[0])
    out = np.full((len(GATE_STATISTICS), n), np.nan)
    step, cells = grid(np.asarray(timestamps_s, dtype=np.float64))
    season = season_of(step)
    if season is None or n == 0:
        return out
    vs = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(vs)
    finite_cells, finite_values = cells[finite], vs[finite]
    per_day = season.period // season.coarse
    bins = HISTORY_DAYS * per_day
    blocks = cells // season.block
    starts = np.flatnonzero(np.concatenate([[True], blocks[1:] != blocks[:-1]]))
    for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
        end = int(blocks[lo]) * season.block
        raw = cell_values(finite_cells, finite_values, end - bins * season.coarse, end)
        binned = row_nanmedian(raw.reshape(bins, season.coarse)) if season.coarse > 1 else raw
        known = np.isfinite(binned)
        if np.count_nonzero(known) < 2 * per_day:
            continue
        first = int(np.argmax(known))  # history starts at its first known bin
        binned, known = binned[first:], known[first:]
        if binned.shape[0] < 2 * per_day:
            continue
        if not known.all():
            at = np.arange(binned.shape[0], dtype=np.float64)
            binned = np.interp(at, at[known], binned[known])
        fit = STL(binned, period=per_day, robust=True, seasonal_deg=0, **_stl_windows(per_day))
        result = fit.fit(inner_iter=2, outer_iter=3)
        resid = np.asarray(result.resid)
        detrended = np.asarray(result.seasonal) + resid
        out[:, lo:hi] = np.array(
            [
                _strength(np.var(resid), np.var(detrended)),
                _strength(_mad2(resid), _mad2(detrended)),
                _daily_acf(binned, per_day),
            ]
        )[:, None]
    return out


def _strength(resid_spread: float, detrended_spread: float) -> float:
    return max(0.0, 1.0 - resid_spread / detrended_spread) if detrended_spread > 0 else 0.0


def _mad2(x: FloatArray) -> float:
    return float((1.4826 * np.median(np.abs(x - np.median(x)))) ** 2)


def _daily_acf(binned: FloatArray, lag: int) -> float:
    d = binned - np.median(binned)
    denominator = float(d @ d)
    return float(d[lag:] @ d[:-lag]) / denominator if denominator > 0 else 0.0


def strength_shares(statistic: FloatArray, tau: float, variant: str) -> FloatArray:
    """Each member's share of the risk per point (rows: ``MEMBERS``): the variant's
    weak members where ``statistic < tau``, else STL + Holt-Winters."""
    weak = np.isfinite(statistic) & (statistic < tau)
    shares = np.repeat(np.asarray(DEFAULT)[:, None], statistic.shape[0], axis=1)
    chosen = GATE_VARIANTS[variant]
    shares[:, weak] = np.array([1.0 / len(chosen) if m in chosen else 0.0 for m in range(3)])[
        :, None
    ]
    return shares


def trailing_errors(values: FloatArray, expected: npt.ArrayLike) -> FloatArray:
    """Per member (rows of ``expected``): the median ``|value - expected|`` over the
    ``SKILL_WINDOW`` points before each point's block of ``SKILL_BLOCK`` points (NaN
    with fewer than ``SKILL_MIN_POINTS`` known)."""
    rows = np.asarray(expected, dtype=np.float64)
    n = rows.shape[1]
    out = np.full(rows.shape, np.nan)
    errors = np.abs(np.asarray(values, dtype=np.float64) - rows)
    for first in range(0, n, SKILL_BLOCK):
        window = errors[:, max(first - SKILL_WINDOW, 0) : first]
        for m, row in enumerate(window):
            known = row[np.isfinite(row)]
            if known.shape[0] >= SKILL_MIN_POINTS:
                out[m, first : first + SKILL_BLOCK] = np.median(known)
    return out


def skill_shares(errors: FloatArray, variant: str) -> FloatArray:
    """Each member's share of the risk per point from the members' trailing errors
    (rows: ``MEMBERS``; STL + Holt-Winters until all three are known)."""
    n = errors.shape[1]
    known = np.isfinite(errors).all(axis=0)
    shares = np.repeat(np.asarray(DEFAULT)[:, None], n, axis=1)
    level_best = known & (errors[0] < np.minimum(errors[1], errors[2]))
    if variant == "switch":
        shares[:, level_best] = np.array([[1.0], [0.0], [0.0]])
    elif variant == "add":
        shares[:, level_best] = 1.0 / 3.0
    elif variant == "best":
        best = np.argmin(np.where(np.isfinite(errors), errors, np.inf), axis=0)
        for m in range(3):
            shares[:, known & (best == m)] = np.eye(3)[m][:, None]
    elif variant == "inv2":
        weight = 1.0 / np.maximum(errors[1:], 1e-12)
        shares[0, known] = 0.0
        shares[1:, known] = (weight / weight.sum(axis=0))[:, known]
    else:
        raise ValueError(f"unknown skill variant {variant!r}; choose from {SKILL_VARIANTS}")
    return shares


def gated_normalized(
    rows: Sequence[FloatArray],
    fits: Sequence[RateFit],
    shares: FloatArray,
    q: float,
    fallback: float,
) -> FloatArray:
    """Each point in units of its alarm threshold (> 1 pages): the largest over the
    members with a share there of ``score / threshold at q * share`` (NaN where none
    has a score). With shares of ``1 / k`` everywhere: the union of ``k`` members."""
    n = shares.shape[1]
    out = np.full(n, -np.inf)
    for row, fit, share in zip(rows, fits, shares, strict=True):
        member = np.full(n, np.nan)
        for value in np.unique(share[share > 0]).tolist():
            at = share == value
            member[at] = fit.normalized(np.asarray(row, dtype=np.float64), q * value, fallback)[at]
        out = np.where(share > 0, np.fmax(out, member), out)
    return np.where(np.isfinite(out), out, np.nan)


# --- the benchmark's tables ------------------------------------------------------

#: Thresholds ``tau`` tried per statistic (the default, never gated, is a candidate too).
TAU_GRID: dict[str, tuple[float, ...]] = {
    "fs": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "fs_robust": (0.5, 0.6, 0.7, 0.8, 0.9),
    "acf": (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6),
}
#: A corpus' cell: NAB standard, or false alarms per series per week without windows.
Cells = dict[str, float]
Rows = list[list[str]]


def season_results(scores: Scores) -> dict[tuple[str, str, str], Cells]:
    """Per (gate, variant, tau) -- ``("default", "stl+holt_winters", "")`` first -- each
    corpus' NAB standard (false alarms per series per week where a corpus has no
    windows, the quiet one included when ``scores`` has it), from the members' scores
    (each member's tail fits and each file's gate statistics made once)."""
    policy, window = RatePolicy(), WindowPolicy()
    joined = ensemble_of(scores, MEMBERS)
    prepared = {
        corpus: [_prepare(item, policy) for item in files] for corpus, (files, _) in joined.items()
    }

    def cells(shares_of: Callable[[_Prepared], FloatArray]) -> Cells:
        out: Cells = {}
        for corpus, (files, _) in joined.items():
            fired = {}
            for item, ready in zip(files, prepared[corpus], strict=True):
                if ready is None or item.scored is None:
                    continue
                normalized = gated_normalized(
                    ready.rows, ready.fits, shares_of(ready), ready.q, policy.fallback
                )
                fired[id(item)] = alarms(item.scored, window, normalized=normalized)
            r = assess("season", corpus, files, _lookup(fired))
            out[corpus] = r.nab_standard if math.isfinite(r.nab_standard) else r.false_per_week
        return out

    found = {("default", "stl+holt_winters", ""): cells(_default_shares)}
    for s, statistic in enumerate(GATE_STATISTICS):
        for variant in GATE_VARIANTS:
            for tau in TAU_GRID[statistic]:
                found[(statistic, variant, f"{tau:g}")] = cells(_by_strength(s, tau, variant))
    for variant in SKILL_VARIANTS:
        found[("skill", variant, "")] = cells(_by_skill(variant))
    return found


def _default_shares(prepared: _Prepared) -> FloatArray:
    return np.repeat(np.asarray(DEFAULT)[:, None], prepared.n, axis=1)


def _by_strength(statistic: int, tau: float, variant: str) -> Callable[[_Prepared], FloatArray]:
    return lambda prepared: strength_shares(prepared.strength[statistic], tau, variant)


def _by_skill(variant: str) -> Callable[[_Prepared], FloatArray]:
    return lambda prepared: skill_shares(prepared.errors, variant)


@dataclass(frozen=True, slots=True, eq=False)
class _Prepared:
    rows: tuple[FloatArray, ...]
    fits: tuple[RateFit, ...]
    strength: FloatArray
    errors: FloatArray
    q: float
    n: int


def _prepare(item: ScoredFile, policy: RatePolicy) -> _Prepared | None:
    scored = item.scored
    if scored is None or scored.member_scores is None or scored.member_expected is None:
        return None
    ts = scored.timestamps_s
    rows = tuple(np.asarray(row, dtype=np.float64) for row in scored.member_scores)
    return _Prepared(
        rows=rows,
        fits=tuple(member_fit(ts, row, policy) for row in rows),
        strength=seasonal_strength(ts, scored.values),
        errors=trailing_errors(scored.values, scored.member_expected),
        q=policy.risk(float(np.median(np.diff(ts)))),
        n=int(ts.shape[0]),
    )


def season_rows(found: Mapping[tuple[str, str, str], Cells], corpora: Sequence[str]) -> Rows:
    """Per gate: NAB per corpus, the worst, quiet false alarms per series per week."""
    rows = []
    for (statistic, variant, tau), cells in found.items():
        windowed = [cells[c] for c in corpora if c != NO_ANOMALY_CORPUS]
        rows.append(
            [
                statistic,
                variant,
                tau,
                *(_cell(c, cells[c]) for c in corpora),
                f"{min(windowed):.1f}",
                _fmt(cells.get("quiet", math.nan), 2),
            ]
        )
    return rows


def _cell(corpus: str, value: float) -> str:
    return f"{value:.2f}/wk" if corpus == NO_ANOMALY_CORPUS else f"{value:.1f}"


def season_loco_rows(found: Mapping[tuple[str, str, str], Cells], corpora: Sequence[str]) -> Rows:
    """Leave one corpus out: per gate family (statistic and variant; skill), its
    candidates and the default, the one with the best worst NAB score on the other
    corpora (ties: the better next worst, and so on), scored on the held-out one; then
    statistic, variant and tau chosen together."""
    held = [c for c in corpora if c != NO_ANOMALY_CORPUS]
    default = next(iter(found))
    families: dict[str, list[tuple[str, str, str]]] = {}
    for key in list(found)[1:]:
        label = "skill" if key[0] == "skill" else f"{key[0]} {key[1]}"
        families.setdefault(label, [default]).append(key)
    families["any gate by its statistic (statistic, variant, tau chosen)"] = [
        k for k in found if k[0] != "skill"
    ]
    rows = []
    for label, candidates in families.items():
        cells, outcomes = [], []
        for corpus in held:
            others = [c for c in held if c != corpus]
            best = max(candidates, key=lambda k: sorted(found[k][c] for c in others))
            outcomes.append(found[best][corpus])
            choice = _choice(best, default, every=label.startswith("any"))
            cells.append(f"{choice}: {found[best][corpus]:.1f}")
        rows.append([label, *cells, f"{min(outcomes):.1f}"])
    return rows


def _choice(key: tuple[str, str, str], default: tuple[str, str, str], *, every: bool) -> str:
    if key == default:
        return "default"
    if every:
        return " ".join(part for part in key if part)
    return key[1] if key[0] == "skill" else f"tau {key[2]}"


def print_season(scores: Scores, corpora: Sequence[str]) -> None:
    found = season_results({m: scores[m] for m in MEMBERS})
    print_table(
        "Members gated per series by its own seasonal strength or its members' forecast "
        "errors (benchmarks/season_gate.py), from robust_z, stl, holt_winters scores, default "
        "WindowPolicy: NAB standard per corpus, the worst, quiet false alarms per series per week",
        ["gate", "variant", "tau", *corpora, "worst", "quiet FA/wk"],
        season_rows(found, corpora),
    )
    held = [c for c in corpora if c != NO_ANOMALY_CORPUS]
    print_table(
        "Leave one corpus out, the gate's threshold (and, last row, its statistic and "
        "variant): chosen by the best worst NAB score on the other corpora, scored on the "
        "held-out one",
        ["gate", *(f"held out {c}" for c in held), "worst held-out"],
        season_loco_rows(found, corpora),
    )
