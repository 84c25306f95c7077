"""Quality metrics shared by the benchmarks: RGBA VAE reconstruction on held-out procedural clips."""

from __future__ import annotations

import numpy as np
import torch

from rgbacli.data import ProceduralDataset


@torch.no_grad()
def vae_reconstruction(vae, n: int = 32, size: int = 64, frames: int = 17) -> dict:
    """Alpha IoU (α>0.5), alpha MAE and RGB PSNR on opaque pixels (α>0.99) of encode→decode,
    averaged over n held-out clips (seeds never used in training)."""
    ds = ProceduralDataset(split="heldout", length=n, size=size, frames=frames)
    ious, maes, psnrs = [], [], []
    for i in range(n):
        x = ds[i].video_tensor()[None]
        y = vae.decode(vae.encode(x))[0]
        a, b = x[0, 3], y[3]
        union = ((a > 0.5) | (b > 0.5)).sum().item()
        ious.append(((a > 0.5) & (b > 0.5)).sum().item() / union if union else 1.0)
        maes.append((a - b).abs().mean().item())
        opaque = a > 0.99
        if opaque.any():
            mse = ((x[0, :3] - y[:3]) ** 2)[:, opaque].mean().item()
            psnrs.append(10 * np.log10(1.0 / max(mse, 1e-10)))
    return {"clips": n, "alpha_iou": float(np.mean(ious)), "alpha_mae": float(np.mean(maes)),
            "rgb_psnr_opaque_db": float(np.mean(psnrs)) if psnrs else None}
