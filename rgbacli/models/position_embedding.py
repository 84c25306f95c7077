"""Absolute (frame, row, column) position embedding added after the DiT's patch embedding.

Wan encodes positions only with RoPE, which shapes attention scores but never enters the token
states, so cross-attention cannot tie a word like "left" to where a token is in time and space.
Large models recover position from context; a tiny one learns motion far faster when each token
knows its own (t, y, x). Attached as a forward hook on `patch_embedding`, so the diffusers model
class and its attention processors stay untouched (the tiny preset enables it in its config).
"""

from __future__ import annotations

import torch
from torch import nn

from rgbacli.models.attention import context_of


class FactorisedPositionEmbedding(nn.Module):
    """Learned embeddings per latent frame, row and column, summed and added to patch tokens."""

    def __init__(self, dim: int, frames: int, rows: int, cols: int, init_std: float = 0.02):
        super().__init__()
        self.frame = nn.Parameter(torch.randn(frames, dim) * init_std)
        self.row = nn.Parameter(torch.randn(rows, dim) * init_std)
        self.col = nn.Parameter(torch.randn(cols, dim) * init_std)

    def forward(self, x: torch.Tensor, copies: int = 1) -> torch.Tensor:
        """x: patch-embedded (B, D, F, H, W) → same shape with positions added. With `copies` 2
        (TransPixar alpha tokens) the alpha half reuses the RGB half's positions."""
        _, _, f, h, w = x.shape
        f //= copies
        if f > self.frame.shape[0] or h > self.row.shape[0] or w > self.col.shape[0]:
            raise ValueError(f"token grid {f}x{h}x{w} exceeds the position table "
                             f"{self.frame.shape[0]}x{self.row.shape[0]}x{self.col.shape[0]}")
        pos = (self.frame[:f, None, None] + self.row[None, :h, None] + self.col[None, None, :w])  # (F,H,W,D)
        pos = pos.repeat(copies, 1, 1, 1)
        return x + pos.permute(3, 0, 1, 2).unsqueeze(0).to(x.dtype)


def attach_position_embedding(transformer: nn.Module, frames: int, rows: int, cols: int,
                              init_std: float = 0.02) -> FactorisedPositionEmbedding:
    """Register `transformer.abs_pos` and a hook that adds it to the patch embedding's output (the
    number of frame-grid copies in the sequence comes from the model's attention context)."""
    dim = transformer.patch_embedding.out_channels
    emb = FactorisedPositionEmbedding(dim, frames, rows, cols, init_std).to(transformer.patch_embedding.weight)
    transformer.add_module("abs_pos", emb)
    context = context_of(transformer)
    transformer.patch_embedding.register_forward_hook(lambda _m, _inp, out: transformer.abs_pos(out, context.copies))
    return emb
