"""Training batches of RGBA clips: procedural (default) or a folder of the user's captioned clips."""

from __future__ import annotations

import numpy as np
import torch

from rgbacli.data import FolderDataset, ProceduralDataset


class ClipSource:
    """Draws batches (B, 4, T, H, W) float RGBA + captions from procedural data or a FolderDataset."""

    def __init__(self, size: int, frames: int, folder: str | None = None, seed: int = 0):
        self.frames = frames
        if folder:
            self.ds = FolderDataset(folder, size=size, frames=frames)
        else:
            self.ds = ProceduralDataset(split="train", size=size, frames=frames)
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int, window: int | None = None) -> tuple[torch.Tensor, list[str]]:
        """n random clips; with `window`, a random run of that many frames from each."""
        idx = self.rng.integers(0, len(self.ds), n)
        if hasattr(self.ds, "sample"):  # user clips: a fresh window of each long clip on every visit
            samples = [self.ds.sample(int(i), self.rng) for i in idx]
        else:
            samples = [self.ds[int(i)] for i in idx]
        rgba = np.stack([s.rgba for s in samples])  # (B, T, H, W, 4)
        if window is not None and window < rgba.shape[1]:
            start = int(self.rng.integers(0, rgba.shape[1] - window + 1))
            rgba = rgba[:, start:start + window]
        return torch.from_numpy(np.ascontiguousarray(rgba)).permute(0, 4, 1, 2, 3).float(), [s.caption for s in samples]
