"""Stage 1: the base video VAE (tiny AutoencoderKLWan) on RGB renders of RGBA clips.

Wan-Alpha starts from a pretrained RGB VAE; ours learns the same job on what the RGBA stage will
feed it: clips soft-rendered over random colours, hard-rendered over the 8 cube-corner colours,
and alpha shown as grey. Loss: L1 + edge (gradient) L1 on the reconstruction of the posterior
mean (the latent the later stages use; sampling with the untrained posterior's unit std drowns
the signal and stalls a small VAE), plus a tiny KL that keeps the latent scale in check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rgbacli.models.rgba_vae import COLORS, count_cache_slots, fill_latent_stats, hard_render, soft_render
from rgbacli.train.checkpoint import trainable
from rgbacli.train.loop import LoopConfig, run_loop
from rgbacli.train.vae_losses import edge_loss


@dataclass
class BaseVAEConfig(LoopConfig):
    minutes: float = 12.0
    batch: int = 8
    window: int = 9  # 4k+1 frames: two cached chunks after frame 0, so streaming through the cache is trained
    kl: float = 1e-6
    edge: float = 0.5


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
    """Optimise the whole VAE (see the module docstring for the loss)."""
    vae.train().requires_grad_(True)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        rgba, _ = source.batch(cfg.batch, window=cfg.window)
        x = rgb_views(rgba, gen) * 2 - 1
        post = vae.encode(x).latent_dist
        rec = decode_unclamped(vae, post.mean)
        return (rec - x).abs().mean() + cfg.edge * edge_loss((rec + 1) / 2, (x + 1) / 2) + cfg.kl * post.kl().mean()

    result = run_loop(trainable(vae), loss_fn, cfg, ckpt, resume, log)
    vae.eval().requires_grad_(False)
    return result


@torch.no_grad()
def latent_stats(encode, source, n: int = 64, batch: int = 8) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of `encode(rgba) -> raw latents` over n clips (for normalisation)."""
    zs = []
    for _ in range(0, n, batch):
        rgba, _ = source.batch(batch)
        zs.append(encode(rgba))
    z = torch.cat(zs).transpose(0, 1).flatten(1)
    return z.mean(1).tolist(), z.std(1).clamp_min(1e-3).tolist()
