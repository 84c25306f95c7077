"""TransPixar alpha tokens for diffusers' Wan and CogVideoX DiTs.

The DiT denoises ``[RGB latents ; alpha latents]`` stacked along the frame axis (both halves
start from the same noise). Four changes make the second half an alpha video:

1. RoPE of the alpha half is a copy of the RGB half's (same positions, not a continuation);
2. a zero-initialised domain embedding (one vector of model width) is added to alpha tokens
   after patch embedding;
3. a LoRA on ``attn1`` q/k/v/out applies to alpha tokens only (RGB tokens see base weights);
4. CogVideoX only (text and video share one attention): text queries may not attend to
   alpha keys (a boolean SDPA mask; RGB→alpha and alpha→text stay). Wan reads text through
   cross-attention, so it needs no mask.

:class:`AlphaTokenTransformer` wraps a base model: it owns the LoRA and the domain embedding,
attaches :class:`AlphaTokens` behaviours to every ``attn1`` (rgbacli/models/attention.py, where
other behaviours such as GenTron's frame mask compose with them), adds two small forward hooks
(patch embedding, RoPE) and returns the doubled prediction.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from rgbacli.errors import WeightsError
from rgbacli.fsutil import atomic_output
from rgbacli.models.attention import Behaviour, WrapsDiT, attach, blocks_of, context_of, merge_masks
from rgbacli.weights.io import adapter_metadata, check_state_dict, load_state_dict


__all__ = [
    "double_noise",
    "AlphaLoRA",
    "AlphaTokens",
    "alpha_attention_mask",
    "AlphaTokenTransformer",
    "alpha_token_state_dict",
    "save_alpha_token_weights",
    "load_alpha_token_weights",
]

# Projection names inside ``attn1`` (``to_out`` is ``attn1.to_out.0`` in weight files).
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out")


def double_noise(noise: torch.Tensor, frame_dim: int = 2) -> torch.Tensor:
    """``[noise ; noise]`` along the frame axis: the alpha half starts from the RGB half's noise."""
    return torch.cat([noise, noise], dim=frame_dim)


class AlphaLoRA(nn.Module):
    """Low-rank deltas for one ``attn1``'s q/k/v/out, used on alpha tokens only.

    ``delta = (alpha / rank) · B·A·x`` with A default-initialised and B zero (a no-op at start).
    """

    def __init__(self, attn: nn.Module, rank: int = 128, lora_alpha: float = 1.0):
        super().__init__()
        self.rank, self.lora_alpha = rank, lora_alpha
        self.scaling = lora_alpha / rank
        layers = {"to_q": attn.to_q, "to_k": attn.to_k, "to_v": attn.to_v, "to_out": attn.to_out[0]}
        self.lora_A = nn.ModuleDict({n: nn.Linear(l.in_features, rank, bias=False) for n, l in layers.items()})
        self.lora_B = nn.ModuleDict({n: nn.Linear(rank, l.out_features, bias=False) for n, l in layers.items()})
        for layer in self.lora_B.values():
            nn.init.zeros_(layer.weight)

    def delta(self, name: str, x: torch.Tensor) -> torch.Tensor:
        a = self.lora_A[name]
        return self.lora_B[name](a(x.to(a.weight.dtype))) * self.scaling

    def apply(self, name: str, base_out: torch.Tensor, x: torch.Tensor, start: int) -> torch.Tensor:
        """``base_out`` with the delta added on sequence rows ``start:`` (the alpha tokens)."""
        d = self.delta(name, x[:, start:]).to(base_out.dtype)
        return torch.cat([base_out[:, :start], base_out[:, start:] + d], dim=1)


