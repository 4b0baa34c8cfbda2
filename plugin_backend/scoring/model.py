"""The global quantile forecaster behind the ``transformer`` detector.

One small model for every series (zero-shot): a window of ``context`` points is
normalised by its own median and robust scale, cut into patches and encoded by a
compact ``nn.TransformerEncoder``; a flatten head predicts ``len(quantiles)``
quantiles for each of the ``horizon`` next points.

Inputs per window (all in the window's normalised units, NaN where missing):

* ``x``: the context, ``(B, C)``;
* ``season``: the values exactly one period (one day) before each context and
  horizon position, ``(B, C + H)``; all NaN when the caller lacks that history.

Every patch token carries four channels (value, mask, seasonal value, seasonal
mask), so missing points and "what happened yesterday at this time" are both
visible to the encoder; ``H / patch`` horizon tokens carry the seasonal values of
the points to predict. Quantiles are monotone by construction: the median plus
cumulative softplus gaps on each side.

Normalisation is done in float64 numpy (:func:`robust_normalise`) by both the
trainer and the detector, so large levels (bytes, timestamps) keep their
precision; the network only sees values of order one.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "DEFAULT_QUANTILES",
    "Forecaster",
    "ForecasterConfig",
    "pinball_loss",
    "robust_normalise",
]

DEFAULT_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

#: Normalised inputs are clipped to this magnitude (a spike stays "huge", finite).
INPUT_CLIP = 20.0
#: The robust scale never falls below this fraction of the level ...
REL_SCALE_FLOOR = 1e-3
#: ... nor below this absolute value (all-zero series).
ABS_SCALE_FLOOR = 1e-6

_F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ForecasterConfig:
    """Shape of the forecaster. ``context`` and ``horizon`` are multiples of ``patch``."""

    context: int = 128
    horizon: int = 8
    patch: int = 8
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ff: int = 128
    dropout: float = 0.0
    quantiles: tuple[float, ...] = field(default=DEFAULT_QUANTILES)
    use_seasonal: bool = True

    def __post_init__(self) -> None:
        if self.patch <= 0 or self.context % self.patch or self.horizon % self.patch:
            raise ValueError(
                f"context ({self.context}) and horizon ({self.horizon}) must be "
                f"positive multiples of patch ({self.patch})"
            )
        if self.context <= 0 or self.horizon <= 0:
            raise ValueError("context and horizon must be positive")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        qs = tuple(float(q) for q in self.quantiles)
        object.__setattr__(self, "quantiles", qs)
        if list(qs) != sorted(set(qs)) or not all(0.0 < q < 1.0 for q in qs):
            raise ValueError(f"quantiles must be strictly increasing in (0, 1): {qs}")
        if 0.5 not in qs:
            raise ValueError("quantiles must contain the median 0.5")

    @property
    def median_index(self) -> int:
        return self.quantiles.index(0.5)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quantiles"] = list(self.quantiles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForecasterConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        kwargs = dict(data)
        if "quantiles" in kwargs:
            kwargs["quantiles"] = tuple(float(q) for q in kwargs["quantiles"])
        return cls(**kwargs)


def robust_normalise(context: _F64, season: _F64 | None = None) -> tuple[_F64, _F64, _F64, _F64]:
    """Per-window median and robust scale of ``context`` ``(B, C)``.

    Returns ``(x, s, loc, scale)``: ``x = (context - loc) / scale``, ``s`` the same
    for ``season`` (NaN-filled ``(B, 0)`` when ``season`` is None), ``loc`` and
    ``scale`` of shape ``(B,)``. The scale is ``1.4826·MAD``, at least
    ``1.2533·mean|x - median|`` (so a mostly constant window with a few moves
    is not scaled by zero), floored relative to the level and absolutely, so
    flat series do not explode. Windows with no finite value get ``loc = 0``.
    """
    ctx = np.asarray(context, dtype=np.float64)
    finite = np.isfinite(ctx)
    any_finite = np.asarray(finite.any(axis=1), dtype=bool)
    safe = np.where(any_finite[:, None], ctx, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loc = np.nanmedian(safe, axis=1)
        dev = np.abs(safe - loc[:, None])
        mad = np.nanmedian(dev, axis=1) * 1.4826
        mean_dev = np.nanmean(dev, axis=1) * 1.2533
    loc = np.where(np.isfinite(loc), loc, 0.0)
    scale = np.fmax(mad, mean_dev)
    scale = np.fmax(scale, REL_SCALE_FLOOR * np.abs(loc))
    scale = np.fmax(scale, ABS_SCALE_FLOOR)
    scale = np.where(np.isfinite(scale), scale, 1.0)
    x = (ctx - loc[:, None]) / scale[:, None]
    if season is None:
        s = np.full((ctx.shape[0], 0), np.nan)
    else:
        s = (np.asarray(season, dtype=np.float64) - loc[:, None]) / scale[:, None]
    return x, s, loc, scale


class Forecaster(nn.Module):
    """Patch transformer that maps a normalised window to monotone quantiles."""

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        p = config.patch
        self.n_context_tokens = config.context // p
        self.n_horizon_tokens = config.horizon // p
        n_tokens = self.n_context_tokens + self.n_horizon_tokens
        n_q = len(config.quantiles)
        # context token: value, mask, seasonal value, seasonal mask (4 * patch)
        self.context_embed = nn.Linear(4 * p, config.d_model)
        # horizon token: seasonal value, seasonal mask (2 * patch) + 2 window stats
        self.horizon_embed = nn.Linear(2 * p + 2, config.d_model)
        self.position = nn.Parameter(torch.zeros(1, n_tokens, config.d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=config.d_model,
            nhead=config.heads,
            dim_feedforward=config.ff,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=config.layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(n_tokens * config.d_model, config.horizon * n_q)
        # a direct linear path from the raw inputs helps level / seasonal copying
        self.skip = nn.Linear(2 * config.context + 2 * config.horizon, config.horizon)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def forward(self, x: torch.Tensor, season: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C)`` and ``season`` ``(B, C + H)`` normalised, NaN where missing.

        Returns normalised quantiles ``(B, H, Q)``, non-decreasing along ``Q``.
        """
        cfg = self.config
        batch = x.shape[0]
        p = cfg.patch
        if x.shape[1] != cfg.context:
            raise ValueError(f"context length {x.shape[1]} != configured {cfg.context}")
        mask = torch.isfinite(x)
        xv = torch.where(mask, x, torch.zeros_like(x)).clamp(-INPUT_CLIP, INPUT_CLIP)
        total = cfg.context + cfg.horizon
        if season is None or not cfg.use_seasonal:
            sv = x.new_zeros(batch, total)
            smask = torch.zeros(batch, total, dtype=torch.bool, device=x.device)
        else:
            if season.shape[1] != total:
                raise ValueError(f"season length {season.shape[1]} != context + horizon {total}")
            smask = torch.isfinite(season)
            sv = torch.where(smask, season, torch.zeros_like(season)).clamp(-INPUT_CLIP, INPUT_CLIP)
        mf = mask.to(x.dtype)
        smf = smask.to(x.dtype)
        nc = self.n_context_tokens
        ctx_feats = torch.cat(
            [
                xv.reshape(batch, nc, p),
                mf.reshape(batch, nc, p),
                sv[:, : cfg.context].reshape(batch, nc, p),
                smf[:, : cfg.context].reshape(batch, nc, p),
            ],
            dim=-1,
        )
        nh = self.n_horizon_tokens
        missing = 1.0 - mf.mean(dim=1, keepdim=True)
        has_season = smf.mean(dim=1, keepdim=True)
        stats = torch.cat([missing, has_season], dim=1).unsqueeze(1).expand(batch, nh, 2)
        hor_feats = torch.cat(
            [
                sv[:, cfg.context :].reshape(batch, nh, p),
                smf[:, cfg.context :].reshape(batch, nh, p),
                stats,
            ],
            dim=-1,
        )
        tokens = torch.cat([self.context_embed(ctx_feats), self.horizon_embed(hor_feats)], dim=1)
        hidden = self.norm(self.encoder(tokens + self.position))
        n_q = len(cfg.quantiles)
        raw = self.head(hidden.reshape(batch, -1)).reshape(batch, cfg.horizon, n_q)
        skip = self.skip(torch.cat([xv, mf, sv[:, cfg.context :], smf[:, cfg.context :]], dim=1))
        mid = cfg.median_index
        median = raw[..., mid] + skip
        up = torch.cumsum(F.softplus(raw[..., mid + 1 :]) + 1e-4, dim=-1)
        down = torch.cumsum(F.softplus(raw[..., :mid].flip(-1)) + 1e-4, dim=-1).flip(-1)
        med = median.unsqueeze(-1)
        return torch.cat([med - down, med, med + up], dim=-1)

    def parameter_count(self) -> int:
        return sum(int(p.numel()) for p in self.parameters())


def pinball_loss(
    pred: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...], *, clip: float = 50.0
) -> torch.Tensor:
    """Mean pinball loss over finite targets; ``pred`` ``(B, H, Q)``, ``target`` ``(B, H)``."""
    valid = torch.isfinite(target)
    tgt = torch.where(valid, target, torch.zeros_like(target)).clamp(-clip, clip)
    q = torch.tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = tgt.unsqueeze(-1) - pred
    loss = torch.maximum(q * diff, (q - 1.0) * diff)
    weight = valid.to(pred.dtype).unsqueeze(-1)
    denom = weight.sum() * len(quantiles)
    return (loss * weight).sum() / torch.clamp(denom, min=1.0)
