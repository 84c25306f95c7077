"""Stage 3 (Wan-Alpha): merge block + RGB/alpha decoder LoRAs on the frozen base VAE."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rgbacli.train.checkpoint import load_checkpoint, save_checkpoint
from rgbacli.train.vae_losses import vae_train_step


@dataclass
class RGBAVAEConfig:
    steps: int = 100_000
    minutes: float = 12.0
    batch: int = 4
    window: int = 5
    image_batch: int = 12  # every other step: single frames (the causal VAE's first-frame path), ~5x cheaper
    lr: float = 1e-3
    ckpt_every: int = 100
    seed: int = 0


def train_rgba_vae(model, source, cfg: RGBAVAEConfig, ckpt: Path, resume: bool = False, log=None) -> dict:
    """Train only the merge block and LoRAs with the paper's losses (L1 + perceptual + edge ×3 views)."""
    model.train()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = 0
    if resume and ckpt.exists():
        step, _ = load_checkpoint(ckpt, params, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0, ema = time.perf_counter(), None
    while step < cfg.steps and time.perf_counter() - t0 < cfg.minutes * 60:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / 50)
        if step % 2 and cfg.image_batch:
            rgba, _ = source.batch(cfg.image_batch, window=1)
        else:
            rgba, _ = source.batch(cfg.batch, window=cfg.window)
        losses = vae_train_step(model, rgba, opt, gen)
        step += 1
        ema = losses["loss"] if ema is None else 0.95 * ema + 0.05 * losses["loss"]
        if log:
            log(step, cfg.steps, ema)
        if step % cfg.ckpt_every == 0:
            save_checkpoint(ckpt, params, opt, step)
    save_checkpoint(ckpt, params, opt, step)
    model.eval()
    return {"steps": step, "loss_ema": ema, "seconds": time.perf_counter() - t0}
