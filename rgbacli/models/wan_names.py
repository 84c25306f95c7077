"""Original Wan DiT names ↔ diffusers ``WanTransformer3DModel`` names.

Released Wan adapters (Wan-Alpha DoRA, LightX2V distill LoRA) use the original Wan module
names (``blocks.3.self_attn.q``); diffusers calls the same Linear ``blocks.3.attn1.to_q``.
These helpers translate module paths (not parameter suffixes such as ``.lora_A.weight``)
in both directions. Note the swap: Wan's ``norm3`` (cross-attention norm) is diffusers'
``norm2`` and Wan's ``norm2`` (pre-FFN) is diffusers' ``norm3``.
"""

from __future__ import annotations

import re

# Inside ``blocks.N.``: original → diffusers.
BLOCK_NAMES: dict[str, str] = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "norm1": "norm1",
    "norm2": "norm3",
    "norm3": "norm2",
    "modulation": "scale_shift_table",
}

# Outside the blocks: original → diffusers.
TOP_NAMES: dict[str, str] = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed",
}

# The Linears Wan-Alpha trains DoRA on, per block (original names, then diffusers names).
DORA_TARGETS_WAN: tuple[str, ...] = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "ffn.0", "ffn.2",
)
DORA_TARGETS: tuple[str, ...] = tuple(BLOCK_NAMES[n] for n in DORA_TARGETS_WAN)

# Wrappers that checkpoints put in front of the model's own names, longest first.
KEY_PREFIXES: tuple[str, ...] = (
    "base_model.model.",
    "model.diffusion_model.",
    "diffusion_model.",
    "transformer.",
    "model.",
)

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_BLOCK_INV = {v: k for k, v in BLOCK_NAMES.items()}
_TOP_INV = {v: k for k, v in TOP_NAMES.items()}


def strip_prefix(key: str) -> str:
    """Drop one known checkpoint prefix (``diffusion_model.``, ``model.``, ...) if present."""
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _lookup(path: str, table: dict[str, str]) -> str | None:
    # Longest table entry that is the whole path or a dotted prefix of it.
    for name in sorted(table, key=len, reverse=True):
        if path == name or path.startswith(name + "."):
            return table[name] + path[len(name):]
    return None


def wan_to_diffusers(path: str) -> str | None:
    """Map an original-Wan module path to its diffusers path; None when it is not a Wan name.

    Works on paths with a trailing tail too: ``blocks.0.self_attn.q.weight`` →
    ``blocks.0.attn1.to_q.weight``.
    """
    m = _BLOCK_RE.match(path)
    if m:
        inner = _lookup(m.group(2), BLOCK_NAMES)
        return None if inner is None else f"blocks.{m.group(1)}.{inner}"
    return _lookup(path, TOP_NAMES)


def diffusers_to_wan(path: str) -> str | None:
    """Inverse of :func:`wan_to_diffusers`."""
    m = _BLOCK_RE.match(path)
    if m:
        inner = _lookup(m.group(2), _BLOCK_INV)
        return None if inner is None else f"blocks.{m.group(1)}.{inner}"
    return _lookup(path, _TOP_INV)
