"""Training checkpoints as safetensors: trainable weights + AdamW moments + step, for --resume."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from rgbacli.errors import RgbaError
from rgbacli.weights.io import save_safetensors


def save_checkpoint(path: Path, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                    step: int, extra: dict | None = None) -> None:
    """Write trainable tensors and their optimizer moments atomically (temp file, then rename)."""
    tensors = {f"param/{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    index = {id(p): k for k, p in params.items()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for sk, sv in state.items():
                if isinstance(sv, torch.Tensor):
                    tensors[f"optim/{index[id(p)]}/{sk}"] = sv.detach().cpu().reshape(sv.shape).contiguous()
    meta = {"step": str(step), "extra": json.dumps(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, path, metadata=meta)


def load_checkpoint(path: Path, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore weights and AdamW moments in place; returns (step, extra)."""
    from safetensors import safe_open

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise RgbaError(f"cannot read checkpoint {path}: {e}".splitlines()[0]) from None
    with torch.no_grad():
        for k, p in params.items():
            key = f"param/{k}"
            if key not in tensors:
                raise RgbaError(f"checkpoint {path} lacks {k}; was it written by another stage or config?")
            p.copy_(tensors[key])
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = next(k for k, q in params.items() if q is p)
            state = {sk.split("/")[-1]: v for sk, v in tensors.items() if sk.startswith(f"optim/{name}/")}
            if state:
                optimizer.state[p] = {k: (v.to(p.device) if k != "step" else v) for k, v in state.items()}
    return int(meta.get("step", 0)), json.loads(meta.get("extra", "{}"))


def trainable(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.nn.Parameter]:
    """Name → parameter for every parameter that requires grad."""
    return {prefix + k: p for k, p in module.named_parameters() if p.requires_grad}
