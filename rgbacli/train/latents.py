"""Pre-encoded training latents: the DiT stages train on cached VAE latents, not on pixels.

Encoding once (rather than every step) keeps the CPU on the DiT. Each set also holds still
versions of some clips (one frame repeated) for GenTron's motion-free training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@dataclass
class LatentSet:
    """Latents (N, C, t, h, w), captions, and still-clip latents for a subset (motion-free dropout)."""

    latents: torch.Tensor
    captions: list[str]
    still: torch.Tensor
    still_captions: list[str]

    def save(self, path: Path) -> None:
        save_file({"latents": self.latents.contiguous(), "still": self.still.contiguous()}, str(path),
                  metadata={"captions": json.dumps(self.captions), "still_captions": json.dumps(self.still_captions)})

    @classmethod
    def load(cls, path: Path) -> "LatentSet":
        from safetensors import safe_open

        t = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        return cls(t["latents"], json.loads(meta["captions"]), t["still"], json.loads(meta["still_captions"]))


@torch.no_grad()
def encode_procedural(encode, n: int, *, seed0: int, size: int, frames: int, still_fraction: float = 0.15,
                      batch: int = 16, progress=None, split: str = "train") -> LatentSet:
    """Draw n procedural clips (train split), encode them with `encode(rgba (B,4,T,H,W)) -> z`."""
    from rgbacli.data import ProceduralDataset

    ds = ProceduralDataset(split=split, size=size, frames=frames, base=seed0)
    rng = np.random.default_rng(seed0)
    zs, caps, still_z, still_caps = [], [], [], []
    n_still = int(round(n * still_fraction))
    for start in range(0, n, batch):
        samples = [ds[i] for i in range(start, min(n, start + batch))]
        rgba = torch.from_numpy(np.stack([s.rgba for s in samples])).permute(0, 4, 1, 2, 3).float()
        zs.append(encode(rgba))
        caps += [s.caption for s in samples]
        if start < n_still:
            k = int(rng.integers(0, frames))
            still = rgba[:, :, k:k + 1].expand(-1, -1, frames, -1, -1).contiguous()
            still_z.append(encode(still))
            still_caps += [s.caption for s in samples]
        if progress:
            progress(min(n, start + batch), n)
    return LatentSet(torch.cat(zs), caps, torch.cat(still_z) if still_z else torch.zeros(0), still_caps)
