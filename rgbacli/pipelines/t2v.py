"""Text → RGBA video, as named steps: encode_prompt → prepare_latents → denoise → decode.

The engine's backend (rgbacli/backends.py) shapes the noise, calls the DiT and decodes, so the
loop below is the same for Wan-Alpha and alpha tokens. Guidance (text CFG, GenTron motion-free
guidance) is planned once per run (rgbacli/pipelines/guidance.py) so that no pass runs twice and
guidance 1.0 runs a single conditional pass per step. Several clips of the same geometry sample
as one batch (`generate_batch`); a per-step callback can read or replace the latents.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from rgbacli.engine import Engine
from rgbacli.errors import UsageError
from rgbacli.models.attention import context_of
from rgbacli.models.motion_free import enable_motion_free
from rgbacli.models.noise_shift import NoiseShift
from rgbacli.pipelines.guidance import GuidancePlan, dynamic_text_scale
from rgbacli.pipelines.params import GenerateParams, params_from_sampling
from rgbacli.pipelines.schedulers import make_scheduler, predicted_x0

# callback_on_step_end(pipeline, step, timestep, values) -> dict of replacements (e.g. {"latents": …})
StepCallback = Callable[["TextToRGBAPipeline", int, torch.Tensor, dict], dict]


@dataclass
class GenerateResult:
    """Straight-alpha RGBA frames (T, H, W, 4) float32 in [0, 1] plus timings and pass counts."""

    frames: torch.Tensor
    params: GenerateParams
    timings: dict = field(default_factory=dict)
    passes_per_step: int = 1


def params_from_preset(engine: Engine, prompt: str, **overrides) -> GenerateParams:
    """Fill unset (None) parameters from the engine's preset sampling defaults."""
    return params_from_sampling(engine.preset.sampling, prompt, **overrides)


