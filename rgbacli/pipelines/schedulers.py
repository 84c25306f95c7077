"""Flow-matching samplers from diffusers, built from the CLI/preset solver name and shift."""

from __future__ import annotations

import torch

from rgbacli.errors import UsageError

SOLVERS = ("unipc", "euler", "cogvideox-ddim")


def make_scheduler(solver: str, shift: float, num_train_timesteps: int = 1000):
    """UniPC in flow-prediction mode (Wan's default), Euler flow matching, or CogVideoX's DDIM."""
    if solver == "unipc":
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       num_train_timesteps=num_train_timesteps, flow_shift=shift)
    if solver == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    if solver == "cogvideox-ddim":
        from diffusers import CogVideoXDDIMScheduler

        return CogVideoXDDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing",
                                      rescale_betas_zero_snr=True, snr_shift_scale=1.0)
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
