"""DiT training by rectified flow (stages 2 and 4): text CFG dropout and motion-free dropout.

Stage 2 trains the whole base DiT and the tiny text encoder on RGB latents; stage 4 trains only a
DoRA adapter on RGBA latents from the RGBA VAE (the Wan-Alpha recipe), text encoder frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rgbacli.backends import Backend
from rgbacli.data.captions import leave_out
from rgbacli.models.motion_free import enable_motion_free
from rgbacli.train.base_vae import object_weights
from rgbacli.train.flow import noisy_input, sample_timesteps
from rgbacli.train.latents import LatentSet
from rgbacli.train.loop import LoopConfig, run_loop


@dataclass
class DiTTrainConfig(LoopConfig):
    """A DiT stage: `minutes` bounds wall time, `steps` bounds updates (whichever ends first)."""

    minutes: float = 30.0
    lr: float = 3e-4
    decay: float = 0.1
    warmup: int = 100
    ckpt_every: int = 250
    batch: int = 16
    p_uncond: float = 0.1
    p_motion_free: float = 0.1
    p_short: float = 0.0  # captions with colour / material / motion words left out (data.captions.leave_out)
    t_shift: float = 3.0
    # Weight of the flow loss on latent cells that show an object, over 1 elsewhere (needs the data's
    # masks). Objects cover a few % of the frame, so plain MSE is mostly about empty background.
    object_weight: float = 0.0


ATTRIBUTES = ("colour", "material", "motion")


def shorten(caption: str, gen: torch.Generator) -> str:
    """Leave out one of the 7 non-empty subsets of the caption's attributes, drawn uniformly."""
    bits = int(torch.randint(1, 2 ** len(ATTRIBUTES), (1,), generator=gen))
    return leave_out(caption, [a for i, a in enumerate(ATTRIBUTES) if bits >> i & 1])


def train_dit(backend: Backend, text_encoder: torch.nn.Module, data: LatentSet,
              params: dict[str, torch.nn.Parameter], cfg: DiTTrainConfig, ckpt: Path,
              resume: bool = False, log=None) -> dict:
    """Optimise `params` (the trainable subset of `backend.transformer`) by rectified flow, calling the
    DiT as the sampler does (`backend.predict`); checkpoints to `ckpt`."""
    transformer = backend.transformer
    weighted = cfg.object_weight > 0
    if weighted and data.masks is None:
        raise ValueError("object_weight needs latents encoded with object masks (re-encode the cache)")
    ctl = enable_motion_free(transformer)
    transformer.train()
    text_encoder.train(any(p.requires_grad for p in text_encoder.parameters()))
    n, n_still = len(data.captions), len(data.still_captions)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        z = data.latents[idx]  # integer indexing copies, so the still swap below leaves the set alone
        mask = data.masks[idx] if weighted else None
        captions = [data.captions[i] for i in idx.tolist()]
        still = torch.zeros(cfg.batch, dtype=torch.bool)
        if n_still and cfg.p_motion_free > 0:  # GenTron: a still clip, attention kept within frames
            still = torch.rand(cfg.batch, generator=gen) < cfg.p_motion_free
            for j in still.nonzero().flatten().tolist():
                k = int(torch.randint(0, n_still, (1,), generator=gen))
                z[j], captions[j] = data.still[k], data.still_captions[k]
                if weighted:
                    mask[j] = data.still_masks[k]
        if cfg.p_short > 0:  # prompts as people write them: "a glass jellyfish"
            short = (torch.rand(cfg.batch, generator=gen) < cfg.p_short).tolist()
            captions = [shorten(c, gen) if s else c for c, s in zip(captions, short)]
        drop = torch.rand(cfg.batch, generator=gen) < cfg.p_uncond  # text dropout for CFG
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        t = sample_timesteps(cfg.batch, gen, cfg.t_shift)
        x_t, target = noisy_input(z, torch.randn(z.shape, generator=gen), t)
        text = text_encoder.encode(captions, warn=False)[0]
        with ctl.motion_off(still):
            pred = backend.predict(x_t, t * 1000, text)
        if weighted:
            return (object_weights(mask, cfg.object_weight) * (pred.float() - target) ** 2).mean()
        return F.mse_loss(pred.float(), target)

    try:
        return run_loop(params, loss_fn, cfg, ckpt, resume, log)
    finally:
        ctl.remove()
        transformer.eval()
        text_encoder.eval()


@torch.no_grad()
def eval_loss(backend: Backend, text_encoder: torch.nn.Module, data: LatentSet, n: int = 32,
              seed: int = 1234, t_shift: float = 3.0, object_weight: float = 0.0) -> float:
    """Rectified-flow loss on the first n clips with fixed noise and timesteps (comparable across runs);
    with `object_weight`, the object-weighted loss that stage trains on."""
    gen = torch.Generator().manual_seed(seed)
    z = data.latents[:n]
    t = sample_timesteps(z.shape[0], gen, t_shift)
    x_t, target = noisy_input(z, torch.randn(z.shape, generator=gen), t)
    transformer = backend.transformer
    was_training = transformer.training
    transformer.eval()
    text = text_encoder.encode(data.captions[:n], warn=False)[0]
    pred = backend.predict(x_t, t * 1000, text)
    transformer.train(was_training)
    if object_weight:
        return (object_weights(data.masks[:n], object_weight) * (pred.float() - target) ** 2).mean().item()
    return F.mse_loss(pred.float(), target).item()
