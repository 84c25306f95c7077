"""Device and dtype choice: auto = CUDA + bfloat16 when a GPU is present, else CPU + float32."""

from __future__ import annotations

import torch

from rgbacli.errors import UsageError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """Parse --device (auto|cpu|cuda|cuda:N); asking for CUDA on a machine without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device '{name}' (use auto, cpu, cuda or cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device '{name}' requested but no CUDA GPU is available (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Parse --dtype; auto = bfloat16 on CUDA, float32 on CPU (CPU half precision is slow)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UsageError(f"unknown dtype '{name}' (use auto, float32, bfloat16 or float16)")
    return DTYPES[name]
