"""Wan-Alpha v2.0's noise-mean shift: a training-free control of where the object appears.

The reference (WeChatCV/Wan-Alpha `generate_mask`) draws the initial noise as usual, then adds
``(1 − g) · alpha_shift_mean`` to it, where g is a Gaussian mask in [0, 1] on the latent grid
(1 where the object should be, → 0 away from it), broadcast over channels. The mask is one
frame (static) or one per latent frame (a moving ellipse). Its mean is rounded to bfloat16
first, as the reference does (0.05 → 0.050048828125).

| piece | what it does |
|---|---|
| :func:`gaussian_ellipse` | per-latent-frame Gaussian ellipses (centres per frame: a path) → (t, h, w) |
| :func:`ellipse_path` | a straight path of centres from a start to an end point |
| :func:`resize_mask` | a mask file's (T, H, W) → the latent grid: bilinear per frame (the reference), linear in time |
| :func:`path_mask` | pixel tracks of objects → one mask per latent frame (`--trajectory-method noise`, #19) |
| :func:`shift_noise` | noise + (1 − g) · mean (or + g · mean · direction, a calibrated latent direction) |
| :class:`NoiseShift` | the options of one run (mean + mask file or centres/size) → `apply(noise)` |

Coordinates are fractions of the frame: x from the left, y from the top, (0.5, 0.5) the centre;
ellipse sizes are fractions of the width and height (the Gaussian's σ is half of each).
Trajectories (#19) use :func:`path_mask`: the same ellipses, centred on each object's path at
the pixel frame of each latent frame, without the min-max normalisation (several objects: the
maximum of their masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rgbacli.errors import UsageError

DEFAULT_MEAN = 0.05  # the reference README's value (its argparse default is 0.03)
DEFAULT_SIZE = (0.5, 0.5)

Point = tuple[float, float]


# ----------------------------------------------------------------------------- masks
def gaussian_ellipse(height: int, width: int, centers: Sequence[Point] | torch.Tensor,
                     sizes: Sequence[Point] | Point | torch.Tensor = DEFAULT_SIZE, angle: float = 0.0,
                     clip_exp: float = -50.0, normalise: bool = True) -> torch.Tensor:
    """(t, height, width) float32 Gaussian ellipses, one per centre, each min-max normalised to
    [0, 1] (the reference's `create_gaussian_mask_from_ellipse`: σ = axis / 2, exponent clipped
    at −50); `normalise=False` keeps the plain Gaussian (peak 1 at the centre, never 0). `centers` (t, 2) and `sizes` ((2,) or (t, 2)) are fractions of the frame (x, y);
    `angle` in degrees rotates the ellipse."""
    c = torch.as_tensor(centers, dtype=torch.float64).reshape(-1, 2)
    s = torch.as_tensor(sizes, dtype=torch.float64).reshape(-1, 2).expand(c.shape[0], 2)
    if c.shape[0] == 0:
        raise UsageError("an ellipse mask needs at least one centre")
    if (s <= 0).any():
        raise UsageError("ellipse sizes must be positive fractions of the frame")
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    cx = (c[:, 0] * width - 0.5).view(-1, 1, 1)  # fraction → pixel-centre coordinates
    cy = (c[:, 1] * height - 0.5).view(-1, 1, 1)
    theta = torch.deg2rad(torch.tensor(float(angle), dtype=torch.float64))
    dx, dy = x - cx, y - cy
    xr, yr = dx * theta.cos() + dy * theta.sin(), -dx * theta.sin() + dy * theta.cos()
    sx = (s[:, 0] * width / 2).clamp(min=1e-2).view(-1, 1, 1)
    sy = (s[:, 1] * height / 2).clamp(min=1e-2).view(-1, 1, 1)
    g = torch.exp((-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2)).clamp(clip_exp, 0))
    if not normalise:
        return g.float()
    lo, hi = g.amin(dim=(1, 2), keepdim=True), g.amax(dim=(1, 2), keepdim=True)
    flat = (hi - lo) < 1e-9
    return torch.where(flat, torch.zeros_like(g), (g - lo) / (hi - lo).clamp(min=1e-12)).float()


def ellipse_path(start: Point, end: Point, frames: int) -> torch.Tensor:
    """(frames, 2) centres on the straight line from `start` to `end` (one per latent frame)."""
    w = torch.linspace(0, 1, frames, dtype=torch.float64).view(-1, 1) if frames > 1 else torch.zeros(1, 1,
                                                                                                      dtype=torch.float64)
    return torch.as_tensor(start, dtype=torch.float64) * (1 - w) + torch.as_tensor(end, dtype=torch.float64) * w


def resize_mask(mask: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """A (T, H, W) or (H, W) mask → (frames, height, width): bilinear per frame (align_corners
    False, as the reference), then linear along time when T differs (T = 1 is broadcast)."""
    m = torch.as_tensor(mask, dtype=torch.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or min(m.shape) < 1:
        raise UsageError(f"a noise-shift mask must be (frames, height, width) or (height, width); got {tuple(m.shape)}")
    m = F.interpolate(m[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    if m.shape[0] == frames:
        return m
    if m.shape[0] == 1:
        return m.expand(frames, height, width).clone()
    m = F.interpolate(m.permute(1, 2, 0).reshape(1, height * width, -1), size=frames, mode="linear",
                      align_corners=False)
    return m.reshape(height, width, frames).permute(2, 0, 1).contiguous()


def load_mask(path: str | Path) -> torch.Tensor:
    """A mask file: the reference's `torch.save`d tensor (any name, read with weights_only=True), a
    .safetensors file with one tensor, or a .npy array."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"noise-shift mask {p} does not exist")
    try:
        if p.suffix == ".npy":
            import numpy as np

            return torch.from_numpy(np.load(p, allow_pickle=False)).float()
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(p))
            if len(tensors) != 1:
                raise UsageError(f"noise-shift mask {p} holds {len(tensors)} tensors; expected one")
            return next(iter(tensors.values())).float()
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot read noise-shift mask {p}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise UsageError(f"noise-shift mask {p} does not hold one tensor")
    return obj.float()


