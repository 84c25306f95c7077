"""CogVideoX specifics for the alpha-token backend: 3-D RoPE for the RGB half of the sequence.

diffusers computes CogVideoX's rotary embeddings inside `CogVideoXPipeline`; we call that same
method on a minimal stand-in for the pipeline rather than re-deriving the crop-region logic.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch


def rotary_embeddings(transformer, spatial_factor: int, height: int, width: int, latent_frames: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(cos, sin) for the RGB half's tokens, or None when the model uses absolute positions."""
    from diffusers import CogVideoXPipeline

    base = getattr(transformer, "base", transformer)
    if not base.config.use_rotary_positional_embeddings:
        return None
    stand_in = SimpleNamespace(transformer=base, vae_scale_factor_spatial=spatial_factor)
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(stand_in, height, width, latent_frames, device)
