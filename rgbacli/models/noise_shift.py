"""Wan-Alpha v2.0's training-free placement: the initial noise's mean shifted outside a Gaussian mask.

    noise ← noise + (1 − g) · shift        g (t, h, w) in [0, 1], broadcast over channels

``g`` is 1 where the object should be and falls off as a Gaussian ellipse around it; Wan-Alpha v2
ships a static or moving ellipse (21×96×170) and resizes it bilinearly to the latent grid. Here the
ellipse is drawn on the latent grid directly, one per latent frame, centred on the path (several
objects: the maximum of their masks). The reference's shift is 0.03 (argparse) / 0.05 (README).

Written for `--trajectory-method noise` (#19); the `--alpha-shift` option (#16) can share
:func:`shift_noise` with a static mask.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["ellipse_mask", "path_mask", "shift_noise"]


def ellipse_mask(centres: torch.Tensor, grid: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    """Gaussian ellipses (t, h, w), peak 1, centred at ``centres`` (t, 2) x/y in latent cells (cell j has
    x = j), standard deviations ``sigma`` (x, y) in cells."""
    h, w = grid
    ys = torch.arange(h, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32)[None, None, :]
    cx, cy = centres[:, 0, None, None].float(), centres[:, 1, None, None].float()
    return torch.exp(-0.5 * (((xs - cx) / sigma[0]) ** 2 + ((ys - cy) / sigma[1]) ** 2))


def path_mask(tracks: Sequence[torch.Tensor], latent_frames: int, temporal_factor: int, spatial_factor: int,
              grid: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    """One mask (t, h, w) for pixel tracks (each (T, 2)): latent frame k sits at pixel frame k·tf (the
    causal VAE's first latent frame is frame 0 alone); pixel → cell is (p + 0.5)/sf − 0.5."""
    masks = []
    for track in tracks:
        track = torch.as_tensor(track, dtype=torch.float32)
        idx = torch.clamp(torch.arange(latent_frames) * temporal_factor, max=track.shape[0] - 1)
        cells = (track[idx] + 0.5) / spatial_factor - 0.5
        masks.append(ellipse_mask(cells, grid, sigma))
    return torch.stack(masks).amax(dim=0)


def shift_noise(noise: torch.Tensor, mask: torch.Tensor, shift: float,
                direction: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Wan-Alpha v2: ``noise + (1 − mask)·shift`` (the background's mean moved, every channel alike).
    With a per-channel ``direction`` (C,): ``noise + mask·shift·direction`` instead, the object region
    moved towards the latent of an object (a latent space's own calibration: for the tiny model the
    mean latent of object cells minus that of background cells, benchmarks/trajectory.py --calibrate).
    noise (B, C, T', h, w), mask (t, h, w) or (B, t, h, w) with T' a multiple of t (alpha tokens:
    ``[RGB ; alpha]`` copies share the mask)."""
    if mask.ndim == 3:
        mask = mask[None]
    copies = noise.shape[2] // mask.shape[1]
    if copies * mask.shape[1] != noise.shape[2]:
        raise ValueError(f"a mask of {mask.shape[1]} frames does not fit latents of {noise.shape[2]} frames")
    m = mask.repeat(1, copies, 1, 1)[:, None].to(noise.device, noise.dtype)
    if direction is None:
        return noise + (1 - m) * shift
    d = torch.as_tensor(direction, dtype=noise.dtype, device=noise.device)
    if d.numel() != noise.shape[1]:
        raise ValueError(f"a shift direction of {d.numel()} values does not fit {noise.shape[1]} latent channels")
    return noise + m * shift * d.view(1, -1, 1, 1, 1)
