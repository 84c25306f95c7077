"""Flow-matching samplers from diffusers, built from the CLI/preset solver name and shift."""

from __future__ import annotations

import torch

from rgbacli.errors import UsageError

SOLVERS = ("unipc", "euler", "cogvideox-dpm", "cogvideox-ddim")

# CogVideoX-5B's scheduler_config.json (v-prediction, zero-terminal-SNR scaled-linear betas)
COGVIDEOX_SCHEDULER = dict(prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True,
                           snr_shift_scale=1.0, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           clip_sample=False, set_alpha_to_one=True, steps_offset=0)


class CogVideoXDPMSolver:
    """diffusers' `CogVideoXDPMScheduler` behind the usual `step(prediction, timestep, sample)` call.

    CogVideoXPipeline threads two things through its loop for this scheduler: the previous step's
    x0 estimate and the previous timestep, and a generator for the solver's noise (it is an SDE
    solver). This wrapper keeps both, one CPU generator per clip (seeded by the clip's seed and
    advanced past its initial noise, as the pipeline's one generator is), and draws the noise in
    CogVideoX's (B, F, C, H, W) layout, so the same seed gives CogVideoXPipeline's numbers."""

    def __init__(self, **config):
        from diffusers import CogVideoXDPMScheduler

        self.inner = CogVideoXDPMScheduler(**config)
        self.generators: list[torch.Generator] | None = None
        self._old_x0 = self._previous = None

    def __getattr__(self, name):  # config, timesteps, alphas_cumprod, init_noise_sigma, ...
        return getattr(self.__dict__["inner"], name)

    def set_timesteps(self, steps: int, device=None) -> None:
        self.inner.set_timesteps(steps, device=device)
        self._old_x0 = self._previous = None

    def seed_noise(self, seeds: list[int], skip: int = 0) -> None:
        """One generator per clip; `skip` values (the clip's initial noise) are drawn first."""
        self.generators = []
        for s in seeds:
            g = torch.Generator("cpu").manual_seed(int(s))
            if skip:
                torch.randn(skip, generator=g)
            self.generators.append(g)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = False):
        gens = self.generators
        if gens is not None and len(gens) != sample.shape[0]:
            raise ValueError(f"{len(gens)} noise generators for a batch of {sample.shape[0]}")
        prev, self._old_x0 = self.inner.step(
            model_output.transpose(1, 2), self._old_x0, timestep, self._previous, sample.transpose(1, 2),
            generator=gens, return_dict=False)
        self._previous = timestep
        return (prev.transpose(1, 2).contiguous(),)


def make_scheduler(solver: str, shift: float, num_train_timesteps: int = 1000):
    """UniPC in flow-prediction mode (Wan's default), Euler flow matching, or CogVideoX's DPM
    (the TransPixar/CogVideoX default) or DDIM."""
    if solver == "unipc":
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       num_train_timesteps=num_train_timesteps, flow_shift=shift)
    if solver == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    if solver == "cogvideox-ddim":
        from diffusers import CogVideoXDDIMScheduler

        return CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
    if solver == "cogvideox-dpm":
        return CogVideoXDPMSolver(**COGVIDEOX_SCHEDULER)
    raise UsageError(f"unknown solver '{solver}' (use one of: {', '.join(SOLVERS)})")


def predicted_x0(scheduler, step: int, timestep, sample, model_output):
    """The clean-latent estimate behind one step's prediction: `sample − σ·v` for flow matching
    (the velocity v = ε − x0), `√ᾱ·x − √(1−ᾱ)·v` for v-prediction DDPM-style schedulers."""
    if getattr(scheduler.config, "prediction_type", None) == "v_prediction":
        a = scheduler.alphas_cumprod.to(sample.device)[int(timestep)]
        return a.sqrt() * sample - (1 - a).sqrt() * model_output
    return sample - scheduler.sigmas[step].to(sample.device) * model_output


def x0_coefficient(scheduler, step: int):
    """How much of the clean latent is in the sample at `step` (index into the schedule; the
    last index is the end): `1 − σ` for flow matching, `√ᾱ` for v-prediction schedulers."""
    if getattr(scheduler.config, "prediction_type", None) == "v_prediction":
        ts = scheduler.timesteps
        return scheduler.alphas_cumprod[int(ts[step])].sqrt() if step < len(ts) else torch.tensor(1.0)
    return 1 - scheduler.sigmas[step]
