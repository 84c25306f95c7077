"""Safe state-dict loading: safetensors, or torch.load(weights_only=True); never arbitrary pickles."""

from __future__ import annotations

from pathlib import Path

import torch

from rgbacli.errors import WeightsError


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat tensor dict from .safetensors or a torch file, with a one-line error if corrupt."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors/pickle raise many types for corrupt files
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weights file {path} does not hold a flat dict of tensors")
    return sd


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a .safetensors file (our own files keep their config there)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise WeightsError(f"cannot read weights file {path}: {e}".splitlines()[0]) from None


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors (and string metadata) to `path` through a temporary sibling and a rename, so an
    interrupted save never leaves a truncated weights file where a good one was (callers decide
    beforehand whether `path` may be replaced)."""
    from safetensors.torch import save_file

    from rgbacli.fsutil import atomic_output

    with atomic_output(path, force=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)
