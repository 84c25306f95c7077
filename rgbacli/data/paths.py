"""Random object paths (lines, arcs, zig-zags at several speeds) and clips whose objects follow them.

The trajectory stage trains on these (any direction, any shape, not only the four drift
directions of the procedural motions), and benchmarks/trajectory.py draws its held-out paths from
seeds the training never uses. A path clip's objects are "still" objects moved along their paths, so
the rendered centre track is exactly the path; its caption has no motion words.
"""

from __future__ import annotations

import math

import numpy as np

from rgbacli.data.captions import caption_for, leave_out
from rgbacli.data.procedural import DEFAULT_FPS, ClipSpec, Sample, _sample_object, render
from dataclasses import replace

KINDS = ("line", "arc", "zigzag")
EXTENT = {"slow": 0.45, "normal": 0.75, "fast": 1.0}  # largest side of the path's box / the allowed box
PATH_SEED_BASE = 3_000_000  # path seeds ≥ this are held out (benchmarks); training draws below it


def _shape(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A polyline (K, 2) of the kind, in arbitrary units."""
    if kind == "line":
        a = rng.uniform(0, 2 * math.pi)
        return np.array([[0.0, 0.0], [math.cos(a), math.sin(a)]])
    if kind == "arc":
        start = rng.uniform(0, 2 * math.pi)
        sweep = rng.uniform(0.5 * math.pi, 1.5 * math.pi) * (1 if rng.random() < 0.5 else -1)
        th = start + sweep * np.linspace(0, 1, 48)
        return np.stack([np.cos(th), np.sin(th)], axis=1)
    if kind == "zigzag":
        n = int(rng.integers(2, 5))
        a = rng.uniform(0, 2 * math.pi)
        turn = rng.uniform(0.6, 1.1)
        pts = [np.zeros(2)]
        for i in range(n):
            d = a + (turn if i % 2 == 0 else -turn)
            pts.append(pts[-1] + np.array([math.cos(d), math.sin(d)]))
        return np.stack(pts)
    raise ValueError(f"unknown path kind {kind!r} (choose from {', '.join(KINDS)})")


def along(polyline: np.ndarray, frames: int) -> np.ndarray:
    """`frames` points at equal arc-length steps along a polyline (constant speed)."""
    seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0, s[-1], frames)
    return np.stack([np.interp(t, s, polyline[:, 0]), np.interp(t, s, polyline[:, 1])], axis=1)


def random_path(rng: np.random.Generator, size: int, frames: int, kind: str | None = None, speed: str | None = None,
                margin: float = 0.2) -> np.ndarray:
    """A path (frames, 2) in pixels inside [margin·size, (1−margin)·size]²."""
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    speed = speed or ("slow", "normal", "fast")[int(rng.integers(3))]
    pts = _shape(kind, rng)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    box = (1 - 2 * margin) * size
    scale = EXTENT[speed] * box / max(float((hi - lo).max()), 1e-6)
    pts = (pts - lo) * scale
    room = box - pts.max(axis=0)
    offset = margin * size + rng.uniform(0, 1, 2) * np.maximum(room, 0)
    return along(pts + offset, frames).astype(np.float32)


def path_clip(seed: int, size: int = 64, frames: int = 17, n_objects: int | None = None,
              paths: np.ndarray | None = None) -> Sample:
    """One or two still objects moved along random paths (or the given `paths` (N, T, 2)); the
    caption names their colour, material and subject and no motion."""
    rng = np.random.default_rng([int(seed), 0x50415448])
    if n_objects is None:
        n_objects = len(paths) if paths is not None else (1 if rng.random() < 0.7 else 2)
    objs = []
    for _ in range(n_objects):
        taken = {(o.subject, o.colour) for o in objs}
        obj = _sample_object(rng, (0.12, 0.16) if n_objects == 1 else (0.1, 0.13), taken)
        objs.append(replace(obj, motion="still", speed="normal", pos=(0.5, 0.5)))
    spec = ClipSpec(tuple(objs))
    if paths is None:
        paths = np.stack([random_path(rng, size, frames) for _ in objs])
    caption = leave_out(caption_for(spec, rng), ["motion"])
    rgba, masks, track = render(spec, size, frames, centres=paths)
    return Sample(rgba, caption, list(spec.objects), track, masks, DEFAULT_FPS, int(seed))
