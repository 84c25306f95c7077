"""Stage 1: the base video VAE (tiny AutoencoderKLWan) on RGB renders of RGBA clips.

Wan-Alpha starts from a pretrained RGB VAE; ours learns the same job on what the RGBA stage will
feed it: clips soft-rendered over random colours, hard-rendered over the 8 cube-corner colours,
and alpha shown as grey. Loss: L1 + edge (gradient) L1 on the reconstruction of the posterior
mean (the latent the later stages use; sampling with the untrained posterior's unit std drowns
the signal and stalls a small VAE), plus a tiny KL that keeps the latent scale in check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rgbacli.models.rgba_vae import COLORS, count_cache_slots, fill_latent_stats, hard_render, soft_render
from rgbacli.train.checkpoint import load_checkpoint, save_checkpoint, trainable
from rgbacli.train.vae_losses import edge_loss


@dataclass
class BaseVAEConfig:
    steps: int = 100_000
    minutes: float = 12.0
    batch: int = 8
    window: int = 5  # frames per training clip (4k+1); the causal VAE runs on any 4k+1 length
    lr: float = 1e-3
    kl: float = 1e-6
    edge: float = 0.5
    ckpt_every: int = 100
    seed: int = 0


def rgb_views(rgba: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per sample one of: soft render over a random colour, hard render over a corner colour, alpha as grey."""
    b = rgba.shape[0]
    corners = torch.tensor(list(COLORS.values()))
    kind = torch.randint(0, 3, (b,), generator=gen)
    soft = soft_render(rgba, torch.rand(b, 3, generator=gen))
    hard = hard_render(rgba, corners[torch.randint(0, 8, (b,), generator=gen)])
    grey = rgba[:, 3:4].expand(-1, 3, -1, -1, -1)
    pick = kind.view(-1, 1, 1, 1, 1)
    return torch.where(pick == 0, soft, torch.where(pick == 1, hard, grey))


def decode_unclamped(vae, z: torch.Tensor) -> torch.Tensor:
    """Decode latent frame by latent frame with the causal cache, without diffusers' final clamp to
    [-1, 1]: a clamped pixel gets no gradient, and a young VAE has many that never recover."""
    cache = [None] * count_cache_slots(vae.decoder)
    x = vae.post_quant_conv(z)
    frames = [vae.decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], first_chunk=(i == 0))
              for i in range(x.shape[2])]
    return torch.cat(frames, dim=2)


def new_base_vae(config: dict):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(**fill_latent_stats(config))


def train_base_vae(vae, source, cfg: BaseVAEConfig, ckpt: Path, resume: bool = False, log=None) -> dict:
    """Optimise the whole VAE; returns step count and the smoothed reconstruction L1."""
    vae.train().requires_grad_(True)
    params = trainable(vae)
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = 0
    if resume and ckpt.exists():
        step, _ = load_checkpoint(ckpt, params, opt)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    t0, ema = time.perf_counter(), None
    while step < cfg.steps and time.perf_counter() - t0 < cfg.minutes * 60:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / 50)
        rgba, _ = source.batch(cfg.batch, window=cfg.window)
        x = rgb_views(rgba, gen) * 2 - 1
        post = vae.encode(x).latent_dist
        rec = decode_unclamped(vae, post.mean)
        l1 = (rec - x).abs().mean()
        loss = l1 + cfg.edge * edge_loss((rec + 1) / 2, (x + 1) / 2) + cfg.kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        step += 1
        ema = l1.item() if ema is None else 0.95 * ema + 0.05 * l1.item()
        if log:
            log(step, cfg.steps, ema)
        if step % cfg.ckpt_every == 0:
            save_checkpoint(ckpt, params, opt, step)
    save_checkpoint(ckpt, params, opt, step)
    vae.eval().requires_grad_(False)
    return {"steps": step, "l1_ema": ema, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def latent_stats(encode, source, n: int = 64, batch: int = 8) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of `encode(rgba) -> raw latents` over n clips (for normalisation)."""
    zs = []
    for _ in range(0, n, batch):
        rgba, _ = source.batch(batch)
        zs.append(encode(rgba))
    z = torch.cat(zs).transpose(0, 1).flatten(1)
    return z.mean(1).tolist(), z.std(1).clamp_min(1e-3).tolist()
