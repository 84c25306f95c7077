"""Composable attention for diffusers' Wan and CogVideoX DiTs.

Every method that changes attention (GenTron's frame mask, TransPixar's alpha-token LoRA,
StoryDiffusion's consistent self-attention, extra cross-attention K/V for image or motion
embeddings, Tora's motion fusers) is a :class:`Behaviour`: a small object with hooks at fixed
points of one *staged* processor. Behaviours are attached openly with :func:`attach`, several
compose on the same attention, and ``Attachment.remove()`` takes exactly those off again
(the processor that was there before comes back when the last behaviour leaves).

    prepare → project (linear hooks) → RoPE → kv hooks → attend (wrapped by attend hooks)
            → + extra outputs → output projection (linear hook on to_out)

Hook tensors use one layout for both families: heads are (B, S, H, D); masks broadcast to
(B, H, S_q, S_k) and are boolean (True = may attend) or float (added to the logits: a bias, with
−inf blocking); :func:`merge_masks` combines either kind.

Sections: 1. RoPE and frame layouts · 2. the shared context of one DiT · 3. behaviours and the
call record · 4. staged processors · 5. attach / detach · 6. generic behaviours.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "apply_wan_rotary", "FrameLayout", "frame_mask", "merge_masks", "as_bias",
    "AttentionContext", "context_of", "blocks_of", "WrapsDiT", "unwrap",
    "AttnCall", "Behaviour", "WanStagedProcessor", "CogVideoXStagedProcessor",
    "Attachment", "attach", "processors",
    "ExternalKV", "ExtraCrossAttention",
]


# --------------------------------------------------------------------------- 1. RoPE and frame layouts


def apply_wan_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` (B, S, H, D) by Wan's RoPE tables (1, S, 1, D)."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return out.flatten(-2).type_as(x)


@dataclass(frozen=True)
class FrameLayout:
    """How a video token sequence splits into frames: ``copies × frames × tokens_per_frame``.

    ``copies`` is 2 for TransPixar's doubled ``[RGB ; alpha]`` sequence: RGB frame f and alpha
    frame f form one group.
    """

    frames: int
    tokens_per_frame: int
    copies: int = 1
    grid: tuple[int, int] | None = None  # (rows, cols) of a frame's tokens, where the DiT's input says

    @property
    def seq_len(self) -> int:
        return self.copies * self.frames * self.tokens_per_frame

    def frame_ids(self, device=None) -> torch.Tensor:
        """Frame index of every token (S,)."""
        ids = torch.arange(self.frames, device=device).repeat_interleave(self.tokens_per_frame)
        return ids.repeat(self.copies)


def frame_mask(layout: FrameLayout, motion_off: torch.Tensor) -> torch.Tensor:
    """Dense boolean mask (B, 1, S, S): motion-off samples see only their own frame group."""
    ids = layout.frame_ids(motion_off.device)
    same = ids[:, None] == ids[None, :]
    return (same[None] | ~motion_off.bool()[:, None, None])[:, None]


def as_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A mask as an additive logit bias: a boolean one becomes 0 / −inf, a float one stays."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def merge_masks(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Both masks at once: boolean AND when both are boolean, else the sum of their biases."""
    if a is None or b is None:
        return b if a is None else a
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    return as_bias(a) + as_bias(b)


# --------------------------------------------------------------------------- 2. shared context


