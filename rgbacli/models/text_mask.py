"""Cross-attention that skips padded text tokens, for DiTs trained with it (the embedded tiny model).

Wan pads every prompt with zeros to a fixed length and its cross-attention attends to the padding
too. The released weights were trained that way, so the real presets keep it. A tiny model trained
like that sends most of its cross-attention to the padding. Measured on the embedded model, 12
minutes into stage 2: in most heads 80–95% of the mass went to the 18 padded positions of a 6-word
prompt. With the mask, the words no longer compete with padding. The measured gain is small
(docs/training.md).

The mask is read from the text itself: the text encoders zero their padded positions, so a key
position whose raw embedding is all zeros is padding. A forward pre-hook on the transformer records
the mask, and the ``attn2`` processors apply it. A prompt with no tokens at all (the unconditional
input of classifier-free guidance) keeps plain attention over its padding. That gives the learned
"null" output, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rgbacli.models.motion_free import WanSelfAttnProcessor


@dataclass
class TextMaskState:
    """The (B, L) key mask of the current forward (True = a real text token), shared by all blocks."""

    mask: torch.Tensor | None = None


def text_key_mask(encoder_hidden_states: torch.Tensor) -> torch.Tensor:
    """(B, L, D) zero-padded text → (B, L) bool. Rows without any token attend to everything."""
    mask = encoder_hidden_states.detach().abs().amax(dim=-1) > 0
    return mask | ~mask.any(dim=-1, keepdim=True)


class MaskedCrossAttnProcessor(WanSelfAttnProcessor):
    """Wan's text cross-attention (``attn2``) with padded key positions blocked."""

    def __init__(self, state: TextMaskState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError(f"{type(self).__name__} is for cross-attention (attn2) only")
        if getattr(attn, "add_k_proj", None) is not None:
            raise ValueError(f"{type(self).__name__} does not handle image-conditioned cross-attention")
        heads = attn.heads
        query = attn.norm_q(self.linear(attn, "to_q", hidden_states)).unflatten(2, (heads, -1))
        key = attn.norm_k(self.linear(attn, "to_k", encoder_hidden_states)).unflatten(2, (heads, -1))
        value = self.linear(attn, "to_v", encoder_hidden_states).unflatten(2, (heads, -1))
        mask = self.state.mask
        if mask is not None:
            if mask.shape != encoder_hidden_states.shape[:2]:
                raise ValueError(f"text mask {tuple(mask.shape)} does not match the text {tuple(encoder_hidden_states.shape[:2])}")
            mask = mask[:, None, None, :].to(query.device)  # (B, 1, 1, L) broadcast over heads and queries
        out = self.attend(query, key, value, mask)
        return self.output(attn, out.flatten(2, 3).type_as(query))


def enable_text_mask(transformer: nn.Module) -> TextMaskState:
    """Install masked ``attn2`` processors on every block and the hook that records each forward's
    mask; marks the model (``transformer.text_mask``) so the weights file says it was trained so."""
    state = TextMaskState()

    def record(_module, args, kwargs):
        text = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        state.mask = None if text is None else text_key_mask(text)

    for block in transformer.blocks:
        block.attn2.set_processor(MaskedCrossAttnProcessor(state))
    transformer.register_forward_pre_hook(record, with_kwargs=True)
    transformer.text_mask = state
    return state
