"""Two RGBA keyframes → the in-between clip: pinned keyframes + StoryDiffusion's semantic motion predictor.

Steps (the sampling steps are the text-to-RGBA pipeline's, reused as they are):

    encode_prompt (t2v) → prepare_latents (t2v) → encode_keyframes → motion_embeddings
      → denoise (t2v; `cond` = the SMP's per-frame embeddings, the step callback = the pins) → decode (t2v)
      → restore_keyframes (A and B as the ends exactly, the VAE's loss carried along the clip's track)

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

from rgbacli.backends import KEYFRAME_CHUNK, Backend
from rgbacli.console import warn
from rgbacli.engine import Engine
from rgbacli.models.semantic_motion import COND_KEY, attach_smp
from rgbacli.pipelines.guidance import GuidancePlan
from rgbacli.pipelines.params import GenerateParams
from rgbacli.pipelines.schedulers import make_scheduler, x0_coefficient
from rgbacli.pipelines.t2v import TextToRGBAPipeline


# The pins replace the sample after every step. A multistep solver (UniPC, DPM) keeps the previous
# sample and predictions, which then disagree with it: the in-between frames fall apart (tiny, 8
# held-out clips from the guide at step 7 of 16: centroid error 7.4 px with UniPC, 2.2 px with Euler).
FIRST_ORDER = {"unipc": "euler", "cogvideox-dpm": "cogvideox-ddim"}
DEFAULT_GUIDE = 0.5  # share of the steps the motion guide replaces (docs/interpolate.md)
# How far into the clip the keyframes' residual is carried (share of the clip from each end): on 8
# held-out tiny clips, 0.25 gave the best in-between IoU (0.474; 0: 0.472, 0.5: 0.469, 1: 0.456).
CARRY_REACH = 0.25


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


def centroid(alpha: torch.Tensor) -> torch.Tensor:
    """(B, H, W) alpha → (B, 2) alpha-weighted centre x, y in pixels (the frame's centre if empty)."""
    b, h, w = alpha.shape
    ys, xs = torch.arange(h, dtype=alpha.dtype), torch.arange(w, dtype=alpha.dtype)
    mass = alpha.sum((1, 2))
    cx = (alpha.sum(1) * xs).sum(1) / mass.clamp(min=1e-6)
    cy = (alpha.sum(2) * ys).sum(1) / mass.clamp(min=1e-6)
    empty = mass < 1e-6
    return torch.stack([torch.where(empty, torch.full_like(cx, (w - 1) / 2), cx),
                        torch.where(empty, torch.full_like(cy, (h - 1) / 2), cy)], dim=1)


def shift_image(rgba: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) premultiplied RGBA moved by `offset` (B, 2) pixels (x, y), bilinear, transparent
    where it uncovers."""
    b, _, h, w = rgba.shape
    theta = torch.zeros(b, 2, 3, dtype=rgba.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * offset[:, 0] / w  # align_corners=False: a pixel is 2/w in grid units
    theta[:, 1, 2] = -2 * offset[:, 1] / h
    grid = torch.nn.functional.affine_grid(theta, (b, 4, h, w), align_corners=False)
    return torch.nn.functional.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def premultiplied(rgba: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) straight → premultiplied."""
    return torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], 1)


