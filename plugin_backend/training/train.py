"""Train the global forecaster on the synthetic corpus and write the artefact.

``train(config, steps=..., batch_size=..., seed=..., out_dir=...)`` is seeded
(torch and numpy), uses CUDA when available, AdamW with linear warm-up and a
cosine schedule, validates on a fixed held-out set drawn from a different seed
every ``eval_every`` steps (the curve goes into the meta), stops early on a
plateau, keeps the best weights and writes ``transformer.pt`` +
``transformer.json`` atomically (see :mod:`plugin_backend.adapters.artifacts`).

Batch ``k`` is drawn from ``default_rng([seed, k])``, so a run is the same whether
its batches are made in this process or by ``workers`` spawned processes (the
corpus generator, not the network, bounds the speed on a GPU: ~0.1 s per 512
windows on one core). With ``max_minutes`` the cosine schedule decays against
whichever budget, steps or minutes, runs out first, so a timed run still ends at
a low learning rate (its length then depends on the machine; the meta records it).

``main_train(argv)`` is the argparse entry the ``plugin-backend train`` command
hooks in.
"""

from __future__ import annotations

import argparse
import collections
import copy
import math
import multiprocessing
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # type: ignore[import-untyped]

from plugin_backend.adapters.artifacts import DEFAULT_WEIGHTS_DIR, save_model
from plugin_backend.scoring.model import (
    Forecaster,
    ForecasterConfig,
    pinball_loss,
    robust_normalise,
)
from plugin_backend.training.corpus import WindowBatch, generate_windows

__all__ = ["TrainReport", "main_train", "train"]

_VAL_SEED_OFFSET = 1_000_003
_TARGET_CLIP = 50.0
#: Batches a worker pool may hold ready per worker (bounds memory when the model is faster).
_PREFETCH_PER_WORKER = 4
#: Defaults of the knobs the CLI does not expose.
_WEIGHT_DECAY, _VAL_SIZE, _MIN_IMPROVEMENT = 0.01, 4096, 0.002
#: Share of a ``max_minutes`` budget the schedule plans to use (evaluations, jitter).
_BUDGET_MARGIN = 0.9

_Arrays = tuple[np.ndarray[Any, np.dtype[np.float32]], ...]


@dataclass(frozen=True, slots=True)
class TrainReport:
    steps_run: int
    best_step: int
    best_val_loss: float
    final_val_loss: float
    metrics: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    weights_path: Path | None = None
    meta_path: Path | None = None
    stopped_early: bool = False
    reproduce: str = ""


def _normalised(batch: WindowBatch) -> _Arrays:
    """The network's inputs and targets for ``batch``, as float32 arrays."""
    x, s, loc, scale = robust_normalise(batch.context, batch.season)
    target = np.clip((batch.target - loc[:, None]) / scale[:, None], -_TARGET_CLIP, _TARGET_CLIP)
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (x, s, target))


