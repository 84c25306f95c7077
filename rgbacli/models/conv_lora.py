"""LoRA-ready causal convolutions for the Wan VAE decoder (used by rgba_vae.py).

diffusers' `WanCausalConv3d` pads inside its own `forward`, so a peft LoRA wrapped around it
would run its `lora_A` conv on the *unpadded* input. Wan-Alpha solved this by moving the
plain `nn.Conv3d` into a child called `conv3D` and padding in the parent; we do the same,
which also reproduces the reference key names (`...residual.2.conv3D.lora_A.default.weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d


class CausalConvForLora(nn.Module):
    """Same maths as `WanCausalConv3d` (causal time padding + feature-cache frames), but the
    convolution itself is a plain child `conv3D` that peft can wrap."""

    def __init__(self, conv: WanCausalConv3d):
        super().__init__()
        self.conv3D = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                                padding=0, bias=conv.bias is not None,
                                device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.conv3D.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.conv3D.bias.copy_(conv.bias)
        self._padding = tuple(conv._padding)

    def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        padding = list(self._padding)
        if cache_x is not None and self._padding[4] > 0:
            x = torch.cat([cache_x.to(x.device), x], dim=2)
            padding[4] -= cache_x.shape[2]
        return self.conv3D(F.pad(x, padding))


def wrap_causal_convs(module: nn.Module) -> int:
    """Replace every `WanCausalConv3d` under `module` by a `CausalConvForLora` in place; returns the count."""
    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, WanCausalConv3d)]
    for name, conv in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, CausalConvForLora(conv))
    return len(targets)


def conv_target_names(module: nn.Module) -> list[str]:
    """Names of every plain Conv2d/Conv3d under `module` (the LoRA targets: 'every conv of the decoder')."""
    return [name for name, m in module.named_modules() if type(m) in (nn.Conv2d, nn.Conv3d)]
