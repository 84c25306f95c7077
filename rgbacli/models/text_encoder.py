"""Tiny trained text encoder: a fixed word vocabulary + a 2-layer transformer, no downloads.

The vocabulary is exactly the words the procedural data generator can say (sorted, `<pad>`
first), so every token the encoder sees at inference was seen in training. Words outside it
are dropped with a warning that names them; a handful of common function words ("the", "on",
"background", …) are dropped silently. Output: (B, L, width) hidden states for the DiT's
cross-attention, zero at padded positions. An empty prompt (the unconditional input for
classifier-free guidance) is all padding and encodes to all zeros.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from rgbacli.console import warn as warn_line
from rgbacli.data.captions import caption_vocabulary, STOPWORDS
from rgbacli.errors import WeightsError
from rgbacli.weights.io import load_strict, save_safetensors


PAD = "<pad>"
FORMAT = "rgbacli.tiny_text_encoder"
_SPLIT = re.compile(r"[^a-z]+")


def default_vocab() -> list[str]:
    """`<pad>` followed by the sorted caption vocabulary of the data generator."""
    return [PAD, *caption_vocabulary()]


def vocab_for(captions: list[str]) -> list[str]:
    """The default vocabulary plus every other word of `captions` (sorted, stopwords left out): what
    a text encoder trained on a folder of the user's captioned clips needs to read them."""
    base = default_vocab()
    known = set(base) | set(STOPWORDS)
    extra = {w for c in captions for w in _SPLIT.split(c.lower()) if w and w not in known}
    return base + sorted(extra)


class WordTokenizer:
    """Lowercase, split on non-letters, map words to ids; pad/truncate to `max_len`."""

    def __init__(self, vocab: list[str] | None = None, max_len: int = 24):
        self.vocab = list(vocab) if vocab is not None else default_vocab()
        if not self.vocab or self.vocab[0] != PAD:
            raise ValueError(f"vocabulary must start with {PAD!r}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocabulary has duplicate words")
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = max_len
        self.stopwords = STOPWORDS

    def words(self, text: str) -> list[str]:
        return [w for w in _SPLIT.split(text.lower()) if w]

    def tokenize(self, text: str) -> tuple[list[int], list[str]]:
        """(ids of known words, unknown words) for one prompt, before padding."""
        ids, unknown = [], []
        for w in self.words(text):
            if w in self.ids:
                ids.append(self.ids[w])
            elif w not in self.stopwords:
                unknown.append(w)
        return ids, unknown

    def __call__(self, prompts: str | list[str], warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, max_len) long and attention mask (B, max_len) bool (True = real token)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        unknown: list[str] = []
        truncated = False
        for b, text in enumerate(prompts):
            toks, unk = self.tokenize(text)
            unknown.extend(w for w in unk if w not in unknown)
            if len(toks) > self.max_len:
                truncated = True
                toks = toks[: self.max_len]
            ids[b, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        if warn and unknown:
            warn_line("unknown words ignored: " + ", ".join(f'"{w}"' for w in unknown))
        if warn and truncated:
            warn_line(f"prompt longer than {self.max_len} known words; the rest is ignored")
        return ids, ids != 0

    def __len__(self) -> int:
        return len(self.vocab)


class TinyTextEncoder(nn.Module):
    """Token embedding + learned positions + pre-norm TransformerEncoder layers + LayerNorm.

    `seed` makes initialisation deterministic without touching the global torch RNG.
    """

    def __init__(self, vocab: list[str] | None = None, width: int = 128, layers: int = 2, heads: int = 4,
                 max_len: int = 24, ffn_mult: int = 4, dropout: float = 0.0, seed: int | None = 0):
        super().__init__()
        self.tokenizer = WordTokenizer(vocab, max_len)
        self.config = {
            "vocab_size": len(self.tokenizer), "width": width, "layers": layers, "heads": heads,
            "max_len": max_len, "ffn_mult": ffn_mult, "dropout": dropout,
        }
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.embed = nn.Embedding(len(self.tokenizer), width, padding_idx=0)
            nn.init.normal_(self.embed.weight, std=0.5)
            with torch.no_grad():
                self.embed.weight[0].zero_()
            self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
            layer = nn.TransformerEncoderLayer(width, heads, width * ffn_mult, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(width)

    @property
    def width(self) -> int:
        return self.config["width"]

    @property
    def vocab(self) -> list[str]:
        return self.tokenizer.vocab

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, L) long, mask (B, L) bool → hidden (B, L, width), zero where mask is False."""
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        # A row with no tokens would make attention all -inf (NaN): let it see position 0, then zero it.
        pad = ~mask
        empty = ~mask.any(dim=1)
        if empty.any():
            pad = pad.clone()
            pad[empty, 0] = False
        x = self.blocks(x, src_key_padding_mask=pad)
        return self.norm(x) * mask.unsqueeze(-1).to(x.dtype)

    def encode(self, prompts: str | list[str], warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → (hidden (B, max_len, width), mask (B, max_len) bool) on the module's device."""
        ids, mask = self.tokenizer(prompts, warn=warn)
        device = self.pos.device
        return self(ids.to(device), mask.to(device)), mask.to(device)

    # --- weights -----------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        """safetensors metadata that makes a weights file self-contained (config + vocab)."""
        return {"format": FORMAT, "config": json.dumps(self.config, sort_keys=True),
                "vocab": json.dumps(self.vocab)}

    def save(self, path: str | os.PathLike) -> None:
        """Write weights + config + vocab to one .safetensors file (temp file, then rename)."""
        save_safetensors(self.state_dict(), path, metadata=self.metadata())

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None,
                     where: str = "text encoder weights") -> "TinyTextEncoder":
        """Build from a state dict + the metadata written by `save`; WeightsError names problems."""
        if not metadata or metadata.get("format") != FORMAT or "config" not in metadata or "vocab" not in metadata:
            raise WeightsError(f"{where}: not a tiny text encoder file (metadata missing config/vocab)")
        try:
            config = json.loads(metadata["config"])
            vocab = json.loads(metadata["vocab"])
        except json.JSONDecodeError as e:
            raise WeightsError(f"{where}: corrupt metadata ({e})") from None
        if config.get("vocab_size") != len(vocab):
            raise WeightsError(f"{where}: vocab_size {config.get('vocab_size')} != {len(vocab)} stored words")
        model = cls(vocab, width=config["width"], layers=config["layers"], heads=config["heads"],
                    max_len=config["max_len"], ffn_mult=config.get("ffn_mult", 4),
                    dropout=config.get("dropout", 0.0), seed=None)
        load_strict(model, tensors, where)
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "TinyTextEncoder":
        """Load a file written by `save`."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"text encoder weights not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path}: unreadable safetensors file ({e})") from None
        return cls.from_tensors(tensors, metadata, where=str(path)).to(device)
