"""Safe state-dict loading: safetensors, or torch.load(weights_only=True); never arbitrary pickles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from rgbacli.errors import WeightsError
from rgbacli.fsutil import atomic_output


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


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A .safetensors file's bytes with its header in a fixed order (metadata keys sorted): the
    library writes metadata from a hash map whose order changes from run to run, so the same
    tensors and metadata would otherwise give different bytes."""
    import json

    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | dict(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the format keeps the data 8-byte aligned
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors (and string metadata) to `path` through a temporary sibling and a rename, so an
    interrupted save never leaves a truncated weights file where a good one was (callers decide
    beforehand whether `path` may be replaced). Same tensors and metadata → same bytes."""
    with atomic_output(path, force=True) as tmp:
        tmp.write_bytes(safetensors_bytes(tensors, metadata))
    return Path(path)


def is_safetensors(path: str | Path) -> bool:
    """Whether the file starts like a safetensors file (an 8-byte header length, then a JSON object
    that fits in the file): a pickle or any other format is recognised before parsing."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = Path(path).stat().st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


# ----------------------------------------------------------------------------- strict loading
def format_keys(keys, n: int = 3) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def check_state_dict(expected: Mapping[str, tuple | torch.Size], sd: Mapping[str, torch.Tensor], what: str,
                     hint: str = "") -> None:
    """The one strict key check: every expected key present, nothing else, every shape equal.
    Errors are one line: `{what}: unexpected key 'k'`, `missing key 'k'`, `key 'k' has shape …`;
    `hint` (e.g. "(LoRA rank 16)") is added to shape errors."""
    unexpected, missing = set(sd) - set(expected), set(expected) - set(sd)
    if unexpected:
        raise WeightsError(f"{what}: unexpected key {format_keys(unexpected)}")
    if missing:
        raise WeightsError(f"{what}: missing key {format_keys(missing)}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k]):
            raise WeightsError(f"{what}: key {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k])}"
                               + (f" {hint}" if hint else ""))


def load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str = "weights", assign: bool = False) -> None:
    """`module.load_state_dict(sd, strict=True)` after :func:`check_state_dict` (one-line errors)."""
    check_state_dict({k: v.shape for k, v in module.state_dict().items()}, sd, what)
    module.load_state_dict(dict(sd), strict=True, assign=assign)


def module_fingerprint(module: nn.Module, sample: int = 8) -> str:
    """A short hash of a model: every tensor's name, shape and dtype, and its first `sample` values
    (cheap even for a 14B model, and different for any two trainings or initialisations)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().flatten()[:sample].to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- adapter ↔ base fingerprints
BASE_KEY = "rgbacli_base"  # safetensors metadata key of the adapter files we write


def shape_fingerprint(module: nn.Module) -> str:
    """A short hash of a model's structure alone: every tensor's name and shape (no values, no dtype)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)};".encode())
    return h.hexdigest()[:16]


def base_fingerprint(module: nn.Module) -> dict[str, str]:
    """What an adapter file records about the base it was made on: shapes and weights."""
    return {"shapes": shape_fingerprint(module), "weights": module_fingerprint(module)}


def adapter_metadata(base: nn.Module | dict[str, str]) -> dict[str, str]:
    """safetensors metadata for an adapter file made on `base` (a module or its base_fingerprint)."""
    import json

    fp = base if isinstance(base, dict) else base_fingerprint(base)
    return {BASE_KEY: json.dumps(fp, sort_keys=True)}


def stored_base(path: str | Path) -> dict[str, str] | None:
    """The base fingerprint an adapter file carries; None for files without one (released files,
    torch pickles): those are checked by shape only, by their loaders."""
    import json

    if Path(path).suffix != ".safetensors":
        return None
    raw = read_metadata(path).get(BASE_KEY)
    if raw is None:
        return None
    try:
        fp = json.loads(raw)
    except ValueError:
        raise WeightsError(f"{path}: metadata '{BASE_KEY}' is not JSON") from None
    if not isinstance(fp, dict):
        raise WeightsError(f"{path}: metadata '{BASE_KEY}' is not a fingerprint")
    return fp


def check_adapter_base(path: str | Path, base: dict[str, str], where: str) -> None:
    """One line when an adapter file we wrote names another base: different shapes (another model),
    or the same shapes with different weights (another training or checkpoint of it)."""
    stored = stored_base(path)
    if stored is None:
        return
    if stored.get("shapes") != base["shapes"]:
        raise WeightsError(f"{where}: {path} was made for another base model (shapes fingerprint "
                           f"{stored.get('shapes')}, this base {base['shapes']})")
    if stored.get("weights") is not None and stored["weights"] != base["weights"]:
        raise WeightsError(f"{where}: {path} was trained on other base weights (fingerprint "
                           f"{stored['weights']}, this base {base['weights']}); use the base it was made on")
