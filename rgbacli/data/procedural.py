"""Procedural RGBA clips with captions and ground truth, deterministic from a seed.

`make_clip(seed)` draws a `ClipSpec` (one or two objects: subject, material, colour, motion,
speed, size, position), renders every object with numpy over the whole frame stack (signed
distance → soft alpha, shading, material), composites them back to front with straight-alpha
"over", and returns a `Sample` with the caption, per-object masks and centre tracks.
Motions are large on purpose (≥ ~24 px of travel at 64 px) so a 4×-spatial / 2×-temporal VAE
latent still shows them; see docs/data.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from rgbacli.data import shapes
from rgbacli.data.captions import COLOURS, MATERIALS, MOTIONS, SPEEDS, SUBJECTS, caption_for

DEFAULT_SIZE = 64
DEFAULT_FRAMES = 17
DEFAULT_FPS = 8
HELDOUT_SEED_BASE = 1_000_000  # seeds >= this are the held-out split; training never draws them

# Which materials suit which subject (first = most likely), and motions that would be invisible.
SUBJECT_MATERIALS: dict[str, tuple[str, ...]] = {
    "jellyfish": ("glass", "glowing", "solid"),
    "bubble": ("glass", "glowing"),
    "orb": ("solid", "glowing", "glass", "smoky"),
    "star": ("solid", "glowing", "glass"),
    "heart": ("solid", "glowing", "glass"),
    "leaf": ("solid", "glass"),
    "ghost": ("glass", "smoky", "glowing", "solid"),
    "flame": ("glowing", "smoky"),
    "smoke": ("smoky",),
    "spark": ("glowing", "solid"),
}
NO_SPIN = frozenset({"bubble", "orb"})  # round and symmetric: spinning would not show

# Travel over the whole clip for drifting motions, as a fraction of the frame size.
TRAVEL = {"slow": 0.30, "normal": 0.45, "fast": 0.58}
TURNS = {"slow": 0.5, "normal": 1.0, "fast": 1.5}  # spin: full turns per clip (clockwise)
CYCLES = {"slow": 1, "normal": 2, "fast": 3}  # pulse cycles / bounces per clip
BOUNCE_HEIGHT = 0.38  # fraction of the frame size
PULSE_AMOUNT = 0.28  # relative scale swing of a pulse
WOBBLE = 0.02  # sideways sway of drifting objects, fraction of the frame size
_DIRECTION = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}


@dataclass(frozen=True)
class ObjectSpec:
    """One object. `radius` and `pos` (centre of its path, x/y) are fractions of the frame size,
    so a spec renders the same scene at any resolution; `angle` is its base tilt in radians."""

    subject: str
    material: str
    colour: str
    motion: str
    speed: str = "normal"
    radius: float = 0.15
    pos: tuple[float, float] = (0.5, 0.5)
    angle: float = 0.0
    variant: int = 0
    phase: float = 0.0

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("subject", self.subject, SUBJECTS),
            ("material", self.material, MATERIALS),
            ("colour", self.colour, tuple(COLOURS)),
            ("motion", self.motion, MOTIONS),
            ("speed", self.speed, SPEEDS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r} (choose from {', '.join(allowed)})")


@dataclass(frozen=True)
class ClipSpec:
    """What a clip shows: one or two objects, drawn in order (later ones on top)."""

    objects: tuple[ObjectSpec, ...]


@dataclass
class Sample:
    """One clip with ground truth.

    rgba:   (T, H, W, 4) float32 straight alpha in [0, 1]
    masks:  (N, T, H, W) float32, each object's own alpha (before occlusion by later objects)
    track:  (N, T, 2) float32 alpha-centroid (x, y) per object and frame, in pixel-index units
            (pixel column j has x = j), so it compares directly with a mask's centroid
    """

    rgba: np.ndarray
    caption: str
    objects: list[ObjectSpec]
    track: np.ndarray
    masks: np.ndarray
    fps: float = DEFAULT_FPS
    seed: int | None = None
    source: str | None = None  # file the clip came from (FolderDataset)
    extra: dict = field(default_factory=dict)

    def video_tensor(self):
        """The clip as a torch tensor (4, T, H, W) in [0, 1], the model side's layout."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.rgba.transpose(3, 0, 1, 2)))