class AlphaTokens(Behaviour):
    """TransPixar on one ``attn1``: the LoRA on the alpha half's projections and, where text shares
    the attention (CogVideoX), the mask that keeps text queries off alpha keys."""

    def __init__(self, lora: AlphaLoRA, text_attends_alpha: bool = False):
        self.lora = lora
        self.text_attends_alpha = text_attends_alpha

    def linear(self, call, name, x, out):
        # Rows past the first half of the video are alpha tokens (in the joint sequence: after the text).
        return self.lora.apply(name, out, x, call.video_start + call.video_len // 2)

    def kv(self, call, query, key, value, mask):
        if call.video_start == 0 or self.text_attends_alpha:  # Wan: text is in attn2, nothing to mask
            return key, value, mask
        blocked = alpha_attention_mask(call.video_start, call.video_len, query.device)
        return key, value, merge_masks(blocked, mask)


def alpha_attention_mask(text_len: int, video_len: int, device=None) -> torch.Tensor:
    """Boolean (S, S) mask over ``[text ; RGB ; alpha]``: True = may attend.

    Only text queries × alpha keys are blocked. Boolean on purpose: a float 0/1 mask would be
    *added* to the scores by SDPA instead of blocking (the released TransPixar code's bug).
    """
    total = text_len + video_len
    mask = torch.ones(total, total, dtype=torch.bool, device=device)
    mask[:text_len, text_len + video_len // 2:] = False
    return mask


def _kind(base: nn.Module) -> str:
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    if isinstance(base, WanTransformer3DModel):
        return "wan"
    if isinstance(base, CogVideoXTransformer3DModel):
        if not base.config.use_rotary_positional_embeddings:
            raise ValueError("alpha tokens need a RoPE CogVideoX (5B / 1.5); absolute position embeddings are not supported")
        return "cogvideox"
    raise TypeError(f"alpha tokens support WanTransformer3DModel and CogVideoXTransformer3DModel, not {type(base).__name__}")


class AlphaTokenTransformer(WrapsDiT):
    """A Wan or CogVideoX DiT that denoises ``[RGB ; alpha]`` latents (TransPixar).

    ``forward(hidden_states (B, C, 2F, H, W), timestep, encoder_hidden_states, ...)`` returns the
    doubled prediction (B, C_out, 2F, H, W); split it with :meth:`rgb_half` / :meth:`alpha_half`.
    Both models take the ``(B, C, T, H, W)`` layout here (CogVideoX's own is permuted inside, and
    its 3-D RoPE for the RGB half is computed here when not given).
    Trainable parts: :meth:`adapter_parameters` (``domain_emb`` and ``alpha_lora``).
    """

    def __init__(self, base: nn.Module, rank: int = 128, lora_alpha: float = 1.0, text_attends_alpha: bool = False):
        super().__init__()
        self.kind = _kind(base)
        self.base = base
        blocks = self.blocks
        width = blocks[0].attn1.to_q.in_features
        param = next(base.parameters())
        self.domain_emb = nn.Parameter(torch.zeros(width, device=param.device, dtype=param.dtype))
        self.alpha_lora = nn.ModuleList(AlphaLoRA(b.attn1, rank, lora_alpha) for b in blocks).to(param.device, param.dtype)
        self.context = context_of(base)
        self.context.copies = 2  # every layout-aware piece (frame mask, position table) sees two halves
        self._attachment = attach(base, lambda i: AlphaTokens(self.alpha_lora[i], text_attends_alpha), "attn1")
        if self.kind == "wan":
            self._hooks = [
                base.patch_embedding.register_forward_hook(self._add_domain_wan),
                base.rope.register_forward_hook(self._copy_rope_wan),
            ]
        else:
            self._hooks = [base.patch_embed.register_forward_hook(self._add_domain_cogvideox)]
        self._rope_cache: dict = {}

    # -- structure
    @property
    def blocks(self) -> nn.ModuleList:
        return blocks_of(self.base)

    @property
    def config(self):
        return self.base.config

    @property
    def behaviours(self) -> list[AlphaTokens]:
        """The :class:`AlphaTokens` behaviour of each block, in block order."""
        return [b for _attn, _proc, b in self._attachment.entries]

    def adapter_parameters(self):
        yield self.domain_emb
        yield from self.alpha_lora.parameters()

    # -- hooks
    def _add_domain_wan(self, module, args, out):
        # out: (B, D, 2F', H', W') straight from the patch Conv3d; alpha frames are the second half.
        half = out.shape[2] // 2
        alpha = out[:, :, half:] + self.domain_emb.to(out.dtype).view(1, -1, 1, 1, 1)
        return torch.cat([out[:, :, :half], alpha], dim=2)

    @staticmethod
    def _copy_rope_wan(module, args, out):
        # (cos, sin), each (1, 2N, 1, D): give the alpha half the RGB half's positions.
        half = out[0].shape[1] // 2
        return tuple(torch.cat([t[:, :half], t[:, :half]], dim=1) for t in out)

    def _add_domain_cogvideox(self, module, args, out):
        # out: (B, text + 2N, D); args = (text_embeds, image_embeds).
        text_len = args[0].shape[1]
        alpha_start = text_len + (out.shape[1] - text_len) // 2
        return torch.cat([out[:, :alpha_start], out[:, alpha_start:] + self.domain_emb.to(out.dtype)], dim=1)

    def rgb_rotary(self, frames: int, height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """CogVideoX's 3-D RoPE (cos, sin) for the RGB half of a latent grid, from diffusers'
        pipeline method (on a stand-in: latent sizes with a spatial factor of 1 give the same grid)."""
        from diffusers import CogVideoXPipeline

        key = (frames, height, width, str(device))
        if key not in self._rope_cache:
            stand_in = SimpleNamespace(transformer=self.base, vae_scale_factor_spatial=1)
            self._rope_cache[key] = CogVideoXPipeline._prepare_rotary_positional_embeddings(
                stand_in, height, width, frames, device)
        return self._rope_cache[key]

    # -- forward
    def forward(self, hidden_states, timestep, encoder_hidden_states, image_rotary_emb=None, **kwargs) -> torch.Tensor:
        """Doubled prediction. ``image_rotary_emb`` (CogVideoX): the RGB half's (cos, sin), N rows."""
        frames = hidden_states.shape[2]
        p_t = (self.config.patch_size[0] if self.kind == "wan" else self.config.patch_size_t) or 1
        if frames % 2 or (frames // 2) % p_t:
            raise ValueError(f"expected [RGB ; alpha] latents with an even number of frames per half (×{p_t}), got {frames}")
        if self.kind == "wan":
            return self.base(hidden_states, timestep, encoder_hidden_states, return_dict=False, **kwargs)[0]

        if image_rotary_emb is None and self.config.use_rotary_positional_embeddings:
            image_rotary_emb = self.rgb_rotary(frames // 2, hidden_states.shape[3], hidden_states.shape[4],
                                               hidden_states.device)
        if image_rotary_emb is not None:
            p = self.config.patch_size
            n_half = (frames // 2 // p_t) * (hidden_states.shape[3] // p) * (hidden_states.shape[4] // p)
            if image_rotary_emb[0].shape[0] != n_half:
                raise ValueError(f"image_rotary_emb has {image_rotary_emb[0].shape[0]} rows; pass the RGB half's ({n_half})")
            image_rotary_emb = tuple(torch.cat([t, t], dim=0) for t in image_rotary_emb)
        out = self.base(
            hidden_states.transpose(1, 2), encoder_hidden_states, timestep,
            image_rotary_emb=image_rotary_emb, return_dict=False, **kwargs,
        )[0]
        return out.transpose(1, 2)

    @staticmethod
    def rgb_half(x: torch.Tensor, frame_dim: int = 2) -> torch.Tensor:
        return x.narrow(frame_dim, 0, x.shape[frame_dim] // 2)

    @staticmethod
    def alpha_half(x: torch.Tensor, frame_dim: int = 2) -> torch.Tensor:
        half = x.shape[frame_dim] // 2
        return x.narrow(frame_dim, half, half)

    def remove(self) -> nn.Module:
        """Take the behaviours and hooks off again; returns the plain base model."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._attachment.remove()
        self.context.copies = 1
        return self.base


# --------------------------------------------------------------------------- weights


def _file_prefix(model: AlphaTokenTransformer) -> str:
    return "transformer.transformer_blocks" if model.kind == "cogvideox" else "transformer.blocks"


def _file_name(target: str) -> str:
    return "to_out.0" if target == "to_out" else target


def alpha_token_state_dict(model: AlphaTokenTransformer) -> dict[str, torch.Tensor]:
    """Adapter tensors in TransPixar's released layout.

    ``transformer.transformer_blocks.{i}.attn1.{to_q,to_k,to_v,to_out.0}.lora_{A,B}.weight`` and
    ``domain_emb`` (1, 1, D); Wan uses ``transformer.blocks.{i}`` likewise.
    """
    out = {k: v.detach().cpu().contiguous() for k, v in _param_refs(model).items()}
    out["domain_emb"] = out["domain_emb"].view(1, 1, -1)
    return out


def save_alpha_token_weights(model: AlphaTokenTransformer, path: str | Path, force: bool = False) -> Path:
    """Write :func:`alpha_token_state_dict` as safetensors (atomically, no clobber without force), with
    the base DiT's fingerprint (shapes and weights) in its metadata, checked when it is loaded."""
    from safetensors.torch import save_file

    with atomic_output(path, force) as tmp:
        save_file(alpha_token_state_dict(model), str(tmp), metadata=adapter_metadata(model.base))
    return Path(path)


@torch.no_grad()
def load_alpha_token_weights(model: AlphaTokenTransformer, weights: str | Path | dict) -> None:
    """Load TransPixar-layout weights (a .safetensors path or a dict) into ``model``.

    The file's rank must equal the model's; unknown, missing or mis-shaped keys are a
    :class:`WeightsError` naming the key.
    """
    what = "alpha-token weights"
    if not isinstance(weights, dict):
        what = str(weights)
        weights = load_state_dict(weights)
    params = _param_refs(model)
    weights = dict(weights)
    emb = weights.get("domain_emb")
    if emb is not None:  # released files store (1, 1, D); any layout of the same width is accepted
        if emb.numel() != params["domain_emb"].numel():
            raise WeightsError(f"{what}: 'domain_emb' has {emb.numel()} values; the model width is "
                               f"{params['domain_emb'].numel()}")
        weights["domain_emb"] = emb.reshape(params["domain_emb"].shape)
    check_state_dict({k: p.shape for k, p in params.items()}, weights, what,
                     hint=f"(rank {model.alpha_lora[0].rank})")
    for key, param in params.items():
        param.copy_(weights[key].to(param.dtype))


def _param_refs(model: AlphaTokenTransformer) -> dict[str, nn.Parameter]:
    prefix = _file_prefix(model)
    refs: dict[str, nn.Parameter] = {"domain_emb": model.domain_emb}
    for i, lora in enumerate(model.alpha_lora):
        for t in LORA_TARGETS:
            base = f"{prefix}.{i}.attn1.{_file_name(t)}"
            refs[f"{base}.lora_A.weight"] = lora.lora_A[t].weight
            refs[f"{base}.lora_B.weight"] = lora.lora_B[t].weight
    return refs
