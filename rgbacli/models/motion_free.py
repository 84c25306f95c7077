"""GenTron motion-free guidance for the Wan DiT: frame-masked self-attention and the guidance plan.

"Motion off" (GenTron) restricts temporal attention to each frame. Wan has one full 3-D
self-attention, so the equivalent is: a token attends only to tokens of its own latent
frame. The processors here do that per sample, so the guidance passes with motion on and
off run in one batched forward:

    ε̃ = ε(∅,∅) + λT·(ε(c_T,c_M) − ε(∅,c_M)) + λM·(ε(∅,c_M) − ε(∅,∅))

Pieces:

* :class:`WanSelfAttnProcessor` — Wan's self-attention split into ``project → attend →
  output`` steps so features can override one step (alpha-token LoRA overrides the
  projections, frame masks override ``attend``, consistent self-attention can too).
* :class:`FrameMaskAttnProcessor` — ``attend`` with per-sample motion-off flags read from a
  shared :class:`FrameMaskState`.
* :class:`MotionFreeController` / :func:`enable_motion_free` — installs the processors on
  every ``attn1``, records the token grid of each forward, and switches the flags
  (``with ctl.motion_off(flags): ...``). Wan's forward does not pass ``attention_kwargs``
  to processors, hence the shared state.
* :class:`GuidancePlan` — which passes to batch and how to combine them.
* :func:`make_still` / :func:`apply_motion_free_dropout` — training with ``p_motion_free``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "WanSelfAttnProcessor",
    "FrameLayout",
    "FrameMaskState",
    "FrameMaskAttnProcessor",
    "frame_mask",
    "MotionFreeController",
    "enable_motion_free",
    "motion_free_guidance",
    "GuidancePass",
    "GuidancePlan",
    "make_still",
    "apply_motion_free_dropout",
]


# --------------------------------------------------------------------------- processors


def apply_wan_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` (B, S, H, D) by Wan's RoPE tables (1, S, 1, D)."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return out.flatten(-2).type_as(x)


class WanSelfAttnProcessor:
    """Wan self-attention (``attn1``) as three overridable steps; by itself equal to diffusers'.

    ``linear`` computes one projection, ``project`` gives rotated heads (B, S, H, D),
    ``attend`` mixes them, ``output`` applies ``to_out``. Subclass and override a step.
    """

    def linear(self, attn: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
        """One projection by name: ``to_q``, ``to_k``, ``to_v`` or ``to_out``."""
        layer = attn.to_out[0] if name == "to_out" else getattr(attn, name)
        return layer(x)

    def project(self, attn, hidden_states, rotary_emb):
        if getattr(attn, "fused_projections", False):
            raise ValueError(f"{type(self).__name__} needs unfused q/k/v projections (call unfuse_qkv_projections)")
        query = attn.norm_q(self.linear(attn, "to_q", hidden_states)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(self.linear(attn, "to_k", hidden_states)).unflatten(2, (attn.heads, -1))
        value = self.linear(attn, "to_v", hidden_states).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = apply_wan_rotary(query, *rotary_emb)
            key = apply_wan_rotary(key, *rotary_emb)
        return query, key, value

    def attend(self, query, key, value, attention_mask=None):
        # SDPA wants (B, H, S, D); a boolean mask blocks, a float mask would be added as a bias.
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=attention_mask
        )
        return out.transpose(1, 2)

    def output(self, attn, hidden_states):
        return attn.to_out[1](self.linear(attn, "to_out", hidden_states))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError(f"{type(self).__name__} is for self-attention (attn1) only")
        query, key, value = self.project(attn, hidden_states, rotary_emb)
        out = self.attend(query, key, value, attention_mask)
        return self.output(attn, out.flatten(2, 3).type_as(query))


@dataclass(frozen=True)
class FrameLayout:
    """How a video token sequence splits into frames: ``copies × frames × tokens_per_frame``.

    ``copies`` is 2 for TransPixar's doubled ``[RGB ; alpha]`` sequence: RGB frame f and alpha
    frame f form one group (motion off keeps the RGB↔alpha link of a frame, drops time).
    """

    frames: int
    tokens_per_frame: int
    copies: int = 1

    @property
    def seq_len(self) -> int:
        return self.copies * self.frames * self.tokens_per_frame

    def frame_ids(self, device=None) -> torch.Tensor:
        """Frame index of every token (S,)."""
        ids = torch.arange(self.frames, device=device).repeat_interleave(self.tokens_per_frame)
        return ids.repeat(self.copies)


@dataclass
class FrameMaskState:
    """Shared by all frame-mask processors of one model; set per forward by the controller."""

    layout: FrameLayout | None = None
    motion_off: torch.Tensor | None = None  # bool (B,), True = attention within each frame only
    capture: bool = False  # debug: compute probabilities explicitly and keep them


def frame_mask(layout: FrameLayout, motion_off: torch.Tensor) -> torch.Tensor:
    """Dense boolean mask (B, 1, S, S): motion-off samples see only their own frame group.

    Reference / debug form; the processor itself avoids an S×S mask by regrouping tokens.
    """
    ids = layout.frame_ids(motion_off.device)
    same = ids[:, None] == ids[None, :]
    return (same[None] | ~motion_off.bool()[:, None, None])[:, None]


class FrameMaskAttnProcessor(WanSelfAttnProcessor):
    """Wan self-attention with per-sample "motion off": each frame attends only to itself.

    Motion-off samples are regrouped into ``B_off·F`` short sequences (no mask, any backend
    cost ∝ S²/F); motion-on samples run unmasked. With ``state.capture`` the attention is
    computed explicitly with :func:`frame_mask` and the probabilities are kept in
    ``last_attention_probs`` (B, H, S, S) for inspection.
    """

    def __init__(self, state: FrameMaskState | None = None):
        self.state = state or FrameMaskState()
        self.last_attention_probs: torch.Tensor | None = None

    def attend(self, query, key, value, attention_mask=None):
        off = self.state.motion_off
        if off is None or not bool(off.any()):
            if self.state.capture:
                return self._explicit(query, key, value, None)
            return super().attend(query, key, value, attention_mask)
        if attention_mask is not None:
            raise ValueError("frame masks do not combine with another attention mask")
        layout = self.state.layout
        if layout is None or layout.seq_len != query.shape[1]:
            raise ValueError(f"frame layout {layout} does not match a sequence of {query.shape[1]} tokens")
        if off.shape[0] != query.shape[0]:
            raise ValueError(f"{off.shape[0]} motion-off flags for a batch of {query.shape[0]}")
        off = off.to(query.device).bool()
        if self.state.capture:
            return self._explicit(query, key, value, frame_mask(layout, off))

        out = torch.empty_like(query)
        on_idx, off_idx = (~off).nonzero().flatten(), off.nonzero().flatten()
        if len(on_idx):
            out[on_idx] = super().attend(query[on_idx], key[on_idx], value[on_idx])
        grouped = [self._group(t[off_idx], layout) for t in (query, key, value)]
        out[off_idx] = self._ungroup(super().attend(*grouped), layout, len(off_idx))
        return out

    @staticmethod
    def _group(x: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
        # (b, copies·F·T, H, D) → (b·F, copies·T, H, D): one sequence per frame group.
        b, _, h, d = x.shape
        x = x.view(b, layout.copies, layout.frames, layout.tokens_per_frame, h, d).transpose(1, 2)
        return x.reshape(b * layout.frames, layout.copies * layout.tokens_per_frame, h, d)

    @staticmethod
    def _ungroup(x: torch.Tensor, layout: FrameLayout, b: int) -> torch.Tensor:
        h, d = x.shape[-2:]
        x = x.view(b, layout.frames, layout.copies, layout.tokens_per_frame, h, d).transpose(1, 2)
        return x.reshape(b, layout.seq_len, h, d)

    def _explicit(self, query, key, value, mask):
        q, k, v = (t.transpose(1, 2).float() for t in (query, key, value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(dim=-1)
        self.last_attention_probs = probs.detach()
        return (probs @ v).transpose(1, 2).type_as(query)


# --------------------------------------------------------------------------- controller


class MotionFreeController:
    """Installs frame-mask processors on every Wan ``attn1`` and switches motion per sample.

    ``model`` is a diffusers ``WanTransformer3DModel`` or an ``AlphaTokenTransformer`` around
    one (then its alpha-token processors, which are frame-mask processors, share the state
    and the layout has ``copies=2``). Processors that already are :class:`FrameMaskAttnProcessor`
    are kept (only their state is shared); others are replaced and restored by :meth:`remove`.
    """

    def __init__(self, model: nn.Module):
        self.transformer = getattr(model, "base", model)
        self.copies = 2 if hasattr(model, "alpha_lora") else 1
        self.state = FrameMaskState()
        self._replaced: list[tuple[nn.Module, object]] = []
        for block in self.transformer.blocks:
            proc = block.attn1.processor
            if isinstance(proc, FrameMaskAttnProcessor):
                proc.state = self.state
            else:
                self._replaced.append((block.attn1, proc))
                block.attn1.set_processor(FrameMaskAttnProcessor(self.state))
        self._hook = self.transformer.register_forward_pre_hook(self._record_layout, with_kwargs=True)

    def _record_layout(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        p_t, p_h, p_w = module.config.patch_size
        _, _, frames, height, width = hidden.shape
        frames //= p_t
        if frames % self.copies:
            raise ValueError(f"{frames} latent frames cannot split into {self.copies} copies")
        self.state.layout = FrameLayout(frames // self.copies, (height // p_h) * (width // p_w), self.copies)

    @contextlib.contextmanager
    def motion_off(self, flags: Sequence[bool] | torch.Tensor | bool) -> Iterator[None]:
        """Within the block, forwards run with these per-sample motion-off flags (bool or (B,))."""
        previous = self.state.motion_off
        self.state.motion_off = torch.as_tensor(flags, dtype=torch.bool).reshape(-1)
        try:
            yield
        finally:
            self.state.motion_off = previous

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[FrameMaskAttnProcessor]]:
        """Debug: explicit attention; yields the processors (read ``last_attention_probs``)."""
        self.state.capture = True
        try:
            yield [b.attn1.processor for b in self.transformer.blocks]
        finally:
            self.state.capture = False

    def remove(self) -> None:
        """Restore the replaced processors and drop the layout hook."""
        for attn, proc in self._replaced:
            attn.set_processor(proc)
        self._replaced.clear()
        self._hook.remove()


def enable_motion_free(model: nn.Module) -> MotionFreeController:
    """Make a Wan DiT (or an AlphaTokenTransformer) support per-sample motion-off forwards."""
    return MotionFreeController(model)


# --------------------------------------------------------------------------- guidance


def motion_free_guidance(eps_uncond, eps_text_motion, eps_motion_only, lambda_t: float, lambda_m: float):
    """GenTron: ``ε(∅,∅) + λT·(ε(c_T,c_M) − ε(∅,c_M)) + λM·(ε(∅,c_M) − ε(∅,∅))``."""
    return (
        eps_uncond
        + lambda_t * (eps_text_motion - eps_motion_only)
        + lambda_m * (eps_motion_only - eps_uncond)
    )


@dataclass(frozen=True)
class GuidancePass:
    """One model evaluation: with/without the text condition, with motion on/off, and its weight."""

    text: bool
    motion: bool
    weight: float

    @property
    def name(self) -> str:
        return f"({'c_T' if self.text else '∅'},{'c_M' if self.motion else '∅'})"


@dataclass(frozen=True)
class GuidancePlan:
    """Which passes to batch and how to combine them.

    The guided prediction is linear in the three possible passes,
    ``λT·ε(c_T,c_M) + (λM−λT)·ε(∅,c_M) + (1−λM)·ε(∅,∅)``, so passes with weight 0 are skipped:
    ``λT=1, λM=1`` → 1 pass; text CFG only (``λM=1``) → 2; motion guidance (``λM≠1``) → 3.
    """

    text_scale: float = 1.0
    motion_scale: float = 1.0
    passes: tuple[GuidancePass, ...] = field(default=())

    @classmethod
    def build(cls, text_scale: float = 1.0, motion_scale: float | None = None) -> "GuidancePlan":
        lt = float(text_scale)
        lm = 1.0 if motion_scale is None else float(motion_scale)
        candidates = (GuidancePass(True, True, lt), GuidancePass(False, True, lm - lt), GuidancePass(False, False, 1.0 - lm))
        # The weights sum to 1, so at least one pass remains.
        return cls(lt, lm, tuple(p for p in candidates if p.weight != 0.0))

    @property
    def num_passes(self) -> int:
        return len(self.passes)

    @property
    def needs_uncond_text(self) -> bool:
        return any(not p.text for p in self.passes)

    @property
    def uses_motion_off(self) -> bool:
        return any(not p.motion for p in self.passes)

    def expand(self, latents: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None = None):
        """Stack the passes along the batch: ``(latents, text embeddings, motion_off flags)``.

        Batch order is pass-major (pass 0's B samples, then pass 1's, ...). Feed the flags to
        :meth:`MotionFreeController.motion_off` around the forward.
        """
        if self.needs_uncond_text and uncond is None:
            raise ValueError("this guidance plan needs unconditional text embeddings")
        b = latents.shape[0]
        x = torch.cat([latents] * self.num_passes)
        ctx = torch.cat([cond if p.text else uncond.expand_as(cond) for p in self.passes])
        off = torch.tensor([not p.motion for p in self.passes], dtype=torch.bool).repeat_interleave(b)
        return x, ctx, off

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the passes of a pass-major batched prediction (in float32)."""
        chunks = prediction.float().chunk(self.num_passes)
        out = sum(p.weight * c for p, c in zip(self.passes, chunks))
        return out.to(prediction.dtype)


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
    motion-off flags to train those items with (``with ctl.motion_off(flags)``). Apply it to
    pixels before VAE encoding (a still latent of a temporally compressing VAE is then exact).
    """
    b, t = clips.shape[0], clips.shape[frame_dim]
    off = torch.rand(b, generator=generator, device=generator.device) < p_motion_free
    index = torch.randint(t, (b,), generator=generator, device=generator.device)
    out = clips.clone()
    for i in off.nonzero().flatten().tolist():
        out[i] = make_still(clips[i], int(index[i]), frame_dim - 1)
    return out, off.to(clips.device)