def straight(rgba: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) premultiplied (possibly out of range after mixing) → straight in [0, 1]; colour
    under alpha 0 becomes 0."""
    alpha = rgba[:, 3:].clamp(0, 1)
    rgb = torch.where(alpha > 1e-6, rgba[:, :3].clamp(min=0) / alpha.clamp(min=1e-6), torch.zeros_like(rgba[:, :3]))
    return torch.cat([rgb.clamp(0, 1), alpha], 1)


def moving_crossfade(start: torch.Tensor, end: torch.Tensor, length: int) -> torch.Tensor:
    """The motion guide: (B, 4, H, W) straight keyframes → (B, 4, length, H, W) straight RGBA in which
    A slides from its alpha centroid to B's while it crossfades into B sliding in from A's
    (premultiplied, so edges do not darken). Frame 0 is A and the last frame B, exactly."""
    ca, cb = centroid(start[:, 3]), centroid(end[:, 3])
    pa, pb = premultiplied(start), premultiplied(end)
    frames = []
    for i in range(length):
        w = i / (length - 1)
        frames.append(straight((1 - w) * shift_image(pa, (cb - ca) * w) + w * shift_image(pb, (ca - cb) * (1 - w))))
    return torch.stack(frames, 2)


@torch.no_grad()
def guide_latents(backend: Backend, start: torch.Tensor, end: torch.Tensor, frames: int, latent_frames: int) -> torch.Tensor:
    """The motion guide (:func:`moving_crossfade`, `frames` pixel frames) → the DiT's latents
    (B, C, copies·latent_frames, h, w). The VAE encodes 1 + 4k frames: the guide is padded with its
    last frame to that length and its first `latent_frames` latent frames kept. The guide is drawn
    where the keyframes are (CPU) and encoded where the VAE is. `rgba train smp` encodes its clips'
    guides with this too, so it trains on what the sampler starts from."""
    guide = moving_crossfade(start, end, frames)
    length = 1 + KEYFRAME_CHUNK * -(-(frames - 1) // KEYFRAME_CHUNK)
    guide = torch.cat([guide, guide[:, :, -1:].expand(-1, -1, length - frames, -1, -1)], dim=2)
    z = backend.encode(guide.to(next(backend.vae.parameters()).device)).float()
    return z.unflatten(2, (backend.copies, -1))[:, :, :, :latent_frames].flatten(2, 3)


def carry_keyframes(video: torch.Tensor, start: torch.Tensor, end: torch.Tensor, strength: float = 1.0,
                    held: int = 1, reach: float = CARRY_REACH) -> torch.Tensor:
    """Exact keyframe ends: (T, H, W, 4) straight decoded clip → the clip whose first frame is A and
    whose last `held` frames are B (`strength` 1), with what the VAE lost at each end carried into
    the neighbouring frames so there is no jump in sharpness.

    The pins make the ends the keyframes' *latents*; the decoder's round trip still blurs them (tiny:
    alpha IoU 0.82 / 0.68). The residual r_A = A − frame 0 (premultiplied) is added to frame k moved
    along the clip's own alpha-centroid track (c_k − c_0), weighted (1 − k / (reach·(T−1)))₊ · strength;
    r_B alike from the end. `strength` 0 leaves the clip as decoded."""
    if strength <= 0:
        return video
    t = video.shape[0]
    v = premultiplied(video.permute(0, 3, 1, 2))  # (T, 4, H, W)
    track = centroid(video[..., 3])  # (T, 2)
    last = t - held  # the first of the frames that hold B
    span = max(reach * (t - 1), 1.0)
    k = torch.arange(t, dtype=v.dtype)
    w_start = (1 - k / span).clamp(min=0)
    w_end = torch.where(k >= last, 1.0, (1 - (last - k) / span).clamp(min=0))
    out = v.clone()
    for key, ref, w in ((start, 0, w_start), (end, last, w_end)):
        residual = (premultiplied(key) - v[ref:ref + 1]).expand(t, -1, -1, -1)  # (T, 4, H, W)
        out += strength * w.view(-1, 1, 1, 1) * shift_image(residual, track - track[ref])
    touched = (w_start > 0) | (w_end > 0)
    carried = straight(out).permute(0, 2, 3, 1)
    result = torch.where(touched.view(-1, 1, 1, 1), carried, video).contiguous()  # the rest exactly as decoded
    if strength >= 1:  # exactly the keyframes, not their float round trip through premultiplication
        result[0] = start[0].permute(1, 2, 0)
        result[last:] = end[0].permute(1, 2, 0)
    return result


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

    def initial(self, latents: torch.Tensor, p: GenerateParams, step: int = 0,
                z_guide: torch.Tensor | None = None) -> torch.Tensor:
        """The sample the run starts from at `step`, with the pins: the initial noise, or from a
        later step the guide's latents `z_guide` noised to that step's level (SDEdit)."""
        scheduler = make_scheduler(p.solver, p.shift)
        scheduler.set_timesteps(p.steps, device=latents.device)
        x0_coef, noise_coef = x0_coefficient(scheduler, step), noise_coefficient(scheduler, step)
        if z_guide is not None:
            latents = noise_coef * latents + x0_coef * z_guide.to(latents)
        return self.apply(latents, x0_coef, noise_coef)

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
    @torch.no_grad()
    def encode_guide(self, start: torch.Tensor, end: torch.Tensor, frames: int, latent_frames: int) -> torch.Tensor:
        """The motion guide's latents (:func:`guide_latents`) on the engine's device."""
        eng = self.engine
        with eng.on_device(eng.backend.vae):
            return guide_latents(eng.backend, start, end, frames, latent_frames)

    def restore_keyframes(self, video: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                          strength: float) -> torch.Tensor:
        """The decoded clip (T, H, W, 4) with A and B as its ends exactly (:func:`carry_keyframes`); B
        holds the last latent frame's `temporal_factor` pixel frames, as the pins encoded it."""
        return carry_keyframes(video, start, end, strength, held=min(self.engine.backend.temporal_factor,
                                                                     video.shape[0] - 1))

    def __call__(self, p: GenerateParams, start, end, keyframe_strength: float = 1.0, use_smp: bool = True,
                 progress=None, smp_scale: float = 1.0, guide: float = DEFAULT_GUIDE,
                 exact_keyframes: bool = True) -> InterpolateResult:
        """`start`/`end`: (H, W, 4) straight RGBA in [0, 1] at the size of `p`; `smp_scale` multiplies
        the predictor's extra attention output (IP-adapter's scale; 1 = as trained); `guide` is the
        share of the steps the motion guide replaces: sampling starts from it, noised to the level of
        the step after them, and the model refines it from there (SDEdit; 0: from noise);
        `exact_keyframes` writes A and B as the clip's ends (:meth:`restore_keyframes`; False: the
        decoder's own first and last frames)."""
        eng, t2v = self.engine, self.t2v
        timings, t0 = {}, time.perf_counter()
        p = replace(p, solver=FIRST_ORDER.get(p.solver, p.solver))
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
        pixel_frames = 1 + eng.backend.temporal_factor * (frames - 1)
        z_start, z_end = self.encode_keyframes(a, b, pixel_frames)
        first = round(float(guide) * p.steps)  # the steps the guide replaces: sampling starts after them
        z_guide = self.encode_guide(a, b, pixel_frames, frames) if first else None
        cond = None
        if smp is not None:
            cond = {COND_KEY: self.motion_embeddings(smp, a, b, frames)}
        timings["encode_s"] = time.perf_counter() - t0

        latents = t2v.prepare_latents(checked, [p.seed])  # the noise depends on the seed and shape alone
        pins = KeyframePins(z_start, z_end, latents, eng.backend.copies, keyframe_strength)
        latents = pins.initial(latents, p, first, z_guide)
        t1 = time.perf_counter()
        attachment = attach_smp(eng.backend.transformer, smp) if smp is not None else None
        scales = [c.scale for c in smp.cross] if smp is not None else []
        try:
            for c in smp.cross if smp is not None else []:
                c.scale = smp_scale
            latents = t2v.denoise(latents, text, uncond, p, plan, cond, callback_on_step_end=pins, progress=progress,
                                  first_step=first)
        finally:
            if attachment is not None:
                attachment.remove()
                for c, scale in zip(smp.cross, scales):
                    c.scale = scale
        timings["denoise_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        video = t2v.decode(latents, p)[0]
        if exact_keyframes:
            video = self.restore_keyframes(video, a, b, keyframe_strength)
        timings["decode_s"] = time.perf_counter() - t2
        timings["total_s"] = sum(timings.values())
        return InterpolateResult(video, p, smp is not None, float(keyframe_strength), timings, plan.num_passes)
