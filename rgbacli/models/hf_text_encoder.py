"""Text encoders of the real presets (UMT5 for Wan, T5 for CogVideoX), loaded from local files only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rgbacli.errors import WeightsError


class HFTextEncoder(nn.Module):
    """A transformers encoder + tokenizer behind the same `encode(prompts)` call as the tiny encoder."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int, mask_padding: bool = True):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        # UMT5 (Wan): attention mask, padding zeroed (WanPipeline). T5 (CogVideoX): neither; the
        # padding embeddings are kept, as CogVideoXPipeline computes them (the DiT was trained so).
        self.mask_padding = mask_padding

    @classmethod
    def load(cls, kind: str, model_dir: Path, tokenizer_dir: Path, max_length: int) -> "HFTextEncoder":
        """Read the encoder and tokenizer from local diffusers-layout folders (no hub access)."""
        try:
            from transformers import AutoTokenizer, T5EncoderModel, UMT5EncoderModel

            model_cls = UMT5EncoderModel if kind == "umt5" else T5EncoderModel
            model = model_cls.from_pretrained(str(model_dir), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        except (OSError, ValueError, ImportError) as e:
            raise WeightsError(f"cannot load {kind} text encoder from {model_dir}: {str(e).splitlines()[0]}") from None
        return cls(model, tokenizer, max_length, mask_padding=kind != "t5")

    @torch.no_grad()
    def encode(self, prompts: list[str], warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden (B, max_length, D), mask (B, max_length) bool), the tiny encoder's interface.
        UMT5: the encoder sees the attention mask and positions past each prompt's tokens are zeroed
        (as Wan does). T5 (`mask_padding=False`): no mask, padding kept, the mask is all True (as
        CogVideoXPipeline). `warn` is unused: the tokenizer knows every word."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        if not self.mask_padding:
            return self.model(ids).last_hidden_state, torch.ones_like(mask, dtype=torch.bool)
        hidden = self.model(ids, mask).last_hidden_state
        return hidden * mask.unsqueeze(-1).to(hidden.dtype), mask.bool()
