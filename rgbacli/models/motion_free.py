"""GenTron motion-free guidance for the Wan DiT: a frame mask on self-attention, and its training.

"Motion off" (GenTron) restricts temporal attention to each frame. Wan has one full 3-D
self-attention, so the equivalent is: a token attends only to tokens of its own latent frame
(under alpha tokens, its frame in both halves). :class:`FrameMask` is that behaviour on the
staged ``attn1`` (rgbacli/models/attention.py), per sample, so the guidance passes with motion
on and off run in one batched forward:

    ε̃ = ε(∅,∅) + λT·(ε(c_T,c_M) − ε(∅,c_M)) + λM·(ε(∅,c_M) − ε(∅,∅))

The pass plan that batches and combines them is generic: rgbacli/pipelines/guidance.py.
Training drops motion with probability ``p_motion_free``: :func:`apply_motion_free_dropout`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from rgbacli.models.attention import Behaviour, attach, context_of, frame_mask, merge_masks, processors

__all__ = [
    "FrameMask",
    "MotionFree",
    "enable_motion_free",
    "motion_free_guidance",
    "make_still",
    "apply_motion_free_dropout",
]


# --------------------------------------------------------------------------- the frame mask


class FrameMask(Behaviour):
    """Per-sample "motion off" on self-attention: each frame group attends only to itself.

    Reads the bool (B,) flags ``context.values["motion_off"]``. Motion-off samples are regrouped
    into ``B_off·F`` short sequences (no mask; cost ∝ S²/F); motion-on samples run unmasked. With a
    mask from another behaviour, extended keys (a story bank), or capture on, it falls back to a
    dense mask: own tokens of other frames blocked, extra tokens allowed.
    """

    def attend(self, call, query, key, value, mask, inner):
        off = call.context.values.get("motion_off")
        if off is None or not bool(off.any()):
            return inner(query, key, value, mask)
        layout = call.context.layout
        if layout is None or layout.seq_len != query.shape[1]:
            raise ValueError(f"frame layout {layout} does not match a sequence of {query.shape[1]} tokens")
        if off.shape[0] != query.shape[0]:
            raise ValueError(f"{off.shape[0]} motion-off flags for a batch of {query.shape[0]}")
        off = off.to(query.device).bool()
        if mask is not None or key.shape[1] != query.shape[1] or call.context.capture:
            return inner(query, key, value, self._dense(layout, off, mask, query, key))

        out = torch.empty_like(query)
        on_idx, off_idx = (~off).nonzero().flatten(), off.nonzero().flatten()
        if len(on_idx):
            out[on_idx] = inner(query[on_idx], key[on_idx], value[on_idx], None)
        grouped = [self._group(t[off_idx], layout) for t in (query, key, value)]
        out[off_idx] = self._ungroup(inner(*grouped, None), layout, len(off_idx))
        return out

    @staticmethod
    def _dense(layout, off, mask, query, key) -> torch.Tensor:
        own = frame_mask(layout, off)  # (B, 1, S, S)
        extra = key.shape[1] - query.shape[1]
        if extra:
            own = torch.cat([own, own.new_ones(*own.shape[:-1], extra)], dim=-1)
        return merge_masks(own, mask)

    @staticmethod
    def _group(x: torch.Tensor, layout) -> torch.Tensor:
        # (b, copies·F·T, H, D) → (b·F, copies·T, H, D): one sequence per frame group.
        b, _, h, d = x.shape
        x = x.view(b, layout.copies, layout.frames, layout.tokens_per_frame, h, d).transpose(1, 2)
        return x.reshape(b * layout.frames, layout.copies * layout.tokens_per_frame, h, d)

    @staticmethod
    def _ungroup(x: torch.Tensor, layout, b: int) -> torch.Tensor:
        h, d = x.shape[-2:]
        x = x.view(b, layout.frames, layout.copies, layout.tokens_per_frame, h, d).transpose(1, 2)
        return x.reshape(b, layout.seq_len, h, d)


class MotionFree:
    """The frame mask on every ``attn1`` of a Wan DiT (or the alpha-token DiT around one), and the
    switch for its per-sample flags: ``with mf.motion_off(flags): model(...)``. ``remove()``
    detaches it; other behaviours on the same processors stay."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.context = context_of(model)
        self.mask = FrameMask()
        self._attachment = attach(model, lambda _i: self.mask, "attn1")

    def motion_off(self, flags: Sequence[bool] | torch.Tensor | bool):
        """Within the block, forwards run with these per-sample motion-off flags (bool or (B,))."""
        return self.context.use(motion_off=torch.as_tensor(flags, dtype=torch.bool).reshape(-1))

    @contextlib.contextmanager
    def capture(self) -> Iterator[list]:
        """Debug: explicit attention; yields the ``attn1`` processors (read ``last_attention_probs``)."""
        with self.context.capturing():
            yield processors(self.model, "attn1")

    def remove(self) -> None:
        self._attachment.remove()


def enable_motion_free(model: nn.Module) -> MotionFree:
    """Make a Wan DiT (or an AlphaTokenTransformer) support per-sample motion-off forwards."""
    return MotionFree(model)


def motion_free_guidance(eps_uncond, eps_text_motion, eps_motion_only, lambda_t: float, lambda_m: float):
    """GenTron: ``ε(∅,∅) + λT·(ε(c_T,c_M) − ε(∅,c_M)) + λM·(ε(∅,c_M) − ε(∅,∅))``."""
    return (
        eps_uncond
        + lambda_t * (eps_text_motion - eps_motion_only)
        + lambda_m * (eps_motion_only - eps_uncond)
    )


# --------------------------------------------------------------------------- training


def make_still(clip: torch.Tensor, frame_index: int, frame_dim: int = 1) -> torch.Tensor:
    """Repeat one frame over the whole clip (a still "image as video"), keeping the shape."""
    frame = clip.narrow(frame_dim, frame_index, 1)
    return frame.expand_as(clip).contiguous()


def apply_motion_free_dropout(
    clips: torch.Tensor, p_motion_free: float, generator: torch.Generator, frame_dim: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn each batch item into a still clip with probability ``p_motion_free``.

    ``clips`` is (B, C, T, H, W) (``frame_dim`` 2). Returns the new batch and the bool (B,)
    motion-off flags to train those items with (``with mf.motion_off(flags)``). Apply it to
    pixels before VAE encoding (a still latent of a temporally compressing VAE is then exact).
    """
    b, t = clips.shape[0], clips.shape[frame_dim]
    off = torch.rand(b, generator=generator, device=generator.device) < p_motion_free
    index = torch.randint(t, (b,), generator=generator, device=generator.device)
    out = clips.clone()
    for i in off.nonzero().flatten().tolist():
        out[i] = make_still(clips[i], int(index[i]), frame_dim - 1)
    return out, off.to(clips.device)
