"""Two RGBA keyframes → the in-between clip: pinned keyframes + StoryDiffusion's semantic motion predictor.

Steps (the sampling steps are the text-to-RGBA pipeline's, reused as they are):

    encode_prompt (t2v) → prepare_latents (t2v) → encode_keyframes → motion_embeddings
      → denoise (t2v; `cond` = the SMP's per-frame embeddings, the step callback = the pins) → decode (t2v)

- **Pinned keyframes**: A and B go through the preset's own encoder into the DiT's latent space
  (`Backend.encode_keyframes`: the RGBA VAE for Wan-Alpha; RGB and alpha through the plain VAE for
  alpha tokens). The causal VAE's latent frame 0 is pixel frame 0 alone (A's latent is exact); the
  last latent frame folds in the last `temporal_factor` pixel frames and depends on the frames
  before it, so B's latent is the last latent frame of a context clip (a crossfade A → B whose last
  `temporal_factor` frames are B): the clip ends on B held over that last group. After every step the first and
  last latent frames (of each copy, for alpha tokens) are set to the keyframe latent noised to the
  new noise level with the clip's own initial noise, `σ·ε + (1 − σ)·z_key`, blended by
  `keyframe_strength` (1 = held exactly, 0 = free).
- **SMP** (rgbacli/models/semantic_motion.py): embeddings of A and B, interpolated over the latent
  frames and refined by its transformer, reach every block's cross-attention as `cond["smp"]`;
  its projections are attached for the run and taken off after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from rgbacli.console import warn
from rgbacli.engine import Engine
from rgbacli.models.semantic_motion import COND_KEY, attach_smp
from rgbacli.pipelines.guidance import GuidancePlan
from rgbacli.pipelines.params import GenerateParams
from rgbacli.pipelines.schedulers import make_scheduler, x0_coefficient
from rgbacli.pipelines.t2v import TextToRGBAPipeline


@dataclass
class InterpolateResult:
    """Straight-alpha RGBA frames (T, H, W, 4) float32 in [0, 1]."""

    frames: torch.Tensor
    params: GenerateParams
    smp: bool
    keyframe_strength: float
    timings: dict = field(default_factory=dict)
    passes_per_step: int = 1


def noise_coefficient(scheduler, step: int) -> torch.Tensor:
    """How much of the initial noise the sample at `step` holds: σ for flow matching, √(1−ᾱ) else."""
    if getattr(scheduler.config, "prediction_type", None) == "v_prediction":
        return (1 - x0_coefficient(scheduler, step) ** 2).clamp(min=0).sqrt()
    return scheduler.sigmas[step]


def as_keyframe_tensor(rgba, device=None) -> torch.Tensor:
    """(H, W, 4) numpy/torch straight RGBA in [0, 1] → (1, 4, H, W) float32."""
    t = torch.from_numpy(np.ascontiguousarray(rgba)) if isinstance(rgba, np.ndarray) else rgba
    return t.float().permute(2, 0, 1)[None].contiguous().to(device)


class KeyframePins:
    """The step callback that holds each copy's first and last latent frame to the keyframes."""

    def __init__(self, z_start: torch.Tensor, z_end: torch.Tensor, noise: torch.Tensor, copies: int = 1,
                 strength: float = 1.0):
        self.z_start, self.z_end, self.copies, self.strength = z_start, z_end, copies, float(strength)
        v = noise.unflatten(2, (copies, -1))
        self.noise_start, self.noise_end = v[:, :, :, 0].clone(), v[:, :, :, -1].clone()

    def apply(self, latents: torch.Tensor, x0_coef, noise_coef) -> torch.Tensor:
        if self.strength == 0:
            return latents
        out = latents.clone()
        v = out.unflatten(2, (self.copies, -1))  # a view into `out`
        for idx, z, n in ((0, self.z_start, self.noise_start), (-1, self.z_end, self.noise_end)):
            target = noise_coef * n.to(v) + x0_coef * z.to(v)
            v[:, :, :, idx] = torch.lerp(v[:, :, :, idx], target, self.strength)  # exact at strength 1
        return out

    def initial(self, latents: torch.Tensor, p: GenerateParams) -> torch.Tensor:
        """The starting sample with the pins at the schedule's first noise level."""
        scheduler = make_scheduler(p.solver, p.shift)
        scheduler.set_timesteps(p.steps, device=latents.device)
        return self.apply(latents, x0_coefficient(scheduler, 0), noise_coefficient(scheduler, 0))

    def __call__(self, pipe, step: int, timestep, values: dict) -> dict:
        s = pipe.scheduler
        return {"latents": self.apply(values["latents"], x0_coefficient(s, step + 1), noise_coefficient(s, step + 1))}


