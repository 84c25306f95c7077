"""DoRA / LoRA adapters for the Wan DiT (Wan-Alpha DoRA, LightX2V distill LoRA).

Wan-Alpha ships its DiT adapter as peft DoRA tensors in the original Wan layout
(``blocks.N.self_attn.q.lora_A.default.weight``, ``…lora_B…``, ``…lora_magnitude_vector…``).
This module reads that layout (and the common LoRA layouts), merges it into the diffusers
``WanTransformer3DModel`` Linears, and lets our own training inject and export a DoRA in
the same layout so one loader serves both.

Merge rules (the same algebra peft uses at run time, see ``peft/tuners/lora/dora.py``):

* LoRA: ``W' = W + s·B·A``
* DoRA: ``W' = m · (W + s·B·A) / ‖W + s·B·A‖`` with the L2 norm taken per output row;
  the bias is left as is.

``s = scale · alpha / r`` when the file stores an ``alpha`` per module, else ``s = scale``
(peft's ``lora_alpha / r`` with ``lora_alpha = r``; Wan-Alpha's files carry no alpha).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rgbacli.errors import WeightsError
from rgbacli.models.wan_names import DORA_TARGETS, diffusers_to_wan, strip_prefix, wan_to_diffusers
from rgbacli.weights.io import adapter_metadata, load_state_dict, save_safetensors

__all__ = [
    "parse_adapter",
    "merge_dora",
    "merge_lora",
    "merge_adapter",
    "add_dora_adapter",
    "export_dora_state_dict",
    "save_adapter",
    "AdapterModule",
]

StateDict = dict[str, torch.Tensor]

# Parameter suffixes we understand, as (regex on the key tail, part name).
_SUFFIXES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\.lora_A(?:\.[A-Za-z0-9_]+)?\.weight$"), "A"),
    (re.compile(r"\.lora_B(?:\.[A-Za-z0-9_]+)?\.weight$"), "B"),
    (re.compile(r"\.lora_down\.weight$"), "A"),
    (re.compile(r"\.lora_up\.weight$"), "B"),
    (re.compile(r"\.lora_magnitude_vector(?:\.[A-Za-z0-9_]+)?(?:\.weight)?$"), "magnitude"),
    (re.compile(r"\.alpha$"), "alpha"),
    (re.compile(r"\.diff_b$"), "diff_b"),
    (re.compile(r"\.diff_m$"), "diff_m"),
    (re.compile(r"\.diff$"), "diff"),
)

# Module names that only the original Wan layout uses (their presence decides the layout,
# which matters because ``norm2``/``norm3`` mean different norms in the two namings).
_WAN_ONLY = re.compile(
    r"(^|\.)(self_attn|cross_attn|ffn\.[02]|modulation|head|text_embedding|time_embedding|time_projection|img_emb)(\.|$)"
)


@dataclass
class AdapterModule:
    """The adapter tensors for one target module (diffusers name), plus where they came from."""

    name: str
    keys: dict[str, str]  # part -> original key, for error messages
    A: torch.Tensor | None = None
    B: torch.Tensor | None = None
    magnitude: torch.Tensor | None = None
    alpha: float | None = None
    diff: torch.Tensor | None = None
    diff_b: torch.Tensor | None = None
    diff_m: torch.Tensor | None = None  # LightX2V: a full delta of the block's modulation

    def key(self, part: str) -> str:
        return self.keys.get(part) or self.keys.get("A") or next(iter(self.keys.values()))

    def scaling(self, scale: float) -> float:
        if self.alpha is None:
            return float(scale)
        return float(scale) * self.alpha / self.A.shape[0]


def _split_key(key: str) -> tuple[str, str] | None:
    for pattern, part in _SUFFIXES:
        m = pattern.search(key)
        if m:
            return key[: m.start()], part
    return None


def parse_adapter(transformer: nn.Module, state_dict: StateDict) -> dict[str, AdapterModule]:
    """Group adapter tensors by target module, translated to diffusers names.

    Accepts the original Wan layout (with or without ``diffusion_model.``/``model.`` prefixes)
    and already-diffusers-named keys. Any key that is not an adapter tensor, or that names a
    module the transformer lacks, is a :class:`WeightsError` naming the key.
    """
    modules = dict(transformer.named_modules())
    split: list[tuple[str, str, str]] = []  # (key, module path, part)
    for key in state_dict:
        parts = _split_key(key)
        if parts is None:
            raise WeightsError(f"adapter weights: unexpected key {key!r}")
        split.append((key, strip_prefix(parts[0]), parts[1]))

    wan_layout = any(_WAN_ONLY.search(path) for _, path, _ in split)
    out: dict[str, AdapterModule] = {}
    for key, path, part in split:
        if part == "diff_m":  # `blocks.N.diff_m` → added to `blocks.N.modulation` (diffusers: scale_shift_table)
            name = path
            if not isinstance(getattr(modules.get(name), "scale_shift_table", None), torch.Tensor):
                raise WeightsError(f"adapter key {key!r} names no block modulation of the transformer")
        else:
            name = wan_to_diffusers(path) if wan_layout else path
        if name is None or name not in modules:
            raise WeightsError(f"adapter key {key!r} names no module of the transformer")
        entry = out.setdefault(name, AdapterModule(name=name, keys={}))
        entry.keys[part] = key
        value = state_dict[key]
        if part == "alpha":
            entry.alpha = float(value.reshape(-1)[0].item())
        else:
            setattr(entry, part, value)

    for entry in out.values():
        has_a, has_b = entry.A is not None, entry.B is not None
        if has_a != has_b:
            missing = "lora_B (lora_up)" if has_a else "lora_A (lora_down)"
            raise WeightsError(f"adapter weights have {entry.key('A' if has_a else 'B')!r} but no matching {missing}")
        if (entry.magnitude is not None or entry.alpha is not None) and not has_a:
            raise WeightsError(f"adapter key {entry.key('magnitude')!r} has no lora_A/lora_B beside it")
        if has_a:
            _check_shapes(entry, modules[entry.name])
    return out


def _check_shapes(entry: AdapterModule, module: nn.Module) -> None:
    weight = getattr(module, "weight", None)
    if not isinstance(module, nn.Linear) or weight is None:
        raise WeightsError(f"adapter key {entry.key('A')!r} targets {entry.name}, which is not a Linear layer")
    out_f, in_f = weight.shape
    rank = entry.A.shape[0]
    if entry.A.shape != (rank, in_f) or entry.B.shape != (out_f, rank):
        raise WeightsError(
            f"adapter key {entry.key('A')!r}: lora_A {tuple(entry.A.shape)} / lora_B {tuple(entry.B.shape)} "
            f"do not fit {entry.name} ({out_f}×{in_f})"
        )
    if entry.magnitude is not None and entry.magnitude.numel() != out_f:
        raise WeightsError(f"adapter key {entry.key('magnitude')!r}: {entry.magnitude.numel()} values, expected {out_f}")


def _check_complete(entries: dict[str, AdapterModule], part: str, what: str) -> None:
    """Every block that has some target must have the same set of targets (a missing one is named)."""
    per_block: dict[str, set[str]] = {}
    for name, entry in entries.items():
        if getattr(entry, part) is None:
            continue
        m = re.match(r"^blocks\.(\d+)\.(.+)$", name)
        if m:
            per_block.setdefault(m.group(1), set()).add(m.group(2))
    union = set().union(*per_block.values()) if per_block else set()
    for block, names in sorted(per_block.items(), key=lambda kv: int(kv[0])):
        for inner in sorted(union - names):
            raise WeightsError(f"{what} weights are missing blocks.{block}.{inner} (original name "
                               f"{diffusers_to_wan(f'blocks.{block}.{inner}')}) present in other blocks")


def _as_state_dict(weights: StateDict | str | Path) -> StateDict:
    return load_state_dict(weights) if isinstance(weights, (str, Path)) else weights


@torch.no_grad()
def merge_dora(transformer: nn.Module, weights: StateDict | str | Path, scale: float = 1.0, strict: bool = True) -> list[str]:
    """Merge a DoRA adapter into the transformer's Linear weights in place; returns merged modules.

    ``W' = m · (W + s·B·A) / ‖W + s·B·A‖`` per output row, computed in float32.
    With ``strict``, every block must carry the same targets (a gap is a WeightsError).
    """
    entries = parse_adapter(transformer, _as_state_dict(weights))
    modules = dict(transformer.named_modules())
    for entry in entries.values():
        if entry.A is not None and entry.magnitude is None:
            raise WeightsError(f"DoRA weights have {entry.key('A')!r} but no lora_magnitude_vector for {entry.name}")
        for part in ("diff", "diff_b", "diff_m"):
            if getattr(entry, part) is not None:
                raise WeightsError(f"DoRA weights: unexpected key {entry.key(part)!r}")
    if strict:
        _check_complete(entries, "A", "DoRA")
    merged = []
    for entry in entries.values():
        linear = modules[entry.name]
        w = linear.weight.float()
        v = w + entry.scaling(scale) * (entry.B.float() @ entry.A.float())
        norm = torch.linalg.norm(v, dim=1, keepdim=True)
        new = entry.magnitude.float().reshape(-1, 1) * v / norm
        linear.weight.copy_(new.to(linear.weight.dtype))
        merged.append(entry.name)
    return merged


@torch.no_grad()
def merge_lora(transformer: nn.Module, weights: StateDict | str | Path, scale: float = 1.0, strict: bool = False) -> list[str]:
    """Merge a plain LoRA (``W += s·B·A``; plus ``diff``/``diff_b`` full deltas) in place.

    Accepts ``lora_A/lora_B`` and ``lora_down/lora_up`` with an optional ``.alpha`` per module
    (``s = scale·alpha/r``); LightX2V's ``blocks.N.diff_m`` is added to ``blocks.N.modulation``. A DoRA file (magnitude vectors) is refused: use :func:`merge_dora`.
    """
    entries = parse_adapter(transformer, _as_state_dict(weights))
    modules = dict(transformer.named_modules())
    for entry in entries.values():
        if entry.magnitude is not None:
            raise WeightsError(f"{entry.key('magnitude')!r} is a DoRA magnitude; load this file with merge_dora")
    if strict:
        _check_complete(entries, "A", "LoRA")
    merged = []
    for entry in entries.values():
        module = modules[entry.name]
        if entry.A is not None:
            delta = entry.scaling(scale) * (entry.B.float() @ entry.A.float())
            module.weight.add_(delta.to(module.weight.dtype))
        if entry.diff is not None:
            _add_full_delta(module, "weight", entry.diff, scale, entry.key("diff"))
        if entry.diff_b is not None:
            _add_full_delta(module, "bias", entry.diff_b, scale, entry.key("diff_b"))
        if entry.diff_m is not None:
            _add_full_delta(module, "scale_shift_table", entry.diff_m, scale, entry.key("diff_m"))
        merged.append(entry.name)
    return merged


def _add_full_delta(module: nn.Module, attr: str, delta: torch.Tensor, scale: float, key: str) -> None:
    target = getattr(module, attr, None)
    if not isinstance(target, torch.Tensor) or target.numel() != delta.numel():
        raise WeightsError(f"adapter key {key!r} does not fit {attr} of its module")
    target.add_((scale * delta.float()).reshape(target.shape).to(target.dtype))


def merge_adapter(transformer: nn.Module, weights: StateDict | str | Path, scale: float = 1.0) -> list[str]:
    """Merge a DoRA or LoRA file, whichever it is (magnitude vectors present → DoRA)."""
    sd = _as_state_dict(weights)
    if any("lora_magnitude_vector" in k for k in sd):
        return merge_dora(transformer, sd, scale)
    return merge_lora(transformer, sd, scale)


def add_dora_adapter(
    transformer: nn.Module,
    rank: int = 32,
    alpha: float | None = None,
    target_modules: tuple[str, ...] = DORA_TARGETS,
    adapter_name: str = "default",
) -> None:
    """Inject a trainable peft DoRA on Wan-Alpha's targets (attn1/attn2 q,k,v,out and both FFN Linears).

    ``alpha`` defaults to ``rank`` (scaling 1), the convention of Wan-Alpha's released files.
    Base weights are frozen; only the adapter's A/B/magnitude train.
    """
    from peft import LoraConfig

    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        use_dora=True,
        target_modules=list(target_modules),
        init_lora_weights=True,
    )
    for p in transformer.parameters():
        p.requires_grad_(False)
    transformer.add_adapter(config, adapter_name=adapter_name)


def save_adapter(tensors: StateDict, path: str | Path, base: nn.Module | dict) -> Path:
    """Write a DoRA/LoRA state dict as safetensors with the fingerprint of the base it was made on
    (`base`: the pristine model, or its `weights.io.base_fingerprint` taken before peft injected
    the adapter); presets check it at load."""
    return save_safetensors(tensors, path, metadata=adapter_metadata(base))


def export_dora_state_dict(transformer: nn.Module, adapter_name: str = "default") -> StateDict:
    """The injected DoRA in Wan-Alpha's released layout (original Wan names, ``.default.`` tag).

    An ``.alpha`` entry is added per module only when ``lora_alpha != r`` (the released files
    assume scaling 1), so :func:`merge_dora` reproduces the adapter exactly either way.
    """
    out: StateDict = {}
    for name, module in transformer.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, nn.ModuleDict) or adapter_name not in lora_a:
            continue
        magnitude = getattr(module, "lora_magnitude_vector", None)
        if magnitude is None or adapter_name not in magnitude:
            raise WeightsError(f"{name} has a LoRA but no DoRA magnitude for adapter {adapter_name!r}")
        wan = diffusers_to_wan(name)
        if wan is None:
            raise WeightsError(f"{name} has no original Wan name; cannot export in the Wan-Alpha layout")
        out[f"{wan}.lora_A.default.weight"] = lora_a[adapter_name].weight.detach().cpu().contiguous()
        out[f"{wan}.lora_B.default.weight"] = module.lora_B[adapter_name].weight.detach().cpu().contiguous()
        out[f"{wan}.lora_magnitude_vector.default.weight"] = magnitude[adapter_name].weight.detach().cpu().contiguous()
        rank, lora_alpha = module.r[adapter_name], module.lora_alpha[adapter_name]
        if lora_alpha != rank:
            out[f"{wan}.alpha"] = torch.tensor(float(lora_alpha))
    if not out:
        raise WeightsError(f"the transformer has no DoRA adapter named {adapter_name!r}")
    return out
