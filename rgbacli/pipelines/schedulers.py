"""Flow-matching samplers from diffusers, built from the CLI/preset solver name and shift."""

from __future__ import annotations

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
