"""The guidance plan: which DiT passes to batch in one forward, and how to combine them.

Text CFG and GenTron motion-free guidance are one linear combination of at most three passes,
``λT·ε(c_T,c_M) + (λM−λT)·ε(∅,c_M) + (1−λM)·ε(∅,∅)``, so passes with weight 0 are skipped:
``λT=1, λM=1`` → 1 pass; text CFG only (``λM=1``) → 2; motion guidance (``λM≠1``) → 3.
Trajectory guidance (classifier-free guidance on Tora's motion condition c_J, which every pass above
carries) adds ``(λJ−1)·(ε(c_T,c_M,c_J) − ε(c_T,c_M,∅_J))``: one more pass, the conditional one with
the trajectory adapter off, skipped at ``λJ=1``.
Extra conditioning (image or motion embeddings, keyframes) is replicated for every pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["GuidancePass", "GuidancePlan", "GuidedBatch", "dynamic_text_scale"]


def dynamic_text_scale(scale: float, steps: int, timestep: float) -> float:
    """CogVideoXPipeline's `use_dynamic_cfg` text scale at one step, its formula as written (it
    reads the timestep value, 999…0, where a step index may have been meant):
    ``1 + scale · (1 − cos(π · ((steps − t) / steps) ** 5)) / 2``."""
    return 1 + scale * ((1 - math.cos(math.pi * ((steps - float(timestep)) / steps) ** 5.0)) / 2)


@dataclass(frozen=True)
class GuidancePass:
    """One model evaluation: with/without the text condition, with motion on/off, with the trajectory
    condition on/off, and its weight."""

    text: bool
    motion: bool
    weight: float
    trajectory: bool = True

    @property
    def name(self) -> str:
        return f"({'c_T' if self.text else '∅'},{'c_M' if self.motion else '∅'}{'' if self.trajectory else ',∅_J'})"


@dataclass
class GuidedBatch:
    """The passes stacked along the batch (pass-major): what one forward takes."""

    latents: torch.Tensor
    text: torch.Tensor
    motion_off: torch.Tensor  # bool (passes·B,)
    cond: dict = field(default_factory=dict)
    trajectory_off: torch.Tensor | None = None  # bool (passes·B,); None: every pass has its trajectory


@dataclass(frozen=True)
class GuidancePlan:
    """Which passes to batch and how to combine them (see the module docstring)."""

    text_scale: float = 1.0
    motion_scale: float = 1.0
    passes: tuple[GuidancePass, ...] = field(default=())
    trajectory_scale: float = 1.0

    @staticmethod
    def _weights(lt: float, lm: float, lj: float) -> dict[tuple[bool, bool, bool], float]:
        return {(True, True, True): lt + lj - 1.0, (False, True, True): lm - lt, (False, False, True): 1.0 - lm,
                (True, True, False): 1.0 - lj}

    @classmethod
    def build(cls, text_scale: float = 1.0, motion_scale: float | None = None,
              trajectory_scale: float | None = None) -> "GuidancePlan":
        lt = float(text_scale)
        lm = 1.0 if motion_scale is None else float(motion_scale)
        lj = 1.0 if trajectory_scale is None else float(trajectory_scale)
        candidates = (GuidancePass(t, m, w, j) for (t, m, j), w in cls._weights(lt, lm, lj).items())
        # The weights sum to 1, so at least one pass remains.
        return cls(lt, lm, tuple(p for p in candidates if p.weight != 0.0), lj)

    def with_text_scale(self, text_scale: float) -> "GuidancePlan":
        """The same passes with another text scale (dynamic CFG changes it every step)."""
        lt, lm, lj = float(text_scale), self.motion_scale, self.trajectory_scale
        weight = self._weights(lt, lm, lj)
        return GuidancePlan(lt, lm, tuple(GuidancePass(p.text, p.motion, weight[(p.text, p.motion, p.trajectory)],
                                                       p.trajectory) for p in self.passes), lj)

    @property
    def num_passes(self) -> int:
        return len(self.passes)

    @property
    def needs_uncond_text(self) -> bool:
        return any(not p.text for p in self.passes)

    @property
    def uses_motion_off(self) -> bool:
        return any(not p.motion for p in self.passes)

    @property
    def uses_trajectory_off(self) -> bool:
        return any(not p.trajectory for p in self.passes)

    def expand(self, latents: torch.Tensor, text: torch.Tensor, uncond: torch.Tensor | None = None,
               cond: dict[str, torch.Tensor] | None = None) -> GuidedBatch:
        """Stack the passes along the batch: pass 0's B samples, then pass 1's, ... ``cond``
        tensors (batch first) are repeated for every pass."""
        if self.needs_uncond_text and uncond is None:
            raise ValueError("this guidance plan needs unconditional text embeddings")
        b, n = latents.shape[0], self.num_passes
        traj_off = (torch.tensor([not p.trajectory for p in self.passes], dtype=torch.bool).repeat_interleave(b)
                    if self.uses_trajectory_off else None)
        if n == 1 and self.passes[0].text:  # one conditional pass (guidance 1): no copies
            off = torch.zeros(b, dtype=torch.bool) if self.passes[0].motion else torch.ones(b, dtype=torch.bool)
            return GuidedBatch(latents, text, off, dict(cond or {}), traj_off)
        x = torch.cat([latents] * n)
        ctx = torch.cat([text if p.text else uncond.expand_as(text) for p in self.passes])
        off = torch.tensor([not p.motion for p in self.passes], dtype=torch.bool).repeat_interleave(b)
        extra = {k: torch.cat([v] * n) for k, v in (cond or {}).items()}
        return GuidedBatch(x, ctx, off, extra, traj_off)

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the passes of a pass-major batched prediction (in float32)."""
        if self.num_passes == 1 and self.passes[0].weight == 1.0:
            return prediction
        chunks = prediction.float().chunk(self.num_passes)
        out = sum(p.weight * c for p, c in zip(self.passes, chunks))
        return out.to(prediction.dtype)