class TextToRGBAPipeline:
    """Samples RGBA clips from prompts with the engine's text encoder, DiT and VAE."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # ------------------------------------------------------------------ geometry
    def latent_shape(self, p: GenerateParams) -> tuple[int, int, int, int]:
        """(channels, latent frames, latent height, latent width) of one clip's noise."""
        backend = self.engine.backend  # loads the VAE and the DiT (once per engine)
        tf, sf = backend.temporal_factor, backend.spatial_factor
        p.validate(backend.limits(self.engine.preset.name), prompt=False)  # one line naming the limit (exit 2)
        t = 1 + math.ceil((p.frames - 1) / tf)  # decode ≥ frames, then trim
        return backend.latent_channels, t, p.height // sf, p.width // sf

    # ------------------------------------------------------------------ steps
    def guidance_plan(self, p: GenerateParams) -> GuidancePlan:
        """Which passes each step batches: text CFG and GenTron motion-free guidance."""
        return GuidancePlan.build(p.guidance, p.motion_guidance)

    def encode_prompt(self, prompts: list[str], negatives: list[str], plan: GuidancePlan, warn: bool = True):
        """(text (B, L, D), unconditional text (B, L, D) or None when the plan needs none); `warn`:
        the tiny encoder names words it cannot read (a caller that said so once passes False)."""
        eng = self.engine
        with eng.on_device(eng.component("text_encoder")) as te:
            text = te.encode(prompts, warn=warn)[0].to(eng.device, eng.dtype)
            uncond = te.encode(negatives, warn=warn)[0].to(eng.device, eng.dtype) if plan.needs_uncond_text else None
        return text, uncond

    def prepare_latents(self, p: GenerateParams, seeds: list[int]) -> torch.Tensor:
        """Noise per clip from a CPU generator seeded by its seed (device-independent), mean-shifted
        outside a mask when `p` asks for Wan-Alpha v2.0's noise shift, shaped by the backend."""
        shape = (1, *self.latent_shape(p))
        noise = torch.cat([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s)), dtype=torch.float32)
                           for s in seeds])
        shift = NoiseShift.from_options(p.alpha_shift, p.alpha_mask, p.alpha_center, p.alpha_size)
        if shift is not None:
            noise = shift.apply(noise)
        return self.engine.backend.prepare_latents(noise.to(self.engine.device))

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, text: torch.Tensor, uncond: torch.Tensor | None, p: GenerateParams,
                plan: GuidancePlan, cond: dict[str, torch.Tensor] | None = None,
                callback_on_step_end: StepCallback | None = None, progress=None,
                seeds: list[int] | None = None, first_step: int = 0) -> torch.Tensor:
        """The flow-matching loop: one batched DiT forward per step (all guidance passes), `cond` (extra
        conditioning, batch first) replicated for every pass and visible to attention behaviours as
        `context.values["cond"]`; after each step `callback_on_step_end` sees the new `latents`, the
        `sample` the step started from, the guided `prediction` and the `x0` estimate behind it, and
        may return replacement `latents`. `seeds` (one per clip) seed a stochastic solver's noise;
        `p.dynamic_cfg` changes the text scale per step as CogVideoXPipeline's `use_dynamic_cfg`.
        `first_step` > 0 starts part-way (SDEdit, as diffusers' img2img `strength`): `latents` is then
        the sample at that step's noise level."""
        eng, backend = self.engine, self.engine.backend
        scheduler = self.scheduler = make_scheduler(p.solver, p.shift)  # step callbacks may read its schedule
        scheduler.set_timesteps(p.steps, device=eng.device)
        if hasattr(scheduler, "seed_noise"):  # an SDE solver: each clip's generator, past its initial noise
            scheduler.seed_noise(seeds or [0] * len(latents), skip=math.prod(self.latent_shape(p)))
        if first_step:
            if hasattr(scheduler, "set_begin_index"):  # index-stepping solvers (Euler, UniPC) start there
                scheduler.set_begin_index(first_step)
        else:
            latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)
        dynamic = p.dynamic_cfg and plan.needs_uncond_text
        with eng.on_device(backend.transformer) as model:
            context = context_of(model)
            motion_free = enable_motion_free(model) if plan.uses_motion_off else None
            try:
                for i, timestep in enumerate(scheduler.timesteps):
                    if i < first_step:
                        continue
                    batch = plan.expand(latents.to(eng.dtype), text, uncond, cond)
                    with context.use(motion_off=batch.motion_off, step=i, steps=len(scheduler.timesteps),
                                     cond=batch.cond, trajectory_off=batch.trajectory_off):
                        out = backend.predict(batch.latents, timestep.expand(len(batch.latents)).to(eng.device),
                                              batch.text)
                    step_plan = plan.with_text_scale(dynamic_text_scale(p.guidance, p.steps, timestep)) \
                        if dynamic else plan
                    pred = step_plan.combine(out.float())
                    sample = latents
                    latents = scheduler.step(pred, timestep, latents, return_dict=False)[0]
                    if callback_on_step_end is not None:
                        values = {"latents": latents, "prediction": pred, "sample": sample,
                                  "x0": predicted_x0(scheduler, i, timestep, sample, pred)}
                        latents = callback_on_step_end(self, i, timestep, values).get("latents", latents)
                    if progress is not None:
                        progress(i + 1, len(scheduler.timesteps))
            finally:
                if motion_free is not None:
                    motion_free.remove()
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, p: GenerateParams, rgba: bool = True) -> torch.Tensor:
        """Latents → (B, T, H, W, 4) straight RGBA float32 in [0, 1], trimmed to `p.frames`
        (RGB-only decode for benchmarks: alpha set opaque)."""
        eng = self.engine
        with eng.on_device(eng.backend.vae):
            video = eng.backend.decode(latents, rgba)  # float32 in; each VAE casts to its own dtype
        video = video[:, :, : p.frames].float().clamp(0, 1)  # (B, C, T, H, W)
        if video.shape[1] == 3:
            video = torch.cat([video, torch.ones_like(video[:, :1])], dim=1)
        return video.permute(0, 2, 3, 4, 1).cpu().contiguous()

    # ------------------------------------------------------------------ whole runs
    def __call__(self, p: GenerateParams, progress=None, decode: str = "rgba", cond: dict | None = None,
                 callback_on_step_end: StepCallback | None = None) -> GenerateResult:
        """Generate one clip; `progress(step, total)` is called after each step."""
        return self.generate_batch([p], progress, decode, cond, callback_on_step_end)[0]

    def generate_batch(self, params: list[GenerateParams], progress=None, decode: str = "rgba",
                       cond: dict | None = None, callback_on_step_end: StepCallback | None = None,
                       warn: bool = True) -> list[GenerateResult]:
        """Generate clips that share their sampling settings (see `GenerateParams.sampling_key`) as one
        batch; each keeps its own prompt, negative prompt and seed."""
        if not params:
            return []
        p = params[0]
        if any(q.sampling_key() != p.sampling_key() for q in params[1:]):
            raise UsageError("clips sampled as one batch must share frames, size, steps, guidance, shift and solver")
        eng = self.engine
        timings = {}
        t0 = time.perf_counter()
        self.latent_shape(p)  # validates and loads the VAE and the DiT (once per engine)
        eng.component("text_encoder")
        timings["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = self.guidance_plan(p)
        text, uncond = self.encode_prompt([q.prompt for q in params], [q.negative for q in params], plan, warn)
        timings["text_s"] = time.perf_counter() - t0

        latents = self.prepare_latents(p, [q.seed for q in params])
        t1 = time.perf_counter()
        latents = self.denoise(latents, text, uncond, p, plan, cond, callback_on_step_end, progress,
                               seeds=[q.seed for q in params])
        timings["denoise_s"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        frames = self.decode(latents, p, rgba=decode == "rgba")
        timings["decode_s"] = time.perf_counter() - t2
        timings["total_s"] = sum(timings.values())
        return [GenerateResult(frames[i], q, dict(timings), plan.num_passes) for i, q in enumerate(params)]
