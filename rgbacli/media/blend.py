"""Straight-alpha "over" in exact uint8 integer maths, and placing a layer on a canvas.

Over an opaque background each channel is round(f·a + b·(1−a)) with a = alpha/255, computed
as div255(f·α + b·(255−α)). Over a translucent background it is the straight-alpha
Porter–Duff over: αo = αf + αb(1−αf), Co = (Cf·αf + Cb·αb(1−αf)) / αo, both rounded.
"""

from __future__ import annotations

import sys

import numpy as np

from rgbacli.media.clip import to_uint8

_WORK: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _workspace(shape: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reusable uint16 scratch arrays per frame shape (allocation dominated the maths)."""
    if shape not in _WORK:
        if len(_WORK) > 8:
            _WORK.clear()
        _WORK[shape] = tuple(np.empty(shape, np.uint16) for _ in range(3))
    return _WORK[shape]


def _alpha_to_lanes(fg: np.ndarray, out: np.ndarray) -> None:
    """out (…, 4) uint16 ← fg's alpha repeated in all four lanes.

    A broadcasting copy (`out[...] = fg[..., 3:4]`) is ~6× slower than this: read each pixel
    as one little-endian uint32 (alpha is the top byte) and multiply by 0x0001000100010001,
    which writes alpha into the four 16-bit lanes of a uint64 at once.
    """
    if sys.byteorder != "little" or fg.strides[-1] != 1 or fg.strides[-2] != 4 or not out.flags.c_contiguous:
        np.copyto(out, fg[..., 3:4])
        return
    px = fg.view(np.uint32)[..., 0]
    lanes = out.view(np.uint64)[..., 0]
    np.right_shift(px, 24, out=lanes, casting="unsafe")
    np.multiply(lanes, np.uint64(0x0001000100010001), out=lanes)


def over_opaque(fg: np.ndarray, bg: np.ndarray) -> None:
    """In place: bg (…, 4) uint8, fully opaque ← fg (…, 4) uint8 over it; bg stays opaque.

    All four channels are computed on contiguous uint16 buffers (faster than strided RGB
    views); the alpha lane is then reset to 255. Every intermediate sum is ≤ 255·255.
    """
    a, n, m = _workspace(fg.shape)
    _alpha_to_lanes(fg, a)
    np.multiply(fg, a, out=n, dtype=np.uint16)
    np.subtract(255, a, out=a)
    np.multiply(bg, a, out=m, dtype=np.uint16)
    np.add(n, m, out=n)
    np.add(n, 128, out=n)  # div255 (see clip.div255): t = n + 128; (t + (t >> 8)) >> 8
    np.right_shift(n, 8, out=m)
    np.add(n, m, out=n)
    np.right_shift(n, 8, out=n)
    np.copyto(bg, n, casting="unsafe")
    bg[..., 3] = 255


def over_alpha(fg: np.ndarray, bg: np.ndarray) -> None:
    """In place: bg (…, 4) uint8 ← fg over bg, both straight alpha, bg possibly translucent."""
    af = fg[..., 3:4].astype(np.uint32)
    ab = bg[..., 3:4].astype(np.uint32)
    wb = ab * (255 - af)  # background weight ×255
    den = af * 255 + wb  # = 255² · αo
    num = fg[..., :3] * (af * 255) + bg[..., :3] * wb
    safe = np.maximum(den, 1)
    rgb = (2 * num + safe) // (2 * safe)  # round(num / den)
    bg[..., :3] = np.where(den > 0, rgb, 0).astype(np.uint8)
    bg[..., 3:4] = ((den + 127) // 255).astype(np.uint8)  # round(255·αo)


def over(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """fg over bg (same shape, uint8 or float straight alpha) as a new uint8 array."""
    fg, out = to_uint8(fg), to_uint8(bg).copy()
    if fg.shape != out.shape:
        raise ValueError(f"over: shapes differ {fg.shape} vs {out.shape}")
    if (out[..., 3] == 255).all():
        over_opaque(fg, out)
    else:
        over_alpha(fg, out)
    return out


def place(canvas: np.ndarray, fg: np.ndarray, x: int, y: int, opaque: bool | None = None) -> None:
    """In place: composite fg with its top-left at (x, y) on canvas (H, W, 4); parts outside
    the canvas (negative or past the edge) are clipped away."""
    H, W = canvas.shape[:2]
    h, w = fg.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    src = fg[y0 - y : y1 - y, x0 - x : x1 - x]
    dst = canvas[y0:y1, x0:x1]
    if opaque is None:
        opaque = bool((dst[..., 3] == 255).all())
    if opaque:
        over_opaque(src, dst)
    else:
        over_alpha(src, dst)

