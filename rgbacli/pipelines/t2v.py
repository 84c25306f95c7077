"""Text → RGBA video: text encoder → DiT flow-matching sampler with guidance → RGBA VAE decode.

Two backends share this loop. Wan-Alpha: the DiT denoises one latent whose channels already
carry alpha, and the RGBA VAE decodes it with its RGB and alpha decoders. Alpha tokens
(TransPixar): the latent has twice the frames (RGB half, alpha half) and the plain VAE decodes
both halves. Guidance (text CFG, GenTron motion-free guidance) is planned once per run so that
no pass runs twice and guidance 1.0 runs a single conditional pass per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from rgbacli.engine import Engine
from rgbacli.errors import UsageError
from contextlib import nullcontext

from rgbacli.models.motion_free import enable_motion_free
from rgbacli.pipelines.guidance import GuidancePlan
from rgbacli.pipelines.schedulers import make_scheduler


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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerateResult:
    """Straight-alpha RGBA frames (T, H, W, 4) float32 in [0, 1] plus timings and pass counts."""

    frames: torch.Tensor
    params: GenerateParams
    timings: dict = field(default_factory=dict)
    passes_per_step: int = 1


def params_from_preset(engine: Engine, prompt: str, **overrides) -> GenerateParams:
    """Fill unset (None) parameters from the preset's sampling defaults."""
    base = GenerateParams(prompt=prompt)
    values = {k: v for k, v in engine.preset.sampling.items() if hasattr(base, k)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["prompt"] = prompt
    return GenerateParams(**{**asdict(base), **values})


class TextToRGBAPipeline:
    """Samples RGBA clips from a prompt with the engine's text encoder, DiT and RGBA VAE."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # ------------------------------------------------------------------ geometry
    def latent_shape(self, p: GenerateParams) -> tuple[int, int, int, int]:
        """(channels, latent frames, latent height, latent width) for the requested clip."""
        vae = self.engine.vae
        tf, sf = vae.temporal_factor, vae.spatial_factor
        patch = self._patch()
        if p.frames < 1:
            raise UsageError("--frames must be at least 1")
        mult = sf * patch
        if p.width % mult or p.height % mult or p.width < mult or p.height < mult:
            raise UsageError(f"--size {p.width}x{p.height}: width and height must be positive multiples of {mult} "
                             f"for preset '{self.engine.preset.name}'")
        t = 1 + math.ceil((p.frames - 1) / tf)  # decode ≥ frames, then trim
        return vae.latent_channels, t, p.height // sf, p.width // sf

    def _patch(self) -> int:
        cfg = self.engine.transformer.config
        ps = cfg.get("patch_size", 2)
        return int(ps[-1] if isinstance(ps, (tuple, list)) else ps)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(self, p: GenerateParams, progress=None, decode: str = "rgba") -> GenerateResult:
        """Run the whole generate; `progress(step, total)` is called after each step."""
        eng = self.engine
        timings = {}
        t0 = time.perf_counter()
        c, t, h, w = self.latent_shape(p)  # also loads the VAE and the DiT (once per engine)
        eng.text_encoder  # noqa: B018 - load before timing the encode
        timings["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = GuidancePlan.build(p.guidance, p.motion_guidance)
        alpha_tokens = eng.preset.backend == "alpha-tokens"

        with eng.on_device(eng.text_encoder) as te:
            cond = te.encode([p.prompt])[0].to(eng.device, eng.dtype)
            uncond = te.encode([p.negative])[0].to(eng.device, eng.dtype) if plan.needs_uncond_text else None
        timings["text_s"] = time.perf_counter() - t0

        gen = torch.Generator("cpu").manual_seed(int(p.seed))
        latents = torch.randn((1, c, t, h, w), generator=gen, dtype=torch.float32).to(eng.device)
        if alpha_tokens:
            latents = torch.cat([latents, latents], dim=2)  # alpha half starts from the same noise

        scheduler = make_scheduler(p.solver, p.shift)
        scheduler.set_timesteps(p.steps, device=eng.device)
        latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)
        rope = None
        if eng.preset.family == "cogvideox":
            from rgbacli.pipelines.cogvideox import rotary_embeddings

            rope = rotary_embeddings(eng.transformer, eng.vae.spatial_factor, p.height, p.width, t, eng.device)
        t1 = time.perf_counter()
        with eng.on_device(eng.transformer) as model:
            ctl = enable_motion_free(model) if plan.uses_motion_off else None
            try:
                for i, timestep in enumerate(scheduler.timesteps):
                    batch = plan.expand(latents.to(eng.dtype), cond, uncond)
                    x, ctx, off = batch.latents, batch.text, batch.motion_off
                    with ctl.motion_off(off) if ctl else nullcontext():
                        out = denoise(model, x, timestep.expand(len(x)).to(eng.device), ctx, rope)
                    pred = plan.combine(out.float())
                    latents = scheduler.step(pred, timestep, latents, return_dict=False)[0]
                    if progress is not None:
                        progress(i + 1, len(scheduler.timesteps))
            finally:
                if ctl is not None:
                    ctl.remove()
        timings["denoise_s"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        with eng.on_device(eng.vae) as vae:
            z = latents  # float32; each VAE casts to its own dtype
            if alpha_tokens:
                rgb_z, alpha_z = z[:, :, :t], z[:, :, t:]
                rgb = vae.decode_rgb(rgb_z)
                alpha = vae.decode_rgb(alpha_z).mean(dim=1, keepdim=True) if decode == "rgba" else None
                video = torch.cat([rgb, alpha], dim=1) if alpha is not None else rgb
            elif decode == "rgba":
                video = vae.decode(z)
            else:
                video = vae.decode_rgb_only(z)
        timings["decode_s"] = time.perf_counter() - t2
        timings["total_s"] = sum(timings.values())

        video = video[0, :, : p.frames].float().clamp(0, 1)  # (C, T, H, W)
        if video.shape[0] == 3:  # RGB-only decode (benchmarks): opaque alpha
            video = torch.cat([video, torch.ones_like(video[:1])], dim=0)
        return GenerateResult(video.permute(1, 2, 3, 0).cpu().contiguous(), p, timings, plan.num_passes)


def denoise(model, x: torch.Tensor, timestep: torch.Tensor, ctx: torch.Tensor, rope=None) -> torch.Tensor:
    """One DiT forward: diffusers models return a tuple, the alpha-token wrapper a tensor."""
    if hasattr(model, "alpha_lora"):
        out = model(x, timestep, ctx, image_rotary_emb=rope) if rope is not None else model(x, timestep, ctx)
    else:
        out = model(hidden_states=x, timestep=timestep, encoder_hidden_states=ctx, return_dict=False)
    return out[0] if isinstance(out, tuple) else out
