"""The one optimisation loop every stage uses: AdamW, warm-up, clipping, time/step budget, checkpoints."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rgbacli.errors import RgbaError
from rgbacli.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class LoopConfig:
    """Budget (whichever of steps / minutes ends first) and optimiser settings of a stage."""

    steps: int = 100_000
    minutes: float = 10.0
    lr: float = 1e-3
    warmup: int = 50
    clip: float = 1.0
    decay: float = 1.0  # final lr as a fraction of `lr`, reached by a cosine over the budget (1 = constant)
    ckpt_every: int = 100
    seed: int = 0


def lr_at(cfg: LoopConfig, step: int, elapsed: float) -> float:
    """Linear warm-up, then a cosine from `lr` to `decay`·lr over whichever budget (steps or minutes)
    is further spent: stages are time-bound, so the schedule follows the clock as well."""
    done = min(1.0, max(step / cfg.steps, elapsed / (60 * cfg.minutes)))
    ratio = cfg.decay + (1 - cfg.decay) * 0.5 * (1 + math.cos(math.pi * done))
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup)) * ratio


def run_loop(params: dict[str, torch.nn.Parameter], loss_fn: Callable[[int, torch.Generator], torch.Tensor],
             cfg: LoopConfig, ckpt: Path, resume: bool = False, log=None) -> dict:
    """Minimise `loss_fn(step, generator)` over `params`; `--resume` restores weights, moments and step."""
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = 0
    if resume:
        if not ckpt.exists():
            raise RgbaError(f"{ckpt} does not exist: nothing to resume")
        step, _ = load_checkpoint(ckpt, params, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0, ema, history = time.perf_counter(), None, []
    while step < cfg.steps and time.perf_counter() - t0 < cfg.minutes * 60:
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step, time.perf_counter() - t0)
        loss = loss_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), cfg.clip)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if log:
            log(step, cfg.steps, ema)
        if step % cfg.ckpt_every == 0:
            save_checkpoint(ckpt, params, opt, step)
            history.append((step, ema))
    save_checkpoint(ckpt, params, opt, step)
    return {"steps": step, "loss_ema": ema, "seconds": time.perf_counter() - t0, "history": history}
