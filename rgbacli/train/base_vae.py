"""Stage 1: the base video VAE (tiny AutoencoderKLWan) on RGB renders of RGBA clips.

Wan-Alpha starts from a pretrained RGB VAE; ours learns the same job on what the RGBA stage will
feed it: clips soft-rendered over random colours, hard-rendered over the 8 cube-corner colours,
and alpha shown as grey. Loss: L1 + MSE + edge (gradient) L1 on the reconstruction of the posterior
mean (the latent the later stages use; sampling with the untrained posterior's unit std drowns
the signal and stalls a small VAE), plus a tiny KL that keeps the latent scale in check.

Two things decide whether the tiny VAE learns colour at all (measured: with lr 1e-3 and default
init it reconstructs luminance only, R = B for every input): the learning rate (3e-4, not 1e-3)
and a data-dependent init that gives the posterior mean unit scale, so the decoder sees a signal
it can use from step one; an MSE term next to the L1 (large colour errors on flat backgrounds then
pull hardest); and the first `image_steps` steps, then every other step, on single frames (the causal
VAE's first-frame path, ~5x cheaper), where colour is learned fastest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from rgbacli.data import ProceduralDataset
from rgbacli.models.latent_norm import fill_latent_stats
from rgbacli.models.rgba_vae import COLORS, count_cache_slots, hard_render, soft_render
from rgbacli.train.checkpoint import trainable
from rgbacli.train.loop import LoopConfig, run_loop
from rgbacli.train.vae_losses import edge_loss


@dataclass
class BaseVAEConfig(LoopConfig):
    minutes: float = 12.0
    lr: float = 1e-3
    decay: float = 0.1
    batch: int = 8
    image_batch: int = 16  # every other step (and every step before `image_steps`): single frames
    image_steps: int = 300
    mse: float = 1.0
    object_weight: float = 0.0  # pixel weight 1 + k·α: objects cover ~7% of a frame (0 = unweighted)
    crop: int = 32  # >0: crop×crop windows around an object pixel, but full frames on a quarter of the steps
    full_every: int = 4
    # 4k+1 frames: two cached chunks after frame 0, so streaming through the cache is trained. The tiny
    # preset makes 17; whole-clip windows were measured and not kept (docs/training.md).
    window: int = 9
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


def object_crops(rgba: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A size×size window per clip (the same for all its frames) around a random object pixel.

    Objects cover ~7% of a 64² frame, so full frames spend most of a step on flat background; convs
    are translation-equivariant, so crops that keep the object in view teach the same weights with
    ~4x the object pixels per FLOP."""
    b, _, _, h, w = rgba.shape
    if size >= min(h, w):
        return rgba
    seen = rgba[:, 3].amax(1) > 0.05  # (B, H, W): pixels the object touches in any frame
    out = []
    for i in range(b):
        ys, xs = torch.nonzero(seen[i], as_tuple=True)
        if len(ys):
            j = int(torch.randint(len(ys), (1,), generator=gen))
            cy, cx = int(ys[j]), int(xs[j])
        else:
            cy, cx = (int(torch.randint(n, (1,), generator=gen)) for n in (h, w))
        # the chosen pixel lands in the middle half of the window, clamped to the frame
        y0, x0 = (min(max(c - size // 4 - int(torch.randint(size // 2, (1,), generator=gen)), 0), n - size)
                  for c, n in ((cy, h), (cx, w)))
        out.append(rgba[i, :, :, y0:y0 + size, x0:x0 + size])
    return torch.stack(out)


def cropped(step: int, crop: int, full_every: int) -> bool:
    """Whether `step` trains on object crops: full frames on one pair of steps in `full_every`
    (one single-frame step and one video step, so both causal paths see whole frames)."""
    return bool(crop) and (step // 2) % full_every != full_every - 1


def object_weights(alpha: torch.Tensor, k: float) -> torch.Tensor:
    """Per-pixel loss weights 1 + k·α, rescaled to mean 1 so the loss scale (and lr) stay comparable."""
    w = 1 + k * alpha
    return w / w.mean()


@torch.no_grad()
def init_latent_scale(vae, x: torch.Tensor) -> None:
    """Rescale `quant_conv`'s mean half so the posterior mean of `x` has zero mean and unit std per
    channel (a fresh Wan encoder's is ~0.03, too faint for the decoder to pick up)."""
    z_dim = vae.config.z_dim
    mean = vae.quant_conv(vae.encoder(x))[:, :z_dim]
    mu, sd = mean.mean((0, 2, 3, 4)), mean.std((0, 2, 3, 4)).clamp_min(1e-6)
    vae.quant_conv.weight[:z_dim] /= sd.view(-1, 1, 1, 1, 1)
    vae.quant_conv.bias[:z_dim] = (vae.quant_conv.bias[:z_dim] - mu) / sd


def train_base_vae(vae, source, cfg: BaseVAEConfig, ckpt: Path, resume: bool = False, log=None) -> dict:
    """Optimise the whole VAE (see the module docstring for the loss and the init)."""
    vae.train().requires_grad_(True)
    if not (resume and ckpt.exists()):
        rgba, _ = source.batch(2 * cfg.image_batch, window=1)
        init_latent_scale(vae, rgb_views(rgba, torch.Generator().manual_seed(cfg.seed)) * 2 - 1)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        image = step % 2 == 1 or step < cfg.image_steps
        rgba, _ = source.batch(cfg.image_batch if image else cfg.batch, window=1 if image else cfg.window)
        if cropped(step, cfg.crop, cfg.full_every):
            rgba = object_crops(rgba, cfg.crop, gen)
        x = rgb_views(rgba, gen) * 2 - 1
        post = vae.encode(x).latent_dist
        rec = decode_unclamped(vae, post.mean)
        w = object_weights(rgba[:, 3:4], cfg.object_weight) if cfg.object_weight else 1.0
        err = rec - x
        return ((w * err.abs()).mean() + cfg.mse * (w * err.square()).mean()
                + cfg.edge * edge_loss((rec + 1) / 2, (x + 1) / 2) + cfg.kl * post.kl().mean())

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


@torch.no_grad()
def object_psnr(vae, n: int = 8, size: int = 64, frames: int = 17) -> float:
    """PSNR (dB) on object pixels (α > 0.5) of held-out clips soft-rendered over black: the check
    that catches a VAE which gets flat backgrounds right but blurs the small objects away."""
    ds = ProceduralDataset(split="heldout", length=n, size=size, frames=frames)
    values = []
    for i in range(n):
        rgba = ds[i].video_tensor()[None].float()
        x = soft_render(rgba, "black") * 2 - 1
        rec = decode_unclamped(vae, vae.encode(x).latent_dist.mode()).clamp(-1, 1)
        obj = rgba[0, 3] > 0.5
        if obj.any():
            mse = ((rec - x) / 2).square()[0][:, obj].mean().item()
            values.append(10 * math.log10(1 / max(mse, 1e-10)))
    return sum(values) / len(values) if values else float("nan")


@torch.no_grad()
def uniform_colour_error(vae, frames: int = 9, size: int = 32) -> float:
    """Mean |error| (0–1 scale) reconstructing flat clips of the 8 cube-corner colours and mid grey:
    the check that catches a VAE which kept luminance but lost chroma."""
    colours = torch.tensor(list(COLORS.values()) + [[0.5, 0.5, 0.5]], dtype=torch.float32)
    x = colours.view(-1, 3, 1, 1, 1).expand(-1, 3, frames, size, size) * 2 - 1
    rec = decode_unclamped(vae, vae.encode(x).latent_dist.mode()).clamp(-1, 1)
    return ((rec - x).abs().mean() / 2).item()