class InterpolatePipeline:
    """Samples the transition from keyframe A to keyframe B on one engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.t2v = TextToRGBAPipeline(engine)

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def encode_keyframes(self, start: torch.Tensor, end: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4, H, W) × 2 → keyframe latents (B, C, copies, h, w) × 2 for a clip of `frames` pixel
        frames (see the module docstring)."""
        eng = self.engine
        with eng.on_device(eng.backend.vae):
            z_start, z_end = eng.backend.encode_keyframes(start.to(eng.device), end.to(eng.device), frames)
        return z_start.float(), z_end.float()

    def motion_predictor(self, use_smp: bool = True):
        """The preset's `[motion_predictor]`, or None (`--no-smp`, or a preset without one: said once)."""
        if not use_smp:
            return None
        if not self.engine.has("motion_predictor"):
            warn(f"preset '{self.engine.preset.name}' has no [motion_predictor]: pinned keyframes only")
            return None
        return self.engine.component("motion_predictor")

    @torch.no_grad()
    def motion_embeddings(self, smp, start: torch.Tensor, end: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """The SMP's per-latent-frame embeddings (B, F, L, D), in the engine's dtype."""
        eng = self.engine
        with eng.on_device(smp):
            dev = next(smp.parameters()).device
            emb = smp.embed(start.to(dev), end.to(dev), latent_frames)
        return emb.to(eng.device, eng.dtype)

    # ------------------------------------------------------------------ a whole run
    def __call__(self, p: GenerateParams, start, end, keyframe_strength: float = 1.0, use_smp: bool = True,
                 progress=None, smp_scale: float = 1.0) -> InterpolateResult:
        """`start`/`end`: (H, W, 4) straight RGBA in [0, 1] at the size of `p`; `smp_scale` multiplies
        the predictor's extra attention output (IP-adapter's scale; 1 = as trained)."""
        eng, t2v = self.engine, self.t2v
        timings, t0 = {}, time.perf_counter()
        # validates against the preset's limits and loads the VAE and the DiT; the prompt may be empty
        # here (the keyframes say what is shown), which a text-to-video clip may not
        checked = replace(p, prompt=p.prompt.strip() or "(keyframes)")
        _, frames, _, _ = t2v.latent_shape(checked)
        smp = self.motion_predictor(use_smp)
        timings["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = GuidancePlan.build(p.guidance, p.motion_guidance)
        text, uncond = t2v.encode_prompt([p.prompt], [p.negative], plan)
        a, b = as_keyframe_tensor(start), as_keyframe_tensor(end)
        z_start, z_end = self.encode_keyframes(a, b, 1 + eng.backend.temporal_factor * (frames - 1))
        cond = None
        if smp is not None:
            cond = {COND_KEY: self.motion_embeddings(smp, a, b, frames)}
        timings["encode_s"] = time.perf_counter() - t0

        latents = t2v.prepare_latents(checked, [p.seed])  # the noise depends on the seed and shape alone
        pins = KeyframePins(z_start, z_end, latents, eng.backend.copies, keyframe_strength)
        latents = pins.initial(latents, p)
        t1 = time.perf_counter()
        attachment = attach_smp(eng.backend.transformer, smp) if smp is not None else None
        scales = [c.scale for c in smp.cross] if smp is not None else []
        try:
            for c in smp.cross if smp is not None else []:
                c.scale = smp_scale
            latents = t2v.denoise(latents, text, uncond, p, plan, cond, callback_on_step_end=pins, progress=progress)
        finally:
            if attachment is not None:
                attachment.remove()
                for c, scale in zip(smp.cross, scales):
                    c.scale = scale
        timings["denoise_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        video = t2v.decode(latents, p)
        timings["decode_s"] = time.perf_counter() - t2
        timings["total_s"] = sum(timings.values())
        return InterpolateResult(video[0], p, smp is not None, float(keyframe_strength), timings, plan.num_passes)