def _tensors(
    arrays: _Arrays, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, s, target = (torch.as_tensor(a, device=device) for a in arrays)
    return x, s, target


def _make_batch(task: tuple[int, int, int, int, int, bool]) -> _Arrays:
    """Training batch ``index`` of run ``seed`` (module level: a pool worker calls it)."""
    seed, index, size, context, horizon, clean = task
    rng = np.random.default_rng([seed, index])
    return _normalised(generate_windows(size, context, horizon, rng=rng, clean_targets=clean))


def _batches(
    seed: int,
    size: int,
    context: int,
    horizon: int,
    *,
    steps: int,
    workers: int,
    clean_targets: bool = False,
) -> Generator[_Arrays, None, None]:
    """Batches 1..steps in order, made here or by ``workers`` spawned processes."""
    tasks = ((seed, index, size, context, horizon, clean_targets) for index in range(1, steps + 1))
    if workers <= 1:
        yield from map(_make_batch, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending: collections.deque[Any] = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(_make_batch, (task,)))
            if len(pending) >= workers * _PREFETCH_PER_WORKER:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@torch.no_grad()
def _evaluate(
    model: Forecaster,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    chunk: int = 2048,
) -> dict[str, float]:
    model.eval()
    cfg = model.config
    x, s, target = val
    losses: list[float] = []
    weights: list[int] = []
    inside = 0
    abs_err = 0.0
    count = 0
    for i in range(0, x.shape[0], chunk):
        q = model(x[i : i + chunk], s[i : i + chunk])
        tgt = target[i : i + chunk]
        valid = torch.isfinite(tgt)
        n = int(valid.sum())
        losses.append(float(pinball_loss(q, tgt, cfg.quantiles, clip=_TARGET_CLIP)))
        weights.append(n)
        t = torch.where(valid, tgt, torch.zeros_like(tgt))
        within = (t >= q[..., 0]) & (t <= q[..., -1]) & valid
        inside += int(within.sum())
        abs_err += float(((q[..., cfg.median_index] - t).abs() * valid).sum())
        count += n
    model.train()
    total = max(sum(weights), 1)
    return {
        "val_pinball": float(
            sum(loss * w for loss, w in zip(losses, weights, strict=True)) / total
        ),
        "val_median_mae": abs_err / max(count, 1),
        "val_outer_coverage": inside / max(count, 1),
    }


def scheduled_steps(
    steps: int, at_step: int, elapsed_s: float, per_step_s: float, budget_s: float
) -> int:
    """How many steps a run that is at ``at_step`` after ``elapsed_s`` of its
    ``budget_s``, at ``per_step_s`` a step, can finish: at most ``steps``, at least
    ``at_step``, with a 10% margin for evaluations and jitter."""
    if not (math.isfinite(budget_s) and per_step_s > 0):
        return steps
    more = int(max(budget_s - elapsed_s, 0.0) * _BUDGET_MARGIN / per_step_s)
    return max(at_step, min(steps, at_step + more))


def _reproduce_command(
    config: ForecasterConfig,
    *,
    steps: int,
    warmup: int,
    batch_size: int,
    seed: int,
    lr: float,
    eval_every: int,
    patience: int,
    init_from: str | Path | None,
    clean_targets: bool = False,
) -> str:
    """The ``plugin-backend train`` command that repeats a run step for step (any
    ``--workers``; no ``--max-minutes``: its schedule length is ``steps``)."""
    parts = [
        f"plugin-backend train --steps {steps} --warmup-steps {warmup}",
        f"--batch-size {batch_size} --seed {seed} --lr {lr}",
        f"--eval-every {eval_every} --patience {patience}",
        f"--context {config.context} --horizon {config.horizon} --patch {config.patch}",
        f"--d-model {config.d_model} --layers {config.layers} --heads {config.heads}",
    ]
    if not config.use_seasonal:
        parts.append("--no-seasonal")
    if clean_targets:
        parts.append("--clean-targets")
    if init_from is not None:
        parts.append(f"--init-from {init_from}")
    return " ".join(parts)


class _Schedule:
    """Linear warm-up, then cosine to 5% over ``scheduled`` steps: ``steps``, or with a
    time budget what the speed timed over the warm-up's last 80% allows (the pipeline
    is full by then, and the warm-up's rate does not depend on the length). Only the
    step, never the clock, sets the rate, so ``--steps <scheduled>`` reproduces a run."""

    def __init__(self, steps: int, warmup: int, budget_s: float) -> None:
        self.steps, self.warmup, self.budget_s = steps, warmup, budget_s
        self.scheduled = steps
        self.started = time.perf_counter()
        self._probe_from = max(1, warmup // 5)
        self._probe_started = math.nan

    def lr_factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        frac = min((step - self.warmup) / max(self.scheduled - self.warmup, 1), 1.0)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac))

    def observe(self, step: int, now: float) -> bool:
        """Note that ``step`` ended at ``now``; True when this fixed the schedule's length."""
        if step == self._probe_from:
            self._probe_started = now
        if step != self.warmup or not math.isfinite(self.budget_s) or self.steps <= step:
            return False
        per_step = (now - self._probe_started) / max(step - self._probe_from, 1)
        self.scheduled = scheduled_steps(
            self.steps, step, now - self.started, per_step, self.budget_s
        )
        return True

    def out_of_time(self, now: float) -> bool:
        return now - self.started > self.budget_s


