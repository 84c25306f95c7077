"""Procedural RGBA test content (no files needed): for tests, benchmarks and the bundled sample."""

from __future__ import annotations

import numpy as np


def varied_alpha_frames(t: int = 5, h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    """(T, H, W, 4) uint8 with every kind of alpha: 0 on the left quarter, a ramp, 255 on the
    right, and a half-transparent (128) band in the bottom rows; colour ramps plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    f = np.zeros((t, h, w, 4), np.uint8)
    alpha = np.clip((xx - w // 4) * 255 // max(1, w // 2), 0, 255)
    alpha[h - max(1, h // 4) :, :] = 128
    for i in range(t):
        f[i, ..., 0] = (xx * 5 + i * 9) % 256
        f[i, ..., 1] = (yy * 7 + i * 3) % 256
        f[i, ..., 2] = 96 + rng.integers(0, 32, (h, w))
        f[i, ..., 3] = alpha
    return f


def moving_disc_frames(t: int = 24, h: int = 96, w: int = 128, radius: float = 0.22) -> np.ndarray:
    """(T, H, W, 4) uint8: a soft-edged disc with a colour gradient drifting across a
    transparent canvas, plus a translucent shadow; smooth, so lossy codecs do well on it."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = np.zeros((t, h, w, 4), np.uint8)
    r0 = radius * min(h, w)
    for i in range(t):
        phase = i / max(1, t)
        cx = w * (0.25 + 0.5 * (0.5 - 0.5 * np.cos(2 * np.pi * phase)))
        cy = h * (0.45 + 0.1 * np.sin(2 * np.pi * phase))
        d = np.hypot(xx - cx, yy - cy)
        disc = np.clip(r0 - d + 0.5, 0, 1) if r0 < 4 else np.clip((r0 - d) / 1.5, 0, 1)
        shadow = 0.35 * np.clip(1 - np.hypot((xx - cx) / (r0 * 1.2), (yy - h * 0.85) / (r0 * 0.25)), 0, 1)
        a = np.maximum(disc, shadow)
        f[i, ..., 0] = np.where(disc > 0, 255 * (0.6 + 0.4 * xx / w), 0)
        f[i, ..., 1] = np.where(disc > 0, 255 * (0.2 + 0.6 * yy / h), 0)
        f[i, ..., 2] = np.where(disc > 0, 255 * (1 - phase * 0.7), 0)
        f[i, ..., 3] = np.rint(a * 255)
    return f


def sample_path():
    """Path of the bundled sample clip (rgbacli/assets/sample.webp, made by scripts/make_sample.py)."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "assets" / "sample.webp"
