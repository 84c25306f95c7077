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
from safetensors.torch import load_file

from rgbacli.data import HELDOUT_SEED_BASE, make_clip, ProceduralDataset
from rgbacli.errors import RgbaError
from rgbacli.weights.io import save_safetensors


def latent_object_mask(alpha: torch.Tensor, grid: tuple[int, int, int], copies: int = 1) -> torch.Tensor:
    """Alpha (B, 1, T, H, W) max-pooled onto a latent grid (t, h, w): 1 where any pixel of the cell
    shows the object, even faintly. ``copies`` 2 is the alpha-token layout: the clip's frames twice."""
    t, h, w = grid
    mask = F.adaptive_max_pool3d(alpha.float(), (t // copies, h, w))
    return mask.repeat(1, 1, copies, 1, 1)


@dataclass
class LatentSet:
    """Latents (N, C, t, h, w), captions, still-clip latents for a subset (motion-free dropout) and,
    optionally, object masks (N, 1, t, h, w) for both (:func:`latent_object_mask`).

    ``source`` says where the clips came from ("procedural" or "folder:/abs/path") and ``probe`` is
    the encoder's latent of one fixed clip (:func:`probe_latent`): together they tell whether a
    cache still matches the data and the VAE a stage is about to train on."""

    latents: torch.Tensor
    captions: list[str]
    still: torch.Tensor
    still_captions: list[str]
    masks: torch.Tensor | None = None
    still_masks: torch.Tensor | None = None
    probe: torch.Tensor | None = None
    source: str | None = None

    def save(self, path: Path) -> None:
        tensors = {"latents": self.latents, "still": self.still}
        if self.masks is not None:
            tensors.update(masks=self.masks.half(), still_masks=self.still_masks.half())
        if self.probe is not None:
            tensors["probe"] = self.probe
        meta = {"captions": json.dumps(self.captions), "still_captions": json.dumps(self.still_captions)}
        if self.source is not None:
            meta["source"] = self.source
        save_safetensors(tensors, path, metadata=meta)

    @classmethod
    def load(cls, path: Path) -> "LatentSet":
        from safetensors import safe_open

        try:
            t = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            captions, still_captions = json.loads(meta["captions"]), json.loads(meta["still_captions"])
        except Exception as e:
            raise RgbaError(f"cannot read latent cache {path} ({type(e).__name__}): delete it to encode it again")
        masks = (t["masks"].float(), t["still_masks"].float()) if "masks" in t else (None, None)
        return cls(t["latents"], captions, t["still"], still_captions, *masks, t.get("probe"), meta.get("source"))


@torch.no_grad()
def probe_latent(encode, size: int, frames: int) -> torch.Tensor:
    """The encoder's latent of one fixed held-out procedural clip: a cheap fingerprint of the encoder."""
    clip = make_clip(HELDOUT_SEED_BASE, size=size, frames=frames)
    return encode(clip.video_tensor()[None].float()).float()


@torch.no_grad()
def encode_procedural(encode, n: int, *, seed0: int, size: int, frames: int, still_fraction: float = 0.15,
                      batch: int = 16, progress=None, split: str = "train", mask_copies: int = 1) -> LatentSet:
    """Draw n procedural clips (train split) and encode them (:func:`encode_clips`)."""
    ds = ProceduralDataset(split=split, size=size, frames=frames, base=seed0)
    data = encode_clips(encode, ds, n, seed=seed0, frames=frames, still_fraction=still_fraction, batch=batch,
                        progress=progress, mask_copies=mask_copies)
    data.source = "procedural"
    return data


@torch.no_grad()
def encode_clips(encode, ds, n: int, *, seed: int, frames: int, still_fraction: float = 0.15, batch: int = 16,
                 progress=None, mask_copies: int = 1) -> LatentSet:
    """Encode the first n samples of `ds` (procedural or a user folder) with `encode(rgba (B,4,T,H,W)) -> z`,
    keep their object masks on the latent grid (``mask_copies`` as in :func:`latent_object_mask`) and
    add still versions (one frame repeated) of the first `still_fraction` of them."""
    rng = np.random.default_rng(seed)
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