@dataclass
class MotionPath:
    centre: np.ndarray  # (T, 2) x, y in pixels
    angle: np.ndarray  # (T,) radians, counter-clockwise positive (v up)
    scale: np.ndarray  # (T,)


def _tau(frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def motion_path(obj: ObjectSpec, size: int, frames: int) -> MotionPath:
    """Per-frame centre, rotation and scale of an object (pure function of the spec)."""
    tau = _tau(frames)
    cx, cy = obj.pos[0] * size, obj.pos[1] * size
    centre = np.tile(np.array([cx, cy]), (frames, 1))
    angle = np.full(frames, obj.angle)
    scale = np.ones(frames)
    m = obj.motion
    if m in _DIRECTION:
        dx, dy = _DIRECTION[m]
        travel = TRAVEL[obj.speed] * size
        sway = WOBBLE * size * np.sin(2 * math.pi * tau + obj.phase)
        centre[:, 0] += dx * (tau - 0.5) * travel + dy * sway
        centre[:, 1] += dy * (tau - 0.5) * travel + dx * sway
    elif m == "bounce":
        h = BOUNCE_HEIGHT * size
        centre[:, 1] += h / 2 - h * np.abs(np.sin(math.pi * CYCLES[obj.speed] * tau))
    elif m == "spin":
        angle = angle - 2 * math.pi * TURNS[obj.speed] * tau
    elif m == "pulse":
        scale = 1.0 + PULSE_AMOUNT * np.sin(2 * math.pi * CYCLES[obj.speed] * tau)
    return MotionPath(centre, angle, scale)


def _extent(obj: ObjectSpec, size: int) -> tuple[float, float]:
    """How far (x, y) in pixels the path reaches from its centre."""
    if obj.motion in _DIRECTION:
        travel = TRAVEL[obj.speed] * size / 2
        along = (travel, WOBBLE * size) if obj.motion in ("left", "right") else (WOBBLE * size, travel)
        return along
    if obj.motion == "bounce":
        return 0.0, BOUNCE_HEIGHT * size / 2
    return 0.0, 0.0


def _reach(obj: ObjectSpec) -> float:
    """How far the object's coverage reaches from its centre, in radius units (≥ 1)."""
    reach = max(1.0, shapes.calibration(obj.subject, obj.variant)[2] - 0.1)
    reach += 0.35 if obj.material == "glowing" else 0.0  # keep the bright part of the halo in view
    return reach * (1.0 + PULSE_AMOUNT if obj.motion == "pulse" else 1.0)


def _place(obj: ObjectSpec, rng: np.random.Generator) -> tuple[float, float]:
    """A path centre (fractions) that keeps the object inside the frame the whole clip."""
    margin = obj.radius * _reach(obj) + 0.02
    ex, ey = _extent(obj, 1)
    out = []
    for e in (ex, ey):
        lo, hi = margin + e, 1.0 - margin - e
        out.append(0.5 if lo >= hi else float(rng.uniform(lo, hi)))
    return out[0], out[1]


def _sample_object(rng: np.random.Generator, radius_range, taken=()) -> ObjectSpec:
    while True:
        subject = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        if (subject, colour) not in taken:
            break
    mats = SUBJECT_MATERIALS[subject]
    weights = np.array([2.0] + [1.0] * (len(mats) - 1))
    material = mats[int(rng.choice(len(mats), p=weights / weights.sum()))]
    motions = [m for m in MOTIONS if not (m == "spin" and subject in NO_SPIN)]
    motion = motions[int(rng.integers(len(motions)))]
    speed = "normal" if motion == "still" else SPEEDS[int(rng.choice(3, p=[0.3, 0.4, 0.3]))]
    tilt = {"leaf": 0.7, "star": 0.25, "heart": 0.2}.get(subject, 0.12)
    obj = ObjectSpec(
        subject, material, colour, motion, speed,
        radius=float(rng.uniform(*radius_range)),
        angle=float(rng.uniform(-tilt, tilt)),
        variant=int(rng.integers(shapes.N_VARIANTS)),
        phase=float(rng.uniform(0, 2 * math.pi)),
    )
    # shrink objects whose path would otherwise leave the frame (long tentacles, fast travel)
    fit = (0.5 - max(_extent(obj, 1)) - 0.03) / _reach(obj)
    obj = replace(obj, radius=max(min(obj.radius, fit), 0.08))
    return replace(obj, pos=_place(obj, rng))


def sample_spec(rng: np.random.Generator, n_objects: int | None = None) -> ClipSpec:
    """Draw a random clip spec: one object (65 %) or two (35 %) with distinct subject/colour.

    Two objects are placed (best of 12 tries) so their paths stay as far apart as possible.
    """
    if n_objects is None:
        n_objects = 1 if rng.random() < 0.65 else 2
    if n_objects == 1:
        return ClipSpec((_sample_object(rng, (0.13, 0.2)),))
    if n_objects != 2:
        raise ValueError("n_objects must be 1 or 2")
    a = _sample_object(rng, (0.1, 0.14))
    b = _sample_object(rng, (0.1, 0.14), taken={(a.subject, a.colour)})
    best, best_gap = (a, b), -1.0
    for _ in range(12):
        a2, b2 = replace(a, pos=_place(a, rng)), replace(b, pos=_place(b, rng))
        ca, cb = motion_path(a2, 64, 9).centre, motion_path(b2, 64, 9).centre
        gap = float(np.min(np.linalg.norm(ca - cb, axis=1))) / (64 * (a.radius + b.radius))
        if gap > best_gap:
            best, best_gap = (a2, b2), gap
    return ClipSpec(best)


# --- rendering -------------------------------------------------------------------------------

_HALO = 0.3  # glow halo falloff in radius units; it reaches zero 1.3 units outside the shape
_HALO_END = math.exp(-1.3 / _HALO)
_ALPHA_FLOOR = 1.0 / 1024  # alpha below this is set to exactly 0 (clean transparent background)


def _noise(u, v, tau, phase):
    """Cheap smooth 'smoke' texture in [0, 1]: a few drifting, rotated sine waves."""
    acc = 0.0
    for k in range(4):
        a = phase * (k + 1) + k * 1.7
        f = 2.2 + 1.3 * k
        acc = acc + np.sin(f * (u * math.cos(a) + v * math.sin(a)) + 3.0 * tau * (k + 1) + phase + k)
    return 0.5 + acc * 0.18


def _material(f: shapes.Field, obj: ObjectSpec, u, v, tau, px):
    """Field → straight RGB (…, 3) and alpha (…) for the object's material and colour."""
    colour = np.asarray(COLOURS[obj.colour].rgb, dtype=np.float32)
    d = f.d
    cov = np.clip(0.5 - d * px, 0.0, 1.0)
    lum = np.asarray(f.lum, dtype=np.float32)
    hi = np.clip(np.asarray(f.hi, dtype=np.float32), 0.0, 1.0)
    base = np.clip(colour * lum[..., None], 0.0, 1.0)
    glow = hi
    if obj.material == "solid":
        alpha = cov
    elif obj.material == "glass":
        rim = (1.0 - np.clip(-d / 0.3, 0.0, 1.0)) ** 2
        alpha = cov * np.clip(0.3 + 0.55 * rim + 0.7 * hi, 0.0, 1.0)
        glow = np.clip(hi + 0.3 * rim, 0.0, 1.0)
    elif obj.material == "glowing":
        depth = np.clip(-d / 0.55, 0.0, 1.0)
        halo = 0.55 * np.clip((np.exp(-np.maximum(d, 0.0) / _HALO) - _HALO_END) / (1.0 - _HALO_END), 0.0, 1.0)
        alpha = cov + (1.0 - cov) * halo
        glow = np.clip(0.6 * depth + hi, 0.0, 1.0)
        base = np.clip(colour * (0.25 + lum[..., None]), 0.0, 1.0)
    else:  # smoky
        soft = np.clip((0.12 - d) / 0.4, 0.0, 1.0) ** 1.3
        alpha = soft * np.clip(0.4 + 0.5 * _noise(u, v, tau, obj.phase), 0.0, 1.0)
        base = base * 0.8 + 0.16
        glow = hi * 0.5
    rgb = base + (1.0 - base) * glow[..., None]
    dark = np.asarray(f.dark, dtype=np.float32)
    if dark.ndim:
        rgb = rgb * (1.0 - dark[..., None]) + 0.06 * dark[..., None]
        alpha = alpha * (1.0 - dark) + 0.92 * cov * dark
    alpha = alpha * f.amul
    alpha = np.where(alpha < _ALPHA_FLOOR, 0.0, alpha)
    return rgb, alpha


def _render_window(obj: ObjectSpec, size: int, frames: int, centre: np.ndarray | None = None):
    """Evaluate one object on a per-frame window that follows it (the whole frame when the
    object is large): (origin (T, 2) int x0/y0 of each window, premultiplied RGB (T, S, S, 3),
    alpha (T, S, S), path). `centre` (T, 2) pixels replaces the motion's own path (trajectories)."""
    path = motion_path(obj, size, frames)
    if centre is not None:
        path = replace(path, centre=np.asarray(centre, dtype=np.float64).reshape(frames, 2))
    cu, cv, reach = shapes.calibration(obj.subject, obj.variant)
    params = shapes.variant_params(obj.subject, obj.variant)
    radius = obj.radius * size
    pad = {"glowing": 1.4, "smoky": 0.3}.get(obj.material, 0.05)
    half = int(math.ceil((reach + pad) * radius * path.scale.max())) + 2
    win = 2 * half + 1
    if win < size:
        origin = np.floor(path.centre).astype(np.int64) - half  # (T, 2) x0, y0
    else:
        win = size
        origin = np.zeros((frames, 2), np.int64)
    ramp = np.arange(win, dtype=np.float32)
    X = (origin[:, 0, None].astype(np.float32) + ramp)[:, None, :]
    Y = (origin[:, 1, None].astype(np.float32) + ramp)[:, :, None]
    cx = path.centre[:, 0].astype(np.float32)[:, None, None]
    cy = path.centre[:, 1].astype(np.float32)[:, None, None]
    px = (radius * path.scale).astype(np.float32)[:, None, None]
    ca = np.cos(path.angle).astype(np.float32)[:, None, None]
    sa = np.sin(path.angle).astype(np.float32)[:, None, None]
    u0, v0 = (X - cx) / px, (cy - Y) / px
    u = ca * u0 + sa * v0 + np.float32(cu)
    v = ca * v0 - sa * u0 + np.float32(cv)
    tau = _tau(frames).astype(np.float32)[:, None, None]
    f = shapes.SHAPES[obj.subject](u, v, tau, px, params)
    rgb, alpha = _material(f, obj, u, v, tau, px)
    alpha = np.broadcast_to(alpha, u.shape).astype(np.float32)
    return origin, (rgb * alpha[..., None]).astype(np.float32), alpha, path


def render(spec: ClipSpec, size: int = DEFAULT_SIZE, frames: int = DEFAULT_FRAMES, centres=None):
    """Composite a spec back to front: (rgba (T,H,W,4), masks (N,T,H,W), track (N,T,2)); `centres`
    (N, T, 2) pixels, if given, moves each object along its own path instead of its motion's."""
    n_obj = len(spec.objects)
    masks = np.zeros((n_obj, frames, size, size), np.float32)
    tracks = np.zeros((n_obj, frames, 2), np.float32)
    acc = acc_a = None  # premultiplied RGB and alpha while compositing
    for n, obj in enumerate(spec.objects):
        origin, win, win_a, path = _render_window(obj, size, frames, None if centres is None else centres[n])
        tracks[n] = path.centre
        if win.shape[1] == size and not origin.any():
            rgb, alpha = win, win_a
            masks[n] = alpha
        else:  # paste the in-frame part of every frame's window into the full frame
            s = win.shape[1]
            alpha = masks[n]
            rgb = np.zeros((frames, size, size, 3), np.float32)
            for t in range(frames):
                x0, y0 = int(origin[t, 0]), int(origin[t, 1])
                xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + s, size), min(y0 + s, size)
                if xa < xb and ya < yb:
                    alpha[t, ya:yb, xa:xb] = win_a[t, ya - y0 : yb - y0, xa - x0 : xb - x0]
                    rgb[t, ya:yb, xa:xb] = win[t, ya - y0 : yb - y0, xa - x0 : xb - x0]
        if acc is None:
            acc, acc_a = rgb, alpha.copy()
        else:
            keep = 1.0 - alpha
            acc = rgb + acc * keep[..., None]
            acc_a = alpha + acc_a * keep
    np.minimum(acc_a, 1.0, out=acc_a)
    inv = np.reciprocal(np.maximum(acc_a, np.float32(1e-12)))
    inv[acc_a <= 0] = 0.0  # straight alpha: fully transparent pixels carry no colour
    acc *= inv[..., None]
    np.minimum(acc, 1.0, out=acc)
    return np.concatenate([acc, acc_a[..., None]], axis=-1), masks, tracks


