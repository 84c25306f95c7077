"""StoryDiffusion's consistent self-attention (CSA) on the video DiT's full 3-D self-attention.

A character's first ``id_length`` panels ("identity panels") are sampled together as one batch:
each panel's keys/values are its own tokens plus a random share ``sa`` of the other identity
panels' tokens, redrawn every step from a seeded generator (**write**). The tokens drawn are
stored, after RoPE, per block and per step: the character's :class:`IdentityBank`. Every other
panel is sampled alone and attends to its own tokens plus the bank of each character it names
(**read**). Guidance passes (text CFG, motion-free guidance) never mix: the batch is pass-major
and each pass writes and reads its own part of the bank. Step 0 runs plain attention.

Two additions for a model with few tokens per frame (the embedded tiny DiT has 16), both
measured in docs/story.md:

* ``bank_weight`` w: the bank's logits get + log w, as if each bank token were there w times;
* ``foreground``: only tokens where the identity panels' predicted alpha is non-zero enter the
  bank (RGBA gives the subject mask for free); the mask comes from the previous step's x0
  estimate, set by the story pipeline through :meth:`StoryState.set_foreground`.

Memory: the bank holds ``passes × steps × blocks × 2 × (share · id_length · tokens) × width``
values, whatever the story's length; read panels are sampled one at a time.

Sections: 1. configuration · 2. the bank · 3. per-run state · 4. the behaviour.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rgbacli.errors import WeightsError
from rgbacli.models.attention import Attachment, Behaviour, as_bias, attach, extend_kv
from rgbacli.weights.io import load_state_dict, read_metadata, save_safetensors

__all__ = ["CSAConfig", "IdentityBank", "StoryState", "ConsistentSelfAttention", "attach_csa",
           "save_banks", "load_banks"]

BANK_FORMAT = "rgbacli.identity_banks/1"


# --------------------------------------------------------------------------- 1. configuration


@dataclass(frozen=True)
class CSAConfig:
    """How consistent self-attention runs (defaults: the reference's, plus what docs/story.md measured)."""

    sa: float = 0.5  # share of the other identity panels' tokens each identity panel sees per step
    start_step: int = 1  # steps before this run plain attention (the reference: step 0)
    start: float = 0.0  # and the share of the steps that does: layout and motion form early (docs/story.md)
    blocks: tuple[int, ...] | None = None  # None: every block
    bank_weight: float = 1.0  # w: bank logits + log w (1 = plain CSA)
    foreground: bool = False  # bank only tokens under the identity panels' predicted alpha
    alpha_half: bool = True  # alpha tokens backend: bank the alpha half's tokens too

    def __post_init__(self):
        if not 0.0 <= self.sa <= 1.0:
            raise ValueError(f"sa must be in [0, 1], not {self.sa}")
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"start must be a share of the steps in [0, 1], not {self.start}")
        if not self.bank_weight > 0:
            raise ValueError(f"bank_weight must be positive, not {self.bank_weight}")

    def first_step(self, steps: int) -> int:
        """The first step that runs CSA in a run of `steps` steps."""
        return max(self.start_step, round(self.start * steps))

    def to_json(self) -> dict:
        return {**asdict(self), "blocks": None if self.blocks is None else list(self.blocks)}


# --------------------------------------------------------------------------- 2. the bank


@dataclass
class IdentityBank:
    """One character: its stored keys/values ``entries[(block, step)] = (key, value)``, each
    (passes, N, H, D) after RoPE; its look for the identity anchor (foreground latent mean/std,
    (1, C, G) each, G frame groups: rgbacli.pipelines.story.frame_groups); its identity panels (uint8 (T, H, W, 4) each, for its reference sheet); and
    ``meta``, what it is valid for (model, sampling settings)."""

    name: str
    description: str = ""
    entries: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    anchor: tuple[torch.Tensor, torch.Tensor] | None = None
    images: list[torch.Tensor] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def tokens(self) -> int:
        """Tokens per block and step (0 for an empty bank)."""
        return next(iter(self.entries.values()))[0].shape[1] if self.entries else 0

    def numel(self) -> int:
        return sum(k.numel() + v.numel() for k, v in self.entries.values())


