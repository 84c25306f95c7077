"""Rectified-flow training pieces shared by the DiT stages: noising, targets, timestep sampling."""

from __future__ import annotations

import torch


def sample_timesteps(n: int, generator: torch.Generator, shift: float = 3.0) -> torch.Tensor:
    """t in (0, 1): logit-normal, then the same shift the sampler uses, so high noise (where layout
    and motion are decided) gets as much training as the sampler spends there."""
    u = torch.sigmoid(torch.randn(n, generator=generator))
    return shift * u / (1 + (shift - 1) * u)


def noisy_input(z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Z_t = t·ε + (1−t)·Z and the velocity target v = ε − Z (Wan-Alpha / rectified flow)."""
    tt = t.view(-1, *([1] * (z.dim() - 1)))
    return tt * noise + (1 - tt) * z, noise - z
