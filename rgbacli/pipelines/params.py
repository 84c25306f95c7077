"""Generate parameters: plain data, importable without torch (batch planning needs no models)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from rgbacli.errors import UsageError

SEED_MAX = 2**63 - 1  # seeds are stored as int64 (torch generators, numpy, safetensors metadata readers)


@dataclass(frozen=True)
class Limits:
    """What one preset's model can sample, read from its DiT and VAE (`Backend.limits()`).

    `max_latent_*` are the largest token grid the position table or RoPE holds (None: no table).
    Frame counts map to `1 + ceil((frames - 1) / temporal_factor)` latent frames; counts that are not
    `temporal_factor·k + 1` are decoded to the next such count and trimmed."""

    preset: str
    size_multiple: int
    temporal_factor: int
    patch_t: int = 1
    max_latent_frames: int | None = None
    max_rows: int | None = None
    max_cols: int | None = None
    table: str = "position table"

    @property
    def max_frames(self) -> int | None:
        if self.max_latent_frames is None:
            return None
        return 1 + (self.max_latent_frames * self.patch_t - 1) * self.temporal_factor

    @property
    def max_width(self) -> int | None:
        return None if self.max_cols is None else self.max_cols * self.size_multiple

    @property
    def max_height(self) -> int | None:
        return None if self.max_rows is None else self.max_rows * self.size_multiple

    def to_dict(self) -> dict:
        return {"preset": self.preset, "size_multiple": self.size_multiple, "frames_rule":
                f"{self.temporal_factor}k+1", "max_frames": self.max_frames, "max_width": self.max_width,
                "max_height": self.max_height, "table": self.table}


@dataclass
class GenerateParams:
    """Everything that determines one clip; same params + seed + device → same frames."""

    prompt: str
    negative: str = ""
    seed: int = 0
    frames: int = 17
    width: int = 64
    height: int = 64
    fps: float = 8.0
    steps: int = 20
    guidance: float = 1.0
    shift: float = 5.0
    solver: str = "unipc"
    motion_guidance: float | None = None
    trajectory: list | None = None  # (objects, frames, 2) output pixels (rgbacli/pipelines/trajectory.py)
    trajectory_method: str | None = None  # "tora", "noise" or "tora+noise"
    trajectory_shift: float | None = None  # the noise method's mean shift (preset sampling default)
    trajectory_direction: list | None = None  # and its per-channel direction (None: Wan-Alpha v2's background shift)
    trajectory_guidance: float | None = None  # CFG on tora's motion condition (None / 1: off; rgbacli/pipelines/guidance.py)
    dynamic_cfg: bool = False  # CogVideoXPipeline's use_dynamic_cfg (the TransPixar preset)
    # Wan-Alpha v2.0's noise-mean shift (rgbacli/models/noise_shift.py): the mean, and a mask file or
    # ellipse centres [[x, y], ...] (fractions; 2 = a move) with a size [w, h]; nothing is shifted without either.
    alpha_shift: float | None = None
    alpha_mask: str | None = None
    alpha_center: list | None = None
    alpha_size: list | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, limits: Limits | None = None, prompt: bool = True) -> "GenerateParams":
        """Refuse values no model can sample, before any work: a UsageError (exit 2) of one line
        naming the option and its limit. Without `limits` only the model-independent rules run;
        `prompt=False` skips the prompt (a shape check for settings shared by several prompts)."""
        if prompt and (not isinstance(self.prompt, str) or not self.prompt.strip()):
            raise UsageError("the prompt is empty (give some text to generate from)")
        _whole(self.seed, "--seed", 0, SEED_MAX, "0 to 2**63-1")
        _whole(self.steps, "--steps", 1, 10_000, "from 1 to 10000")
        _whole(self.frames, "--frames", 1, 100_000, "from 1 to 100000")
        for value in (self.width, self.height):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65_536:
                raise UsageError(f"--size {self.width}x{self.height}: width and height must be whole numbers "
                                 "from 1 to 65536")
        for name, value, low in (("--guidance", self.guidance, 0.0), ("--shift", self.shift, 0.0)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
                raise UsageError(f"{name} must be a finite number ≥ {low:g}, not {value}")
        for name, value in (("--motion-guidance", self.motion_guidance), ("--trajectory-guidance", self.trajectory_guidance)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a finite number ≥ 0, not {value}")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise UsageError(f"--fps must be a positive number, not {self.fps}")
        if limits is not None:
            self._check_limits(limits)
        return self

    def _check_limits(self, lim: Limits) -> None:
        m, where = lim.size_multiple, f"preset '{lim.preset}'"
        if self.width % m or self.height % m:
            raise UsageError(f"--size {self.width}x{self.height}: {where} needs width and height in multiples of {m}")
        if (lim.max_width and self.width > lim.max_width) or (lim.max_height and self.height > lim.max_height):
            raise UsageError(f"--size {self.width}x{self.height}: {where} allows at most {lim.max_width}x{lim.max_height} "
                             f"(its {lim.table} holds {lim.max_cols}x{lim.max_rows} tokens of {m}x{m} pixels)")
        if lim.max_frames is not None and self.frames > lim.max_frames:
            raise UsageError(f"--frames {self.frames}: {where} allows 1 to {lim.max_frames} frames (its {lim.table} "
                             f"holds {lim.max_latent_frames} latent frames; frames = {lim.temporal_factor}k+1)")

    def sampling_key(self) -> tuple:
        """What clips sampled in one batch must share (everything but prompt, negative and seed)."""
        return (self.frames, self.width, self.height, self.steps, self.guidance, self.shift, self.solver,
                self.motion_guidance, self.trajectory is not None, self.trajectory_method, self.trajectory_shift,
                tuple(self.trajectory_direction or ()), self.trajectory_guidance, self.dynamic_cfg, self.alpha_shift, self.alpha_mask,
                _frozen(self.alpha_center), _frozen(self.alpha_size))


def _frozen(value):
    """Lists (from JSON) → nested tuples, so the sampling key can be compared and hashed."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _whole(value, name: str, low: int, high: int, rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{name} must be a whole number {rule}, not {value}")


def params_from_sampling(sampling: dict, prompt: str, **overrides) -> GenerateParams:
    """Fill unset (None) parameters from a preset's `sampling` defaults."""
    base = GenerateParams(prompt=prompt)
    values = {k: v for k, v in sampling.items() if hasattr(base, k)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["prompt"] = prompt
    return GenerateParams(**{**asdict(base), **values})