def save_banks(banks: dict[str, IdentityBank], path: str | Path) -> Path:
    """Write identity banks (all characters) as one safetensors file, atomically."""
    tensors, chars = {}, {}
    for name, bank in banks.items():
        chars[name] = {"description": bank.description, "meta": bank.meta, "images": len(bank.images)}
        for (block, step), (k, v) in bank.entries.items():
            tensors[f"{name}/kv/{block}/{step}/k"] = k
            tensors[f"{name}/kv/{block}/{step}/v"] = v
        if bank.anchor is not None:
            tensors[f"{name}/anchor/mean"], tensors[f"{name}/anchor/std"] = bank.anchor
        for i, image in enumerate(bank.images):
            tensors[f"{name}/image/{i}"] = image
    meta = {"format": BANK_FORMAT, "characters": json.dumps(chars, sort_keys=True)}
    return save_safetensors(tensors, path, metadata=meta)


def load_banks(path: str | Path) -> dict[str, IdentityBank]:
    """Read a file written by :func:`save_banks`; anything else is one WeightsError line."""
    meta = read_metadata(path)
    if meta.get("format") != BANK_FORMAT:
        raise WeightsError(f"{path} is not an rgbacli character file (made by `rgba story --save-characters`)")
    try:
        chars = json.loads(meta["characters"])
        banks = {name: IdentityBank(name, c["description"], meta=c["meta"]) for name, c in chars.items()}
    except (KeyError, TypeError, json.JSONDecodeError):
        raise WeightsError(f"{path}: corrupt character metadata") from None
    kv: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}
    anchors: dict[str, dict[str, torch.Tensor]] = {}
    images: dict[str, dict[int, torch.Tensor]] = {}
    for key, t in load_state_dict(path).items():
        parts = key.split("/")
        try:
            if parts[0] not in banks:
                raise KeyError
            if parts[1] == "kv" and len(parts) == 5 and parts[4] in ("k", "v"):
                kv.setdefault((parts[0], int(parts[2]), int(parts[3])), {})[parts[4]] = t
            elif parts[1] == "anchor" and len(parts) == 3 and parts[2] in ("mean", "std"):
                anchors.setdefault(parts[0], {})[parts[2]] = t
            elif parts[1] == "image" and len(parts) == 3:
                images.setdefault(parts[0], {})[int(parts[2])] = t
            else:
                raise KeyError
        except (KeyError, ValueError, IndexError):
            raise WeightsError(f"{path}: unexpected key {key!r}") from None
    for (name, block, step), pair in kv.items():
        if set(pair) != {"k", "v"} or pair["k"].shape != pair["v"].shape:
            raise WeightsError(f"{path}: character {name!r} has an incomplete bank at block {block}, step {step}")
        banks[name].entries[(block, step)] = (pair["k"], pair["v"])
    for name, pair in anchors.items():
        if set(pair) != {"mean", "std"}:
            raise WeightsError(f"{path}: character {name!r} has half an anchor")
        if pair["mean"].ndim != 3 or pair["mean"].shape != pair["std"].shape:
            raise WeightsError(f"{path}: character {name!r} has a look of shape {tuple(pair['mean'].shape)}, not "
                               "(1, channels, frame groups) (written by an earlier rgbacli? save the characters again)")
        banks[name].anchor = (pair["mean"], pair["std"])
    for name, found in images.items():
        banks[name].images = [found[i] for i in sorted(found)]
    return banks


# --------------------------------------------------------------------------- 3. per-run state


@dataclass
class StoryState:
    """What the CSA behaviours do in the current forward; set by the story pipeline as
    ``context.values["story"]``.

    ``mode`` "write": the batch is one character's identity panels (per guidance pass, B of them)
    and fills ``banks[write_to]``; "read": the batch is one panel (per pass) that attends to the
    banks of ``read_from``; "off": plain attention.
    """

    config: CSAConfig
    banks: dict[str, IdentityBank]
    mode: str = "off"
    write_to: str | None = None
    read_from: tuple[str, ...] = ()
    passes: int = 1
    seed: int = 0
    foreground: torch.Tensor | None = None  # bool (B, S): identity tokens under predicted alpha
    _generator: torch.Generator | None = None

    def begin(self, mode: str, passes: int, write_to: str | None = None, read_from=(), seed: int = 0) -> None:
        """Start a batch: its mode, its pass count and the seed of its token draws."""
        if mode not in ("write", "read", "off"):
            raise ValueError(f"unknown CSA mode {mode!r}")
        self.mode, self.passes, self.write_to, self.read_from = mode, passes, write_to, tuple(read_from)
        self.foreground = None
        self._generator = torch.Generator().manual_seed(int(seed))
        if mode == "write":
            self.banks[write_to] = self.banks.get(write_to) or IdentityBank(write_to)

    def set_foreground(self, mask: torch.Tensor | None) -> None:
        """Bool (B, S) tokens of the identity panels that show the subject (the next steps' bank)."""
        self.foreground = mask

    def draw(self, shape: tuple[int, ...], device) -> torch.Tensor:
        """Bernoulli(sa) keep flags from the run's seeded generator (CPU, so devices agree)."""
        return (torch.rand(shape, generator=self._generator) < self.config.sa).to(device)