def path_mask(tracks: Sequence[torch.Tensor], latent_frames: int, temporal_factor: int, spatial_factor: int,
              grid: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    """One mask (t, h, w) for pixel tracks (each (T, 2), x/y in pixels): latent frame k sits at pixel
    frame k·tf (the causal VAE's first latent frame is frame 0 alone); σ (x, y) in latent cells. A
    Gaussian per object and latent frame, not normalised; several objects: their maximum."""
    h, w = grid
    masks = []
    for track in tracks:
        track = torch.as_tensor(track, dtype=torch.float64)
        idx = torch.clamp(torch.arange(latent_frames) * temporal_factor, max=track.shape[0] - 1)
        centres = (track[idx] + 0.5) / torch.tensor([w * spatial_factor, h * spatial_factor], dtype=torch.float64)
        masks.append(gaussian_ellipse(h, w, centres, (2 * sigma[0] / w, 2 * sigma[1] / h), normalise=False))
    return torch.stack(masks).amax(dim=0)


# ----------------------------------------------------------------------------- the shift
def shift_noise(noise: torch.Tensor, mask: torch.Tensor, mean: float,
                direction: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """noise (B, C, T', h, w) + (1 − mask) · mean, mask (t, h, w) or (B, t, h, w) broadcast over
    channels, T' a multiple of t (alpha tokens' ``[RGB ; alpha]`` copies share the mask); the mean
    rounded to bfloat16 as the reference's `torch.tensor(mean, dtype=bfloat16)`. With a per-channel
    `direction` (C,): ``noise + mask · mean · direction`` instead, the object region moved towards
    an object's latent (the tiny model's calibration, benchmarks/trajectory.py --calibrate)."""
    m = mask.to(noise.device, noise.dtype)
    if m.ndim == 3:
        m = m[None]
    if m.shape[-2:] != noise.shape[-2:]:
        raise UsageError(f"noise-shift mask {tuple(m.shape[-3:])} does not match the latent grid {tuple(noise.shape[-3:])}")
    copies = noise.shape[2] // m.shape[1]
    if copies * m.shape[1] != noise.shape[2]:
        raise UsageError(f"a mask of {m.shape[1]} frames does not fit latents of {noise.shape[2]} frames")
    m = m.repeat(1, copies, 1, 1)[:, None]
    mean_t = torch.tensor(float(mean), dtype=torch.bfloat16).float().item()
    if direction is None:
        return noise + (1 - m) * mean_t
    d = torch.as_tensor(direction, dtype=noise.dtype, device=noise.device)
    if d.numel() != noise.shape[1]:
        raise UsageError(f"a shift direction of {d.numel()} values does not fit {noise.shape[1]} latent channels")
    return noise + m * mean_t * d.view(1, -1, 1, 1, 1)


def parse_points(text: str) -> list[Point]:
    """'X,Y' or 'X,Y:X2,Y2' (fractions of the frame) → points; one clear error otherwise."""
    pts = []
    for part in str(text).split(":"):
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise UsageError(f"bad point {part!r} in {text!r}: expected X,Y fractions such as 0.3,0.5 "
                             "(and X,Y:X2,Y2 for a moving ellipse)") from None
        pts.append((x, y))
    if len(pts) > 2:
        raise UsageError(f"{text!r}: give one centre X,Y or a start and an end X,Y:X2,Y2")
    return pts


@dataclass(frozen=True)
class NoiseShift:
    """One run's noise shift: a mean and either a mask file or ellipse centres (1 static, 2 = a
    straight move from the first to the second, or one per latent frame) with a size."""

    mean: float = DEFAULT_MEAN
    mask_path: str | None = None
    centers: tuple[Point, ...] | None = None
    size: Point = DEFAULT_SIZE

    @classmethod
    def from_options(cls, mean: float | None, mask_path: str | None, centers, size) -> "NoiseShift | None":
        """None when no mask and no centre were given (then nothing is shifted)."""
        if mask_path is None and not centers:
            if size is not None:
                raise UsageError("--alpha-size needs --alpha-center (the ellipse's centre)")
            return None
        if mask_path is not None and centers:
            raise UsageError("give --alpha-mask or --alpha-center, not both")
        pts = tuple(tuple(float(v) for v in c) for c in (parse_points(centers) if isinstance(centers, str)
                                                         else centers or ()))
        if size is not None:
            size = tuple(float(v) for v in (parse_points(size)[0] if isinstance(size, str) else size))
        return cls(DEFAULT_MEAN if mean is None else float(mean), mask_path, pts or None, size or DEFAULT_SIZE)

    def mask(self, frames: int, height: int, width: int) -> torch.Tensor:
        """g on a (frames, height, width) latent grid."""
        if self.mask_path is not None:
            return resize_mask(load_mask(self.mask_path), frames, height, width)
        c = self.centers
        path = ellipse_path(c[0], c[-1], frames) if len(c) in (1, 2) else torch.as_tensor(c, dtype=torch.float64)
        if path.shape[0] != frames:
            raise UsageError(f"{path.shape[0]} ellipse centres for {frames} latent frames")
        return gaussian_ellipse(height, width, path, self.size)

    def apply(self, noise: torch.Tensor) -> torch.Tensor:
        """Shift per-clip noise (B, C, t, h, w)."""
        return shift_noise(noise, self.mask(*noise.shape[-3:]), self.mean)
