"""DiT training by rectified flow (stages 2 and 4): text CFG dropout and motion-free dropout.

Stage 2 trains the whole base DiT and the tiny text encoder on RGB latents; stage 4 trains only a
DoRA adapter on RGBA latents from the RGBA VAE (the Wan-Alpha recipe), text encoder frozen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rgbacli.models.motion_free import enable_motion_free
from rgbacli.train.checkpoint import load_checkpoint, save_checkpoint
from rgbacli.train.flow import noisy_input, sample_timesteps
from rgbacli.train.latents import LatentSet


@dataclass
class DiTTrainConfig:
    """Knobs of a DiT stage; `minutes` bounds wall time, `steps` bounds updates (whichever first)."""

    steps: int = 4000
    minutes: float = 30.0
    batch: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 100
    p_uncond: float = 0.1
    p_motion_free: float = 0.1
    t_shift: float = 3.0
    ckpt_every: int = 250
    seed: int = 0


def train_dit(transformer: torch.nn.Module, text_encoder: torch.nn.Module, data: LatentSet,
              params: dict[str, torch.nn.Parameter], cfg: DiTTrainConfig, ckpt: Path,
              resume: bool = False, log=None) -> dict:
    """Optimise `params` (the trainable subset) and return the final losses; checkpoints to `ckpt`."""
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    step = 0
    if resume and ckpt.exists():
        step, _ = load_checkpoint(ckpt, params, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + step + 1) / max(1, cfg.warmup)))
    transformer.train()
    text_encoder.train(any(p.requires_grad for p in text_encoder.parameters()))
    ctl = enable_motion_free(transformer)
    n, n_still = len(data.captions), len(data.still_captions)
    t_start, ema, history = time.perf_counter(), None, []
    while step < cfg.steps and (time.perf_counter() - t_start) < cfg.minutes * 60:
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        z = data.latents[idx].clone()
        captions = [data.captions[i] for i in idx.tolist()]
        still = torch.zeros(cfg.batch, dtype=torch.bool)
        if n_still and cfg.p_motion_free > 0:
            still = torch.rand(cfg.batch, generator=gen) < cfg.p_motion_free
            for j in still.nonzero().flatten().tolist():
                k = int(torch.randint(0, n_still, (1,), generator=gen))
                z[j], captions[j] = data.still[k], data.still_captions[k]
        drop = torch.rand(cfg.batch, generator=gen) < cfg.p_uncond
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        t = sample_timesteps(cfg.batch, gen, cfg.t_shift)
        noise = torch.randn(z.shape, generator=gen)
        x_t, target = noisy_input(z, noise, t)
        text = (text_encoder.encode(captions, warn=False) if _takes_warn(text_encoder) else
                text_encoder.encode(captions))[0]
        with ctl.motion_off(still):
            pred = transformer(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=text,
                               return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        sched.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if log:
            log(step, cfg.steps, ema)
        if step % cfg.ckpt_every == 0:
            save_checkpoint(ckpt, params, opt, step)
            history.append((step, ema))
    save_checkpoint(ckpt, params, opt, step)
    ctl.remove()
    transformer.eval()
    text_encoder.eval()
    return {"steps": step, "loss_ema": ema, "seconds": time.perf_counter() - t_start, "history": history}


@torch.no_grad()
def eval_loss(transformer: torch.nn.Module, text_encoder: torch.nn.Module, data: LatentSet, n: int = 32,
              seed: int = 1234, t_shift: float = 3.0) -> float:
    """Rectified-flow loss on the first n clips with fixed noise and timesteps (comparable across runs)."""
    gen = torch.Generator().manual_seed(seed)
    z = data.latents[:n]
    t = sample_timesteps(z.shape[0], gen, t_shift)
    x_t, target = noisy_input(z, torch.randn(z.shape, generator=gen), t)
    was_training = transformer.training
    transformer.eval()
    text = text_encoder.encode(data.captions[:n], warn=False)[0] if _takes_warn(text_encoder) else \
        text_encoder.encode(data.captions[:n])[0]
    pred = transformer(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=text, return_dict=False)[0]
    transformer.train(was_training)
    return F.mse_loss(pred.float(), target).item()


def _takes_warn(text_encoder) -> bool:
    import inspect

    return "warn" in inspect.signature(text_encoder.encode).parameters