# --------------------------------------------------------------------------- 4. the behaviour


class ConsistentSelfAttention(Behaviour):
    """CSA on one block's self-attention (``attn1``); reads the run's :class:`StoryState`."""

    def kv(self, call, query, key, value, mask):
        state: StoryState | None = call.context.values.get("story")
        step = call.context.values.get("step", 0)
        if state is None or state.mode == "off" or step < state.config.first_step(call.context.values.get("steps", 0)):
            return key, value, mask
        if state.mode == "write":
            return self._write(call, state, step, query, key, value, mask)
        return self._read(call, state, step, query, key, value, mask)

    @staticmethod
    def _bankable(call, state: StoryState, s: int) -> torch.Tensor:
        """(S,) bool: tokens that may enter the bank: video tokens only (CogVideoX's joint sequence
        leads with the text), their RGB half only unless alpha_half."""
        ok = torch.zeros(s, dtype=torch.bool)
        ok[call.video_start:] = True
        layout = call.context.layout
        if not state.config.alpha_half and layout is not None and layout.copies == 2:
            ok[call.video_start + (s - call.video_start) // 2:] = False
        return ok

    def _write(self, call, state, step, query, key, value, mask):
        p, (bp, s, h, d) = state.passes, key.shape
        b = bp // p  # identity panels per pass
        keep = state.draw((b, s), key.device) & self._bankable(call, state, s).to(key.device)
        if state.foreground is not None:  # (B, video tokens), placed after any text rows
            keep[:, call.video_start:] &= state.foreground.to(key.device)
        # Each sample sees every identity panel of its pass; its own copy and undrawn tokens are blocked.
        k_pass = key.reshape(p, b * s, h, d)
        v_pass = value.reshape(p, b * s, h, d)
        other = ~torch.eye(b, dtype=torch.bool, device=key.device).repeat_interleave(s, dim=1)  # (b, b·s)
        allowed = (other & keep.reshape(1, b * s)).repeat(p, 1)  # (p·b, b·s)
        extra_k = k_pass.repeat_interleave(b, dim=0)  # (p·b, b·s, h, d): pass group of each sample
        extra_v = v_pass.repeat_interleave(b, dim=0)
        flat = keep.reshape(b * s)
        state.banks[state.write_to].entries[(call.block, step)] = (
            k_pass[:, flat].detach().clone(), v_pass[:, flat].detach().clone())
        if not bool(flat.any()):  # nothing drawn (sa = 0): exactly plain attention
            return key, value, mask
        extra_mask = self._bias(allowed[:, None, :].expand(-1, query.shape[1], -1), state.config.bank_weight)
        return extend_kv(query, key, value, mask, extra_k, extra_v, extra_mask)

    def _read(self, call, state, step, query, key, value, mask):
        parts = [state.banks[name].entries.get((call.block, step)) for name in state.read_from]
        parts = [e for e in parts if e is not None and e[0].shape[1]]
        if not parts:
            return key, value, mask
        p = state.passes
        bank_k = torch.cat([k for k, _ in parts], dim=1).to(key.device)  # (p, N, h, d)
        bank_v = torch.cat([v for _, v in parts], dim=1).to(value.device)
        b = key.shape[0] // p
        extra_k, extra_v = bank_k.repeat_interleave(b, dim=0), bank_v.repeat_interleave(b, dim=0)
        if state.config.bank_weight == 1.0:
            return extend_kv(query, key, value, mask, extra_k, extra_v)
        bias = torch.full((key.shape[0], query.shape[1], bank_k.shape[1]), math.log(state.config.bank_weight),
                          device=key.device)
        return extend_kv(query, key, value, mask, extra_k, extra_v, bias)

    @staticmethod
    def _bias(allowed: torch.Tensor, weight: float) -> torch.Tensor:
        """Boolean allowed-mask, or with a bank weight the float bias log w / −inf."""
        return allowed if weight == 1.0 else as_bias(allowed) + math.log(weight)


def attach_csa(transformer, config: CSAConfig) -> Attachment:
    """CSA on the self-attention of every block (or of `config.blocks`)."""
    shared = ConsistentSelfAttention()
    return attach(transformer, lambda _i: shared, "attn1", blocks=config.blocks)
