"""`rgba generate --trajectory`: the t2v steps along paths, by Tora's adapter or by Wan-Alpha v2's noise shift.

Input parsing and resampling: rgbacli/pipelines/trajectory_input.py (no torch). The maths: rgbacli/models/tora.py
(motion maps, extractor, fusers) and rgbacli/models/noise_shift.py.
"""

from __future__ import annotations

import torch

from rgbacli.errors import UsageError
from rgbacli.models.tora import MOTION_KEY as MOTION
from rgbacli.pipelines.guidance import GuidancePlan
from rgbacli.pipelines.params import GenerateParams
from rgbacli.pipelines.t2v import TextToRGBAPipeline
from rgbacli.pipelines.trajectory_input import ADAPTER_METHODS, DEFAULT_NOISE_SHIFT, NOISE_METHODS



class TrajectoryPipeline(TextToRGBAPipeline):
    """Text → RGBA video along paths: the t2v steps with motion latents in ``cond`` (tora), the
    initial noise shifted along the paths (noise), or both (tora+noise: independent, they add up).
    Every clip of a batch has a trajectory."""

    _batch: list = []

    # ------------------------------------------------------------------ tora
    @torch.no_grad()
    def motion_latents(self, p: GenerateParams) -> torch.Tensor:
        """(1, C, t, h, w): the paths' sparse displacement → Middlebury colours → the preset's VAE."""
        from rgbacli.models.tora import flow_to_rgb, motion_sigma, sparse_flow

        backend = self.engine.backend
        _, t, _, _ = self.latent_shape(p)
        frames = 1 + (t - 1) * backend.temporal_factor  # the VAE's frame count for t latent frames
        tracks = [torch.tensor(tr, dtype=torch.float32) for tr in p.trajectory]
        tracks = [torch.cat([tr, tr[-1:].expand(frames - len(tr), 2)]) if len(tr) < frames else tr[:frames]
                  for tr in tracks]
        sigma = motion_sigma(p.height, p.width, backend.spatial_factor)
        rgb = flow_to_rgb(sparse_flow(tracks, p.height, p.width, sigma)).permute(1, 0, 2, 3)[None]
        with self.engine.on_device(backend.vae):
            return backend.encode_rgb(rgb.to(self.engine.device)).float()

    # ------------------------------------------------------------------ noise
    def prepare_latents(self, p: GenerateParams, seeds: list[int]) -> torch.Tensor:
        """The t2v noise; for the noise method each clip's noise + (1 − g)·shift, g Gaussian ellipses
        centred on its paths, one per latent frame (Wan-Alpha v2), or + g·shift·direction where the
        preset calibrated a direction (rgbacli/models/noise_shift.py)."""
        from rgbacli.models.noise_shift import path_mask, shift_noise

        latents = super().prepare_latents(p, seeds)
        if p.trajectory_method not in NOISE_METHODS:
            return latents
        backend = self.engine.backend
        _, t, h, w = self.latent_shape(p)
        sigma = (max(1.0, 0.12 * w), max(1.0, 0.12 * h))  # about the ellipse of Wan-Alpha v2's shipped mask
        out = []
        for i, q in enumerate(self._batch or [p] * len(seeds)):
            tracks = [torch.tensor(tr, dtype=torch.float32) for tr in q.trajectory]
            mask = path_mask(tracks, t, backend.temporal_factor, backend.spatial_factor, (h, w), sigma)
            shift = DEFAULT_NOISE_SHIFT if q.trajectory_shift is None else q.trajectory_shift
            out.append(shift_noise(latents[i:i + 1], mask, shift, q.trajectory_direction))
        return torch.cat(out)

    # ------------------------------------------------------------------ guidance
    def guidance_plan(self, p: GenerateParams) -> GuidancePlan:
        """The t2v passes, plus trajectory guidance for the adapter's motion condition
        (``--trajectory-guidance``; rgbacli/pipelines/guidance.py)."""
        scale = p.trajectory_guidance if p.trajectory_method in ADAPTER_METHODS else None
        return GuidancePlan.build(p.guidance, p.motion_guidance, scale)

    # ------------------------------------------------------------------ runs
    def generate_batch(self, params: list[GenerateParams], progress=None, decode: str = "rgba", cond: dict | None = None,
                       callback_on_step_end=None, warn: bool = True):
        if any(p.trajectory is None for p in params):
            raise UsageError("every clip sampled by the trajectory pipeline needs a trajectory")
        if params and params[0].trajectory_method in ADAPTER_METHODS:
            cond = {**(cond or {}), MOTION: torch.cat([self.motion_latents(p) for p in params])}
        self._batch = list(params)
        try:
            return super().generate_batch(params, progress, decode, cond, callback_on_step_end, warn)
        finally:
            self._batch = []
