"""Pre-encoded training latents: the DiT stages train on cached VAE latents, not on pixels.

Encoding once (rather than every step) keeps the CPU on the DiT. Each set also holds still
versions of some clips (one frame repeated) for GenTron's motion-free training, and, for sets
encoded here, each clip's object mask on the latent grid (for an object-weighted flow loss).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def latent_object_mask(alpha: torch.Tensor, grid: tuple[int, int, int], copies: int = 1) -> torch.Tensor:
    """Alpha (B, 1, T, H, W) max-pooled onto a latent grid (t, h, w): 1 where any pixel of the cell
    shows the object, even faintly. ``copies`` 2 is the alpha-token layout: the clip's frames twice."""
    t, h, w = grid
    mask = F.adaptive_max_pool3d(alpha.float(), (t // copies, h, w))
    return mask.repeat(1, 1, copies, 1, 1)


@dataclass
class LatentSet:
    """Latents (N, C, t, h, w), captions, still-clip latents for a subset (motion-free dropout) and,
    optionally, object masks (N, 1, t, h, w) for both (:func:`latent_object_mask`)."""

    latents: torch.Tensor
    captions: list[str]
    still: torch.Tensor
    still_captions: list[str]
    masks: torch.Tensor | None = None
    still_masks: torch.Tensor | None = None

    def save(self, path: Path) -> None:
        tensors = {"latents": self.latents, "still": self.still}
        if self.masks is not None:
            tensors.update(masks=self.masks.half(), still_masks=self.still_masks.half())
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                  metadata={"captions": json.dumps(self.captions), "still_captions": json.dumps(self.still_captions)})

    @classmethod
    def load(cls, path: Path) -> "LatentSet":
        from safetensors import safe_open

        t = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        masks = (t["masks"].float(), t["still_masks"].float()) if "masks" in t else (None, None)
        return cls(t["latents"], json.loads(meta["captions"]), t["still"], json.loads(meta["still_captions"]), *masks)


@torch.no_grad()
def encode_procedural(encode, n: int, *, seed0: int, size: int, frames: int, still_fraction: float = 0.15,
                      batch: int = 16, progress=None, split: str = "train", mask_copies: int = 1) -> LatentSet:
    """Draw n procedural clips (train split), encode them with `encode(rgba (B,4,T,H,W)) -> z`, and
    keep their object masks on the latent grid (``mask_copies`` as in :func:`latent_object_mask`)."""
    from rgbacli.data import ProceduralDataset

    ds = ProceduralDataset(split=split, size=size, frames=frames, base=seed0)
    rng = np.random.default_rng(seed0)
    zs, caps, still_z, still_caps, masks, still_masks = [], [], [], [], [], []
    n_still = int(round(n * still_fraction))
    for start in range(0, n, batch):
        samples = [ds[i] for i in range(start, min(n, start + batch))]
        rgba = torch.from_numpy(np.stack([s.rgba for s in samples])).permute(0, 4, 1, 2, 3).float()
        zs.append(encode(rgba))
        masks.append(latent_object_mask(rgba[:, 3:], zs[-1].shape[2:], mask_copies))
        caps += [s.caption for s in samples]
        if start < n_still:
            k = int(rng.integers(0, frames))
            still = rgba[:, :, k:k + 1].expand(-1, -1, frames, -1, -1).contiguous()
            still_z.append(encode(still))
            still_masks.append(latent_object_mask(still[:, 3:], still_z[-1].shape[2:], mask_copies))
            still_caps += [s.caption for s in samples]
        if progress:
            progress(min(n, start + batch), n)
    still_z = torch.cat(still_z) if still_z else torch.zeros(0)
    still_m = torch.cat(still_masks) if still_masks else torch.zeros(0)
    return LatentSet(torch.cat(zs), caps, still_z, still_caps, torch.cat(masks), still_m)