@dataclass
class AttentionContext:
    """What the current forward of one DiT is doing, shared by all of its staged processors.

    A forward pre-hook on the transformer records the token ``layout`` and the raw text (before
    the model's text embedder) at every call. The pipeline sets per-call ``values`` around a
    forward with :meth:`use` (``motion_off`` flags, the sampling ``step``, a ``cond`` dict of
    extra conditioning); diffusers' Wan forward does not hand kwargs to processors, hence the
    shared object. ``memo`` holds what behaviours derive once per forward (cleared each call).
    """

    copies: int = 1  # 2 while the alpha-token wrapper doubles the sequence
    layout: FrameLayout | None = None
    text: torch.Tensor | None = None
    values: dict = field(default_factory=dict)
    memo: dict = field(default_factory=dict)
    capture: bool = False  # debug: explicit attention, probabilities kept on each processor

    @contextlib.contextmanager
    def use(self, **values) -> Iterator["AttentionContext"]:
        """Set per-call values for the forwards inside the block; the previous ones come back after."""
        previous = {k: self.values[k] for k in values if k in self.values}
        self.values.update(values)
        try:
            yield self
        finally:
            for k in values:
                if k in previous:
                    self.values[k] = previous[k]
                else:
                    self.values.pop(k, None)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Debug: compute attention explicitly and keep ``last_attention_probs`` on each processor."""
        before, self.capture = self.capture, True
        try:
            yield
        finally:
            self.capture = before


class WrapsDiT(nn.Module):
    """Base of modules that wrap a diffusers DiT (``self.base``) and adapt its forward, e.g. the
    alpha-token transformer; attention helpers given a wrapper work on the model inside."""

    base: nn.Module


def unwrap(model: nn.Module) -> nn.Module:
    """The diffusers DiT inside any :class:`WrapsDiT` layers."""
    while isinstance(model, WrapsDiT):
        model = model.base
    return model


def _family(model: nn.Module) -> str:
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    if isinstance(model, WanTransformer3DModel):
        return "wan"
    if isinstance(model, CogVideoXTransformer3DModel):
        return "cogvideox"
    raise TypeError(f"staged attention supports WanTransformer3DModel and CogVideoXTransformer3DModel, "
                    f"not {type(model).__name__}")


def context_of(model: nn.Module) -> AttentionContext:
    """The model's :class:`AttentionContext` (``model.attention_context``), created with its
    recording pre-hook on first use. For a wrapper, the context of the model inside."""
    model = unwrap(model)
    ctx = getattr(model, "attention_context", None)
    if ctx is not None:
        return ctx
    ctx = AttentionContext()
    family = _family(model)

    def record(module, args, kwargs):
        if family == "wan":  # forward(hidden_states (B,C,F,H,W), timestep, encoder_hidden_states, ...)
            hidden = args[0] if args else kwargs["hidden_states"]
            text = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            p_t, p_h, p_w = module.config.patch_size
            frames, rows, cols = hidden.shape[2] // p_t, hidden.shape[3] // p_h, hidden.shape[4] // p_w
        else:  # forward(hidden_states (B,F,C,H,W), encoder_hidden_states, timestep, ...)
            hidden = args[0] if args else kwargs["hidden_states"]
            text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
            p, p_t = module.config.patch_size, module.config.patch_size_t or 1
            frames, rows, cols = hidden.shape[1] // p_t, hidden.shape[3] // p, hidden.shape[4] // p
        if frames % ctx.copies:
            raise ValueError(f"{frames} latent frames cannot split into {ctx.copies} copies")
        ctx.layout = FrameLayout(frames // ctx.copies, rows * cols, ctx.copies, (rows, cols))
        ctx.text = text
        ctx.memo.clear()

    model.register_forward_pre_hook(record, with_kwargs=True)
    model.attention_context = ctx
    return ctx


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a Wan or CogVideoX DiT (or of the DiT inside a wrapper)."""
    model = unwrap(model)
    family = _family(model)
    return model.blocks if family == "wan" else model.transformer_blocks


# --------------------------------------------------------------------------- 3. behaviours


@dataclass
class AttnCall:
    """One call of one staged attention, as behaviours see it."""

    attn: nn.Module
    block: int
    role: str  # "attn1" (self / joint) or "attn2" (cross)
    context: AttentionContext
    encoder_hidden_states: torch.Tensor | None  # attn2: the text; CogVideoX attn1: the text part
    video_start: int  # first video row of the projected sequence (CogVideoX: after the text)
    video_len: int


