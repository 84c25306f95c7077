"""User RGBA clips from a folder, each with a same-stem .txt caption, as training samples.

A clip is any file rgbacli.media can read (.mov, .webm, .mkv, .apng, .png, .webp, .gif, .mp4),
a sub-directory of PNG frames, or a `name.0001.png, name.0002.png, …` sequence; its caption
is `name.txt` beside it. Clips are resampled to the training fps, cut to a window of N frames,
scaled (premultiplied, antialiased) so the short side is `size`, and centre-cropped square.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from rgbacli.data.procedural import DEFAULT_FPS, DEFAULT_FRAMES, DEFAULT_SIZE, ProceduralDataset, Sample
from rgbacli.errors import RgbaError

CLIP_SUFFIXES = frozenset({".mov", ".webm", ".mkv", ".apng", ".png", ".webp", ".gif", ".mp4", ".m4v"})
_NUMBERED = re.compile(r"^(?P<stem>.+)\.(?P<num>\d+)\.png$", re.IGNORECASE)


def discover(directory: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(clip path, caption path) pairs in a folder, sorted by name; errors name what is wrong."""
    root = Path(directory)
    if not root.is_dir():
        raise RgbaError(f"{root}: not a directory of clips")
    clips: dict[str, Path] = {}
    for name in sorted(os.listdir(root)):
        if name.startswith("."):
            continue
        path = root / name
        if path.is_dir():
            clips[name] = path
            continue
        m = _NUMBERED.match(name)
        if m:  # one frame of a name.%04d.png sequence
            stem = m.group("stem")
            clips.setdefault(stem, root / f"{stem}.%0{len(m.group('num'))}d.png")
        elif path.suffix.lower() in CLIP_SUFFIXES:
            clips[path.stem] = path
    if not clips:
        raise RgbaError(f"{root}: no clips found (expected video files, PNG sequences or APNGs)")
    pairs = []
    for stem, clip in sorted(clips.items()):
        caption = root / f"{stem}.txt"
        if not caption.is_file():
            raise RgbaError(f"{clip}: no caption (expected {caption} beside it)")
        pairs.append((clip, caption))
    return pairs


def read_caption(path: Path) -> str:
    text = " ".join(path.read_text(encoding="utf-8").split())
    if not text:
        raise RgbaError(f"{path}: caption file is empty")
    return text


class FolderDataset:
    """Indexable user clips as `Sample`s (no ground-truth objects: `objects=[]`, empty tracks).

    `fps` resamples time to the training rate (None keeps the source rate); the N-frame window
    starts at a position drawn from (seed, index) (`sample` takes the caller's generator instead),
    or at 0 with `random_window=False`. Clips
    shorter than N frames repeat their last frame (with a warning).
    """

    def __init__(self, directory: str | os.PathLike, size: int = DEFAULT_SIZE,
                 frames: int = DEFAULT_FRAMES, fps: float | None = DEFAULT_FPS, seed: int = 0,
                 random_window: bool = True):
        self.directory = Path(directory)
        self.entries = discover(self.directory)
        self.captions = [read_caption(c) for _, c in self.entries]
        self.size, self.frames, self.fps = size, frames, fps
        self.seed, self.random_window = seed, random_window
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        """Clip `index` with its window drawn from (seed, index): the same sample every time."""
        return self.sample(index, np.random.default_rng([self.seed, index]))

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        """Clip `index` with its window start drawn from `rng`, so a training loop that visits a long
        clip many times sees different stretches of it."""
        from rgbacli.media import read_clip  # lazy: media is a heavier import

        if not 0 <= index < len(self.entries):
            raise IndexError(index)
        path, _ = self.entries[index]
        clip = read_clip(path)
        frames = np.asarray(clip.frames)
        if frames.dtype == np.uint8:
            frames = frames.astype(np.float32) / np.float32(255.0)
        src_fps = float(clip.fps)
        fps = float(self.fps) if self.fps else src_fps
        step = src_fps / fps
        available = int(np.floor((len(frames) - 1) / step)) + 1  # output frames the clip covers
        start = 0
        if available > self.frames and self.random_window:
            start = int(rng.integers(available - self.frames + 1))
        idx = np.floor((start + np.arange(self.frames)) * step + 1e-6).astype(np.int64)
        if idx[-1] >= len(frames):
            if path not in self._warned:
                from rgbacli.console import warn

                warn(f"{path}: only {available} frames at {fps:g} fps; last frame repeated to {self.frames}")
                self._warned.add(path)
            idx = np.minimum(idx, len(frames) - 1)
        rgba = _resize_crop(frames[idx], self.size)
        empty_track = np.zeros((0, self.frames, 2), np.float32)
        empty_masks = np.zeros((0, self.frames, self.size, self.size), np.float32)
        return Sample(rgba, self.captions[index], [], empty_track, empty_masks, fps, None, str(path))

    collate = staticmethod(ProceduralDataset.collate)


def _resize_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """(T,H,W,4) straight float → (T,size,size,4): short side to `size`, centre crop.

    Scaling happens on premultiplied colour so transparent pixels' RGB does not bleed in.
    """
    import torch
    import torch.nn.functional as F

    t, h, w, _ = frames.shape
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    x = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], dim=1)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size].clamp(0.0, 1.0)
    a = x[:, 3:]
    rgb = torch.where(a > 1e-6, x[:, :3] / a.clamp_min(1e-6), torch.zeros_like(x[:, :3])).clamp(0.0, 1.0)
    return torch.cat([rgb, a], dim=1).permute(0, 2, 3, 1).contiguous().numpy()
