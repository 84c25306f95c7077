"""Latent normalisation: the one place latents are (de)normalised by a VAE's per-channel statistics.

The DiT samples normalised latents `(μ − mean) / std`; decoders take `z · std + mean`. The RGBA
VAE, the plain video VAE of the alpha-token backend and the training caches all go through
:class:`LatentNorm`, so the convention cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


# The Wan 2.1 VAE's published latent statistics (diffusers' AutoencoderKLWan defaults, the
# reference's `WanVAE.mean/std`): a 16-channel Wan latent is normalised with these.
WAN21_LATENTS_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


def fill_latent_stats(vae_config: dict) -> dict:
    """Copy of a Wan VAE config whose latents_mean/std match z_dim. Missing or mismatched stats:
    the Wan 2.1 values for z_dim 16 (a real Wan latent space), identity for any other z_dim (e.g.
    the tiny VAE, which keeps the 16-channel Wan defaults but has z_dim=8)."""
    cfg = dict(vae_config)
    z = int(cfg.get("z_dim", 16))
    if len(cfg.get("latents_mean") or []) != z or len(cfg.get("latents_std") or []) != z:
        if z == len(WAN21_LATENTS_MEAN):
            cfg["latents_mean"], cfg["latents_std"] = list(WAN21_LATENTS_MEAN), list(WAN21_LATENTS_STD)
        else:
            cfg["latents_mean"], cfg["latents_std"] = [0.0] * z, [1.0] * z
    return cfg


class LatentNorm(nn.Module):
    """Per-channel mean/std of a latent space, as non-persistent (1, C, 1, 1, 1) buffers."""

    def __init__(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)

    @classmethod
    def of_wan(cls, config) -> "LatentNorm":
        """From a Wan VAE config's `latents_mean` / `latents_std`."""
        return cls(config["latents_mean"], config["latents_std"])

    @classmethod
    def of_cogvideox(cls, config) -> "LatentNorm":
        """CogVideoX's VAE scales latents by one factor: mean 0, std 1/scaling_factor."""
        c = config["latent_channels"]
        return cls(torch.zeros(c), torch.full((c,), 1.0 / config["scaling_factor"]))

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Replace the statistics in place (training measures them after the fact)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1))

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """Raw VAE latent → the normalised latent the DiT sees."""
        return (mu - self.mean.to(mu)) / self.std.to(mu)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latent → raw latent for the decoder."""
        return z * self.std.to(z) + self.mean.to(z)