def make_clip(seed: int, size: int = DEFAULT_SIZE, frames: int = DEFAULT_FRAMES,
              spec: ClipSpec | None = None) -> Sample:
    """The clip for `seed` (spec drawn from it unless given; the caption phrasing always is)."""
    rng = np.random.default_rng([int(seed), 0x52474241])
    if spec is None:
        spec = sample_spec(rng)
    caption = caption_for(spec, rng)
    rgba, masks, track = render(spec, size, frames)
    return Sample(rgba, caption, list(spec.objects), track, masks, DEFAULT_FPS, int(seed))


class ProceduralDataset:
    """Indexable procedural clips: item i of split "train" is seed `base + i`, of "heldout" is
    seed `HELDOUT_SEED_BASE + base + i`. Train seeds are always < HELDOUT_SEED_BASE, so the
    splits are disjoint by construction."""

    def __init__(self, split: str = "train", length: int | None = None, size: int = DEFAULT_SIZE,
                 frames: int = DEFAULT_FRAMES, base: int = 0):
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        if base < 0:
            raise ValueError("base must be >= 0")
        default = HELDOUT_SEED_BASE - base if split == "train" else 10_000
        self.length = default if length is None else int(length)
        if split == "train" and base + self.length > HELDOUT_SEED_BASE:
            raise ValueError(f"train seeds must stay below {HELDOUT_SEED_BASE}")
        self.split, self.size, self.frames, self.base = split, size, frames, base

    def seed(self, index: int) -> int:
        if not 0 <= index < self.length:
            raise IndexError(index)
        offset = HELDOUT_SEED_BASE if self.split == "heldout" else 0
        return offset + self.base + index

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        return make_clip(self.seed(int(index)), self.size, self.frames)

    @staticmethod
    def collate(samples: list[Sample]) -> dict:
        """Batch for training: video (B, 4, T, H, W) float tensor, captions list, seeds list."""
        import torch

        return {
            "video": torch.stack([s.video_tensor() for s in samples]),
            "captions": [s.caption for s in samples],
            "seeds": [s.seed for s in samples],
        }
