"""Cross-attention that skips padded text tokens, for DiTs trained with it (the embedded tiny model).

Wan pads every prompt with zeros to a fixed length and its cross-attention attends to the padding
too. The released weights were trained that way, so the real presets keep it. A tiny model trained
like that sends most of its cross-attention to the padding. Measured on the embedded model, 12
minutes into stage 2: in most heads 80–95% of the mass went to the 18 padded positions of a 6-word
prompt. With the mask, the words no longer compete with padding. The measured gain is small
(docs/training.md).

The mask is read from the text itself: the text encoders zero their padded positions, so a key
position whose raw embedding is all zeros is padding. The model's attention context records the raw
text at each forward, and a :class:`TextKeyMask` behaviour on every ``attn2`` applies the mask. A
prompt with no tokens at all (the unconditional input of classifier-free guidance) keeps plain
attention over its padding. That gives the learned "null" output, as before.
"""

from __future__ import annotations

import torch
from torch import nn

from rgbacli.models.attention import Attachment, Behaviour, attach, merge_masks


def text_key_mask(encoder_hidden_states: torch.Tensor) -> torch.Tensor:
    """(B, L, D) zero-padded text → (B, L) bool. Rows without any token attend to everything."""
    mask = encoder_hidden_states.detach().abs().amax(dim=-1) > 0
    return mask | ~mask.any(dim=-1, keepdim=True)


class TextKeyMask(Behaviour):
    """Wan's text cross-attention (``attn2``) with padded key positions blocked."""

    def kv(self, call, query, key, value, mask):
        memo = call.context.memo
        if "text_mask" not in memo:  # once per forward, shared by every block
            text = call.context.text
            memo["text_mask"] = None if text is None else text_key_mask(text)
        text_mask = memo["text_mask"]
        if text_mask is None:
            return key, value, mask
        if text_mask.shape != key.shape[:2]:
            raise ValueError(f"text mask {tuple(text_mask.shape)} does not match the text {tuple(key.shape[:2])}")
        text_mask = text_mask[:, None, None, :].to(query.device)  # (B, 1, 1, L) over heads and queries
        return key, value, merge_masks(text_mask, mask)


def enable_text_mask(transformer: nn.Module) -> Attachment:
    """Attach :class:`TextKeyMask` to every block's ``attn2``; marks the model (``transformer.text_mask``)
    so the weights file says it was trained so."""
    shared = TextKeyMask()
    attachment = attach(transformer, lambda _i: shared, "attn2")
    transformer.text_mask = attachment
    return attachment