def train(  # noqa: PLR0915
    config: ForecasterConfig,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    device: str | None = None,
    out_dir: str | Path = DEFAULT_WEIGHTS_DIR,
    lr: float = 2e-3,
    weight_decay: float = _WEIGHT_DECAY,
    warmup_steps: int | None = None,
    eval_every: int = 250,
    val_size: int = _VAL_SIZE,
    patience: int = 10,
    min_improvement: float = _MIN_IMPROVEMENT,
    max_minutes: float | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
    workers: int = 1,
    clean_targets: bool = False,
) -> TrainReport:
    """Train ``config`` for up to ``steps`` steps and write the best weights to ``out_dir``."""
    if steps <= 0 or batch_size <= 0 or workers <= 0:
        raise ValueError("steps, batch_size and workers must be positive")
    started = time.perf_counter()
    torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = Forecaster(config)
    if init_from is not None:  # fine-tune: start from an existing artefact of the same shape
        from plugin_backend.adapters.artifacts import load_model

        start_model, _meta = load_model(init_from)
        if start_model.config != config:
            raise ValueError(f"{init_from} has config {start_model.config}, not {config}")
        model.load_state_dict(start_model.state_dict())
    model = model.to(dev)
    model.train()
    val_seed = seed + _VAL_SEED_OFFSET
    val_batch = generate_windows(
        val_size, config.context, config.horizon, seed=val_seed, clean_targets=clean_targets
    )
    val = _tensors(_normalised(val_batch), dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = warmup_steps if warmup_steps is not None else min(200, max(steps // 20, 1))

    # The CLI sets every knob but these; with others the run has no command to repeat it.
    cli_defaults = (weight_decay, val_size, min_improvement) == (
        _WEIGHT_DECAY,
        _VAL_SIZE,
        _MIN_IMPROVEMENT,
    )
    schedule = _Schedule(steps, warmup, max_minutes * 60 if max_minutes is not None else math.inf)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule.lr_factor)
    curve: list[tuple[int, float]] = []
    best = math.inf
    best_step = 0
    best_state = copy.deepcopy(model.state_dict())
    best_metrics: dict[str, float] = {}
    bad_evals = 0
    stopped_early = False
    out_of_time = False
    step = 0
    running = math.nan
    bar = tqdm(total=steps, disable=not progress, desc="train", unit="step")
    stream = _batches(
        seed,
        batch_size,
        config.context,
        config.horizon,
        steps=steps,
        workers=workers,
        clean_targets=clean_targets,
    )
    try:
        for step, arrays in enumerate(stream, start=1):
            x, s, target = _tensors(arrays, dev)
            loss = pinball_loss(model(x, s), target, config.quantiles, clip=_TARGET_CLIP)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            value = float(loss.detach())
            running = value if math.isnan(running) else 0.98 * running + 0.02 * value
            bar.update(1)
            if schedule.observe(step, time.perf_counter()):
                bar.total = schedule.scheduled
            out_of_time = schedule.out_of_time(time.perf_counter())
            if step % eval_every == 0 or step == schedule.scheduled or out_of_time:
                metrics = _evaluate(model, val)
                current = metrics["val_pinball"]
                curve.append((step, current))
                bar.set_postfix(loss=f"{running:.4f}", val=f"{current:.4f}")
                if current < best * (1.0 - min_improvement):
                    bad_evals = 0
                else:
                    bad_evals += 1
                if current < best:
                    best, best_step, best_metrics = current, step, metrics
                    best_state = copy.deepcopy(model.state_dict())
                if bad_evals >= patience:
                    stopped_early = True
                    break
            if out_of_time or step == schedule.scheduled:
                stopped_early = step < steps
                break
    finally:
        stream.close()
        bar.close()
    elapsed = time.perf_counter() - started
    model.load_state_dict(best_state)
    final_metrics = {**best_metrics, "train_loss_ema": running}
    meta: dict[str, Any] = {
        "config": config.to_dict(),
        "training": {
            "steps_requested": steps,
            "steps_scheduled": schedule.scheduled,
            "steps_run": step,
            "best_step": best_step,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup_steps": warmup,
            "schedule": "linear warm-up + cosine to 5% over steps_scheduled",
            "max_minutes": max_minutes,
            "stopped_by_clock": out_of_time,
            "reproduce": ""
            if not cli_defaults
            else _reproduce_command(
                config,
                steps=schedule.scheduled,
                warmup=warmup,
                batch_size=batch_size,
                seed=seed,
                lr=lr,
                eval_every=eval_every,
                patience=patience,
                init_from=init_from,
                clean_targets=clean_targets,
            ),
            "data": "batch k from default_rng([seed, k]); validation from seed + 1000003",
            "workers": workers,
            "eval_every": eval_every,
            "patience": patience,
            "val_size": val_size,
            "val_seed": val_seed,
            "stopped_early": stopped_early,
            "device": str(dev),
            "elapsed_s": round(elapsed, 1),
            "corpus": "plugin_backend.training.corpus (synthetic only)",
            "clean_targets": clean_targets,
            "init_from": str(init_from) if init_from is not None else None,
        },
        "seed": seed,
        "parameters": model.parameter_count(),
        "metrics": final_metrics,
        "validation_curve": [[s_, round(v, 6)] for s_, v in curve],
        "torch_version": torch.__version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cpu_state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    weights_path, meta_path = save_model(cpu_state, meta, out_dir)
    return TrainReport(
        steps_run=step,
        best_step=best_step,
        best_val_loss=best,
        final_val_loss=curve[-1][1] if curve else math.nan,
        metrics=final_metrics,
        curve=curve,
        elapsed_s=elapsed,
        weights_path=weights_path,
        meta_path=meta_path,
        stopped_early=stopped_early,
        reproduce=meta["training"]["reproduce"],
    )


def build_train_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="plugin-backend train", description="train the transformer forecaster"
    )
    defaults = ForecasterConfig()
    p.add_argument("--steps", type=int, default=20_000, help="maximum optimiser steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS_DIR, help="output directory")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: min(200, steps / 20)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--context", type=int, default=defaults.context)
    p.add_argument("--horizon", type=int, default=defaults.horizon)
    p.add_argument("--patch", type=int, default=defaults.patch)
    p.add_argument("--d-model", type=int, default=defaults.d_model)
    p.add_argument("--layers", type=int, default=defaults.layers)
    p.add_argument("--heads", type=int, default=defaults.heads)
    p.add_argument("--no-seasonal", action="store_true", help="disable the seasonal channel")
    p.add_argument("--init-from", type=Path, default=None, help="fine-tune from this artefact")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--workers", type=int, default=1, help="processes that generate batches (same result)"
    )
    p.add_argument(
        "--clean-targets",
        action="store_true",
        help="leave target points hit by an injected anomaly out of the loss",
    )
    return p


def main_train(argv: list[str] | None) -> int:
    """``plugin-backend train``: parse ``argv``, train, print a summary; returns exit code."""
    args = build_train_parser().parse_args(argv)
    config = ForecasterConfig(
        context=args.context,
        horizon=args.horizon,
        patch=args.patch,
        d_model=args.d_model,
        layers=args.layers,
        heads=args.heads,
        ff=2 * args.d_model,
        use_seasonal=not args.no_seasonal,
    )
    report = train(
        config,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        out_dir=args.out,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        eval_every=args.eval_every,
        patience=args.patience,
        max_minutes=args.max_minutes,
        progress=not args.quiet,
        init_from=args.init_from,
        workers=args.workers,
        clean_targets=args.clean_targets,
    )
    print(
        f"trained {report.steps_run} steps in {report.elapsed_s:.0f}s; best val pinball "
        f"{report.best_val_loss:.4f} at step {report.best_step}; wrote {report.weights_path}"
    )
    if report.reproduce:
        print(f"to repeat this run step for step: {report.reproduce}")
    return 0
