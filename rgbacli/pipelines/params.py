"""Generate parameters: plain data, importable without torch (batch planning needs no models)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    dynamic_cfg: bool = False  # CogVideoXPipeline's use_dynamic_cfg (the TransPixar preset)
    # Wan-Alpha v2.0's noise-mean shift (rgbacli/models/noise_shift.py): the mean, and a mask file or
    # ellipse centres [[x, y], ...] (fractions; 2 = a move) with a size [w, h]; nothing is shifted without either.
    alpha_shift: float | None = None
    alpha_mask: str | None = None
    alpha_center: list | None = None
    alpha_size: list | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def sampling_key(self) -> tuple:
        """What clips sampled in one batch must share (everything but prompt, negative and seed)."""
        return (self.frames, self.width, self.height, self.steps, self.guidance, self.shift, self.solver,
                self.motion_guidance, self.dynamic_cfg, self.alpha_shift, self.alpha_mask,
                _frozen(self.alpha_center), _frozen(self.alpha_size))


def _frozen(value):
    """Lists (from JSON) → nested tuples, so the sampling key can be compared and hashed."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def params_from_sampling(sampling: dict, prompt: str, **overrides) -> GenerateParams:
    """Fill unset (None) parameters from a preset's `sampling` defaults."""
    base = GenerateParams(prompt=prompt)
    values = {k: v for k, v in sampling.items() if hasattr(base, k)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["prompt"] = prompt
    return GenerateParams(**{**asdict(base), **values})
