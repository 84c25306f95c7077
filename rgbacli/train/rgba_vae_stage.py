"""Stage 3 (Wan-Alpha): merge block + RGB/alpha decoder LoRAs on the frozen base VAE."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rgbacli.train.base_vae import cropped, object_crops
from rgbacli.train.loop import LoopConfig, run_loop
from rgbacli.train.vae_losses import PerceptualLoss, check_trainable, rgba_vae_losses


@dataclass
class RGBAVAEConfig(LoopConfig):
    minutes: float = 12.0
    decay: float = 0.1
    batch: int = 4
    window: int = 5  # frames per training window (whole clips were measured: docs/training.md)
    image_batch: int = 12  # every other step: single frames (the causal VAE's first-frame path), ~5x cheaper
    crop: int = 32  # object crops as in stage 1 (base_vae.object_crops), full frames on a quarter of the steps
    full_every: int = 4


def train_rgba_vae(model, source, cfg: RGBAVAEConfig, ckpt: Path, resume: bool = False, log=None,
                   perceptual: PerceptualLoss | None = None) -> dict:
    """Train only the merge block and LoRAs with the paper's losses (L1 + perceptual + edge, ×3 views)."""
    check_trainable(model)
    model.train()
    perceptual = perceptual or PerceptualLoss(vae=model)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        if step % 2 and cfg.image_batch:
            rgba, _ = source.batch(cfg.image_batch, window=1)
        else:
            rgba, _ = source.batch(cfg.batch, window=cfg.window)
        if cropped(step, cfg.crop, cfg.full_every):
            rgba = object_crops(rgba, cfg.crop, gen)
        return rgba_vae_losses(model(rgba, generator=gen), rgba, perceptual, gen)["loss"]

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    result = run_loop(params, loss_fn, cfg, ckpt, resume, log)
    model.eval()
    return result