Inner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class Behaviour:
    """A per-call change to staged attention. Override only the hooks you need; each default
    leaves the computation as it is."""

    def prepare(self, call: AttnCall, hidden_states: torch.Tensor) -> torch.Tensor:
        """The attention's input video tokens (B, S, D) before any projection (Tora's fusers)."""
        return hidden_states

    def linear(self, call: AttnCall, name: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """A projection's output; ``name`` is to_q, to_k, to_v or to_out, ``x`` its input."""
        return out

    def kv(self, call: AttnCall, query, key, value, mask):
        """Keys/values after RoPE and the mask: return ``(key, value, mask)`` (extend, mask, store)."""
        return key, value, mask

    def attend(self, call: AttnCall, query, key, value, mask, inner: Inner) -> torch.Tensor:
        """Wrap the attention itself; call ``inner(q, k, v, mask)`` for the plain computation."""
        return inner(query, key, value, mask)

    def extra(self, call: AttnCall, query: torch.Tensor) -> torch.Tensor | None:
        """An extra attention output (B, S, H·D) added before the output projection."""
        return None


def _overrides(behaviour: Behaviour, hook: str) -> bool:
    return getattr(type(behaviour), hook) is not getattr(Behaviour, hook)


# --------------------------------------------------------------------------- 4. staged processors


class _StagedProcessor:
    """What both families share: the behaviour list, the linear and attend steps."""

    def __init__(self, role: str, block: int, context: AttentionContext, previous):
        self.role, self.block, self.context, self.previous = role, block, context, previous
        self.behaviours: list[Behaviour] = []
        self.last_attention_probs: torch.Tensor | None = None

    def _linear(self, call: AttnCall, attn, name: str, x: torch.Tensor) -> torch.Tensor:
        layer = attn.to_out[0] if name == "to_out" else getattr(attn, name)
        out = layer(x)
        for b in self.behaviours:
            out = b.linear(call, name, x, out)
        return out

    def _plain_attend(self, query, key, value, mask):
        if self.context.capture:
            return self._explicit(query, key, value, mask)
        # SDPA wants (B, H, S, D); a boolean mask blocks, a float mask would be added as a bias.
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask
        )
        return out.transpose(1, 2)

    def _explicit(self, query, key, value, mask):
        q, k, v = (t.transpose(1, 2).float() for t in (query, key, value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores + as_bias(mask, scores.dtype)
        probs = scores.softmax(dim=-1)
        self.last_attention_probs = probs.detach()
        return (probs @ v).transpose(1, 2).type_as(query)

    def _attend(self, call: AttnCall, query, key, value, mask):
        fn: Inner = self._plain_attend
        for b in reversed([b for b in self.behaviours if _overrides(b, "attend")]):
            fn = (lambda inner, b: lambda q, k, v, m: b.attend(call, q, k, v, m, inner))(fn, b)
        return fn(query, key, value, mask)

    def _kv_and_attend(self, call: AttnCall, query, key, value, mask):
        for b in self.behaviours:
            key, value, mask = b.kv(call, query, key, value, mask)
        out = self._attend(call, query, key, value, mask).flatten(2, 3).type_as(query)
        for b in self.behaviours:
            extra = b.extra(call, query)
            if extra is not None:
                out = out + extra.type_as(out)
        return out


class WanStagedProcessor(_StagedProcessor):
    """Wan's ``attn1`` (self) or ``attn2`` (text cross-attention) as steps; with no behaviours it
    computes what diffusers' ``WanAttnProcessor`` computes."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kwargs):
        if getattr(attn, "fused_projections", False):
            raise ValueError(f"{type(self).__name__} needs unfused q/k/v projections (call unfuse_qkv_projections)")
        if self.role == "attn1" and encoder_hidden_states is not None:
            raise ValueError("attn1 is self-attention: it takes no encoder_hidden_states")
        if self.role == "attn2" and getattr(attn, "add_k_proj", None) is not None:
            raise ValueError("image-conditioned cross-attention (add_k_proj) is not handled by the staged processor")
        call = AttnCall(attn, self.block, self.role, self.context, encoder_hidden_states, 0, hidden_states.shape[1])
        for b in self.behaviours:
            hidden_states = b.prepare(call, hidden_states)
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.norm_q(self._linear(call, attn, "to_q", hidden_states)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(self._linear(call, attn, "to_k", source)).unflatten(2, (attn.heads, -1))
        value = self._linear(call, attn, "to_v", source).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = apply_wan_rotary(query, *rotary_emb)
            key = apply_wan_rotary(key, *rotary_emb)
        out = self._kv_and_attend(call, query, key, value, attention_mask)
        return attn.to_out[1](self._linear(call, attn, "to_out", out))


class CogVideoXStagedProcessor(_StagedProcessor):
    """CogVideoX's joint attention over ``[text ; video]`` as steps; with no behaviours it computes
    what diffusers' ``CogVideoXAttnProcessor2_0`` computes. ``prepare`` sees the video part."""

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None, **kwargs):
        from diffusers.models.embeddings import apply_rotary_emb

        text_len, video_len = encoder_hidden_states.shape[1], hidden_states.shape[1]
        call = AttnCall(attn, self.block, self.role, self.context, encoder_hidden_states, text_len, video_len)
        for b in self.behaviours:
            hidden_states = b.prepare(call, hidden_states)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch = x.shape[0]

        def heads(t):  # (B, S, H·D) → (B, H, S, D), CogVideoX's own layout for norms and RoPE
            return t.view(batch, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)

        query, key, value = (heads(self._linear(call, attn, n, x)) for n in ("to_q", "to_k", "to_v"))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query = torch.cat([query[:, :, :text_len], apply_rotary_emb(query[:, :, text_len:], image_rotary_emb)], dim=2)
            key = torch.cat([key[:, :, :text_len], apply_rotary_emb(key[:, :, text_len:], image_rotary_emb)], dim=2)
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # the hooks' (B, S, H, D)
        out = self._kv_and_attend(call, q, k, v, attention_mask)
        out = attn.to_out[1](self._linear(call, attn, "to_out", out))
        encoder_out, video_out = out.split([text_len, video_len], dim=1)
        return video_out, encoder_out


# --------------------------------------------------------------------------- 5. attach / detach


@dataclass
class Attachment:
    """The behaviours one :func:`attach` call put on; :meth:`remove` takes exactly these off."""

    entries: list[tuple[nn.Module, _StagedProcessor, Behaviour]]

    def remove(self) -> None:
        for attn, proc, behaviour in self.entries:
            if behaviour in proc.behaviours:
                proc.behaviours.remove(behaviour)
            if not proc.behaviours and attn.processor is proc:
                attn.set_processor(proc.previous)  # the exact processor that was there before
        self.entries = []


def attach(model: nn.Module, make: Callable[[int], Behaviour], role: str = "attn1",
           blocks: Iterable[int] | None = None) -> Attachment:
    """Attach ``make(i)`` to the ``role`` attention of block ``i`` (every block by default).

    The first behaviour on an attention installs a staged processor there (remembering the one it
    replaces); later ones join it. Nothing attached before is removed."""
    if role not in ("attn1", "attn2"):
        raise ValueError(f"role must be 'attn1' or 'attn2', not {role!r}")
    model = unwrap(model)
    family = _family(model)
    if family == "cogvideox" and role == "attn2":
        raise ValueError("CogVideoX blocks have no separate cross-attention (attn2)")
    context = context_of(model)
    all_blocks = blocks_of(model)
    staged = WanStagedProcessor if family == "wan" else CogVideoXStagedProcessor
    entries = []
    for i in (range(len(all_blocks)) if blocks is None else blocks):
        attn = getattr(all_blocks[i], role)
        proc = attn.processor
        if not isinstance(proc, _StagedProcessor):
            proc = staged(role, i, context, previous=attn.processor)
            attn.set_processor(proc)
        behaviour = make(i)
        proc.behaviours.append(behaviour)
        entries.append((attn, proc, behaviour))
    return Attachment(entries)


def processors(model: nn.Module, role: str = "attn1") -> list:
    """The processor of each block's ``role`` attention (staged or not), in block order."""
    return [getattr(b, role).processor for b in blocks_of(model)]


# --------------------------------------------------------------------------- 6. generic behaviours


def _broadcast_mask(mask: torch.Tensor | None, batch: int, sq: int, sk: int, device) -> torch.Tensor:
    """A hook mask (any broadcastable shape, or None = all allowed) as (B, h, S_q, S_k)."""
    if mask is None:
        return torch.ones(batch, 1, sq, sk, dtype=torch.bool, device=device)
    heads = mask.shape[-3] if mask.ndim >= 3 else 1
    return torch.broadcast_to(mask, (batch, heads, sq, sk))


def extend_kv(query, key, value, mask, extra_key, extra_value, extra_mask=None):
    """``key``/``value`` with ``extra_*`` (B, N, H, D) appended along the sequence, and the mask
    grown to match: the own part as given, the extra part ``extra_mask`` (B, [h,] S_q, N; boolean or
    a float bias) or all allowed."""
    k = torch.cat([key, extra_key.to(key.dtype)], dim=1)
    v = torch.cat([value, extra_value.to(value.dtype)], dim=1)
    if mask is None and extra_mask is None:
        return k, v, None
    b, sq, sk, n = query.shape[0], query.shape[1], key.shape[1], extra_key.shape[1]
    own = _broadcast_mask(mask, b, sq, sk, query.device)
    extra = _broadcast_mask(None if extra_mask is None else
                            (extra_mask[:, None] if extra_mask.ndim == 3 else extra_mask), b, sq, n, query.device)
    if own.dtype != torch.bool or extra.dtype != torch.bool:
        own, extra = as_bias(own), as_bias(extra)
    heads = max(own.shape[1], extra.shape[1])
    return k, v, torch.cat([own.expand(b, heads, sq, sk), extra.expand(b, heads, sq, n)], dim=-1)


class ExternalKV(Behaviour):
    """Keys/values from elsewhere appended to a self-attention's own (after RoPE): the hook a story
    bank reads through. ``source(call, key, value)`` returns ``None`` (nothing to add this call) or
    ``(extra_key, extra_value, extra_mask)`` with heads (B, N, H, D) and an optional mask
    (B, S_q, N), boolean or a float bias."""

    def __init__(self, source: Callable):
        self.source = source

    def kv(self, call, query, key, value, mask):
        got = self.source(call, key, value)
        if got is None:
            return key, value, mask
        return extend_kv(query, key, value, mask, *got)


class ExtraCrossAttention(nn.Module, Behaviour):
    """Extra cross-attention K/V with its own projections (IP-adapter style), on Wan's ``attn2``.

    The query is the block's own cross-attention query; keys and values come from
    ``context.values["cond"][key]``: (B, L, cond_dim) for one embedding set, or (B, F, L, cond_dim)
    with one set per latent frame (each frame's tokens attend to their frame's set; under alpha
    tokens both copies of a frame share it). The result goes through ``to_out`` (zero-initialised
    unless ``zero_init=False``), times ``scale``, and is added before the block's output projection,
    so a fresh adapter leaves the DiT's output exactly as it was. The behaviour owns its weights.

    ``query_pos`` > 0 adds where each query sits: Wan's video tokens carry position only through the
    RoPE of self-attention, so a cross-attention query cannot tell where its token is and per-frame
    embeddings could say *what* but not *where*. Fourier features of the token's normalised grid
    position (``query_pos`` octaves, sin and cos, x and y) go through ``to_q_pos`` and are added to
    the query of this attention only (the text cross-attention's query is unchanged).
    """

    def __init__(self, cond_dim: int, inner_dim: int, heads: int, key: str, zero_init: bool = True,
                 scale: float = 1.0, eps: float = 1e-6, query_pos: int = 0):
        nn.Module.__init__(self)
        self.key, self.heads, self.scale, self.query_pos = key, heads, scale, int(query_pos)
        self.to_k = nn.Linear(cond_dim, inner_dim)
        self.to_v = nn.Linear(cond_dim, inner_dim)
        self.norm_k = nn.RMSNorm(inner_dim, eps=eps)
        self.to_q_pos = nn.Linear(4 * self.query_pos, inner_dim) if self.query_pos else None
        self.to_out = nn.Linear(inner_dim, inner_dim)
        if zero_init:
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.to_out.bias)

    def position_features(self, rows: int, cols: int, device=None) -> torch.Tensor:
        """(rows·cols, 4·query_pos): sin/cos of 2^k·π·u for u = the token centre's x and y in (0, 1)."""
        ys, xs = torch.meshgrid((torch.arange(rows, device=device) + 0.5) / rows,
                                (torch.arange(cols, device=device) + 0.5) / cols, indexing="ij")
        freq = math.pi * 2.0 ** torch.arange(self.query_pos, device=device)
        ang = torch.stack([xs.flatten(), ys.flatten()], -1)[..., None] * freq  # (S, 2, octaves)
        return torch.cat([ang.sin(), ang.cos()], -1).flatten(1)

    def positioned_query(self, call, query: torch.Tensor) -> torch.Tensor:
        """The query (B, S, H, D) plus its token's grid position (``query_pos`` > 0)."""
        layout = call.context.layout
        if layout is None or layout.grid is None or layout.seq_len != query.shape[1]:
            raise ValueError(f"a position-aware cross-attention needs the token grid; the layout is {layout}")
        b, s, h, d = query.shape
        feat = self.position_features(*layout.grid, device=query.device).to(self.to_q_pos.weight.dtype)
        pos = self.to_q_pos(feat).view(1, 1, layout.tokens_per_frame, h, d).to(query.dtype)  # every frame alike
        return (query.view(b, -1, layout.tokens_per_frame, h, d) + pos).view(b, s, h, d)

    def extra(self, call, query):
        cond = call.context.values.get("cond") or {}
        emb = cond.get(self.key)
        if emb is None:
            return None
        b, s, h, d = query.shape
        if self.to_q_pos is not None:
            query = self.positioned_query(call, query)
        k = self.norm_k(self.to_k(emb.to(self.to_k.weight.dtype)))
        v = self.to_v(emb.to(self.to_v.weight.dtype))
        if emb.ndim == 3:  # one set for the whole clip
            k, v = (t.unflatten(-1, (h, -1)) for t in (k, v))
            out = F.scaled_dot_product_attention(query.transpose(1, 2), k.transpose(1, 2).to(query.dtype),
                                                 v.transpose(1, 2).to(query.dtype)).transpose(1, 2)
        else:  # (B, F, L, ·): regroup the queries per frame group
            layout = call.context.layout
            if layout is None or layout.seq_len != s or emb.shape[1] != layout.frames:
                raise ValueError(f"per-frame embeddings {tuple(emb.shape)} do not fit the token layout {layout}")
            f, t, c = layout.frames, layout.tokens_per_frame, layout.copies
            q = query.view(b, c, f, t, h, d).transpose(1, 2).reshape(b * f, c * t, h, d)
            k, v = (x.reshape(b * f, x.shape[2], h, -1).to(query.dtype) for x in (k, v))
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out = out.transpose(1, 2).reshape(b, f, c, t, h, d).transpose(1, 2).reshape(b, s, h, d)
        return self.scale * self.to_out(out.flatten(2, 3).to(self.to_out.weight.dtype))
