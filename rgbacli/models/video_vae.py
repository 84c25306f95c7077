"""A plain RGB video VAE (Wan or CogVideoX) behind the RGBA VAE's geometry attributes.

The alpha-token backend (TransPixar) decodes its RGB half and its alpha half with it; latents
are normalised by the VAE's own statistics (rgbacli/models/latent_norm.py).
"""

from __future__ import annotations

import torch
from torch import nn

from rgbacli.models.latent_norm import LatentNorm


class PlainVideoVAE(nn.Module):
    """`encode_rgb` / `decode_rgb` on normalised latents, plus temporal/spatial factors and z_dim."""

    def __init__(self, vae: nn.Module, family: str):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.family = family
        cfg = vae.config
        if family == "wan":
            self.temporal_factor = 2 ** sum(bool(t) for t in cfg.temperal_downsample)
            self.spatial_factor = 2 ** (len(cfg.dim_mult) - 1)
            self.latent_channels = cfg.z_dim
            self.latent_norm = LatentNorm.of_wan(cfg)
        else:  # CogVideoX: one scaling factor
            self.temporal_factor = cfg.temporal_compression_ratio
            self.spatial_factor = 2 ** (len(cfg.block_out_channels) - 1)
            self.latent_channels = cfg.latent_channels
            self.latent_norm = LatentNorm.of_cogvideox(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) in [0,1] → normalised latent mean."""
        mu = self.vae.encode(rgb.to(self.dtype) * 2 - 1).latent_dist.mode()
        return self.latent_norm.normalize(mu.float())

    @torch.no_grad()
    def decode_rgb(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents → (B,3,T,H,W) in [0,1]."""
        x = self.latent_norm.denormalize(z.float()).to(self.dtype)
        return ((self.vae.decode(x).sample.float() + 1) / 2).clamp(0, 1)
