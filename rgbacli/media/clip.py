"""The in-memory clip: (T, H, W, 4) straight-alpha frames plus fps, and dtype/alpha helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FPS = 24.0


@dataclass
class Clip:
    """RGBA frames `(T, H, W, 4)` (uint8, or float32 in [0, 1]), straight alpha, at `fps`.

    `had_alpha` is False when the source carried no alpha channel (alpha was filled with opaque).
    """

    frames: np.ndarray
    fps: float = DEFAULT_FPS
    had_alpha: bool = True

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 4:
            raise ValueError(f"Clip frames must be (T, H, W, 4), got {self.frames.shape}")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order people write sizes in."""
        return self.width, self.height

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """uint8 frames unchanged; float frames in [0, 1] rounded and clipped to uint8."""
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise TypeError(f"frames must be uint8 or float, got {frames.dtype}")
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def to_float(frames: np.ndarray) -> np.ndarray:
    """float32 frames in [0, 1] (uint8 / 255, uint16 / 65535; floats passed through as float32)."""
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / np.float32(255.0)
    if frames.dtype == np.uint16:
        return (frames.astype(np.float64) / 65535.0).astype(np.float32)
    return frames.astype(np.float32, copy=False)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve (IEC 61966-2-1): display values in [0, 1] → linear light."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Inverse of srgb_to_linear (values ≥ 0; above 1 stays above 1, to be clipped by the caller)."""
    v = np.asarray(v, np.float64)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.maximum(v, 0.0031308) ** (1 / 2.4) - 0.055)


def div255(n: np.ndarray) -> np.ndarray:
    """round(n / 255) for integer n (uint16: n ≤ 65025, i.e. any 255-weighted sum), no division.

    255 is odd, so n/255 is never a tie and round == (n + 127) // 255; the shift form below is
    the same value for every n in 0..65535 (checked exhaustively in the tests).
    """
    t = n + 128
    return (t + (t >> 8)) >> 8


def premultiply(frames: np.ndarray) -> np.ndarray:
    """Straight → premultiplied (associated) alpha; uint8 uses exact rounded integer math."""
    if frames.dtype != np.uint8:
        out = frames.astype(np.float32, copy=True)
        out[..., :3] *= out[..., 3:4]
        return out
    out = frames.copy()
    a = frames[..., 3:4].astype(np.uint16)
    out[..., :3] = div255(frames[..., :3].astype(np.uint16) * a).astype(np.uint8)
    return out


def unpremultiply(frames: np.ndarray) -> np.ndarray:
    """Premultiplied → straight alpha; colour under alpha 0 becomes 0, values are clipped."""
    if frames.dtype != np.uint8:
        out = frames.astype(np.float32, copy=True)
        a = out[..., 3:4]
        with np.errstate(divide="ignore", invalid="ignore"):
            rgb = np.where(a > 0, out[..., :3] / a, 0.0)
        out[..., :3] = np.clip(rgb, 0.0, 1.0)
        return out
    out = frames.copy()
    a = frames[..., 3:4].astype(np.uint32)
    rgb = frames[..., :3].astype(np.uint32)
    safe = np.maximum(a, 1)
    straight = (rgb * 255 + safe // 2) // safe
    out[..., :3] = np.where(a > 0, np.minimum(straight, 255), 0).astype(np.uint8)
    return out


def has_transparency(frames: np.ndarray) -> bool:
    """True if any pixel is not fully opaque."""
    alpha = frames[..., 3]
    return bool((alpha < (255 if alpha.dtype == np.uint8 else 1.0)).any())
