"""The diffusers reference pipelines on our components, for side-by-side checks.

`benchmarks/generate.py --vs-diffusers` and tests/test_parity.py run our sampler and diffusers'
`WanPipeline` / `CogVideoXPipeline` on the same DiT, the same prompt embeddings, the same
starting noise and the same scheduler class, and compare the final latents. This module builds
the reference side: each function returns final latents in our layout, (B, C, T, h, w).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from rgbacli.pipelines.schedulers import COGVIDEOX_SCHEDULER


class CogVideoXLayout(nn.Module):
    """An `AlphaTokenTransformer` (CogVideoX) called the way CogVideoXPipeline calls its DiT:
    (B, F, C, H, W) latents holding `[RGB ; alpha]` along F. The pipeline's RoPE for all 2F frames
    is ignored: the wrapper computes the RGB half's and copies it to the alpha half (TransPixar)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def cache_context(self, name):
        return contextlib.nullcontext()

    def forward(self, hidden_states, encoder_hidden_states, timestep, image_rotary_emb=None, attention_kwargs=None,
                return_dict=False, **kwargs):
        out = self.model(hidden_states.transpose(1, 2), timestep, encoder_hidden_states)
        return (out.transpose(1, 2),)


def wan_pipeline_latents(transformer: nn.Module, latents: torch.Tensor, text: torch.Tensor,
                         uncond: torch.Tensor | None, steps: int, guidance: float, shift: float,
                         scheduler=None) -> torch.Tensor:
    """diffusers' `WanPipeline` from `latents` (B, C, t, h, w) with prompt embeddings given; the
    scheduler defaults to UniPC in flow-prediction mode with `shift` (our "unipc")."""
    from diffusers import WanPipeline

    from rgbacli.pipelines.schedulers import make_scheduler

    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=None,
                       scheduler=scheduler or make_scheduler("unipc", shift))
    pipe.set_progress_bar_config(disable=True)
    _, _, t, h, w = latents.shape
    out = pipe(prompt_embeds=text, negative_prompt_embeds=uncond, height=h * 8, width=w * 8, num_frames=(t - 1) * 4 + 1,
               num_inference_steps=steps, guidance_scale=guidance, latents=latents.clone(), output_type="latent",
               return_dict=False)[0]
    return out


def cogvideox_pipeline_latents(model: nn.Module, latents: torch.Tensor, text: torch.Tensor,
                               uncond: torch.Tensor | None, steps: int, guidance: float, dynamic_cfg: bool,
                               generator: torch.Generator | None, solver: str = "cogvideox-dpm") -> torch.Tensor:
    """diffusers' `CogVideoXPipeline` on an alpha-token CogVideoX from `[RGB ; alpha]` latents
    (B, C, 2F, h, w), with prompt embeddings, its `use_dynamic_cfg` and the given generator for the
    DPM solver's noise; returns the final latents in our layout."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXPipeline

    cls = CogVideoXDPMScheduler if solver == "cogvideox-dpm" else CogVideoXDDIMScheduler
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=CogVideoXLayout(model),
                             scheduler=cls(**COGVIDEOX_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    _, _, f2, h, w = latents.shape
    out = pipe(prompt_embeds=text, negative_prompt_embeds=uncond, height=h * 8, width=w * 8,
               num_frames=(f2 // 2 - 1) * 4 + 1, num_inference_steps=steps, guidance_scale=guidance,
               use_dynamic_cfg=dynamic_cfg, generator=generator, latents=latents.transpose(1, 2).clone(),
               output_type="latent", return_dict=False)[0]
    return out.transpose(1, 2)
