"""Wan-Alpha VAE losses and one training step.

L_vae = L_alpha + L_rgb^soft + L_rgb^hard, each = L1 + perceptual (VGG16 to relu2_2, MSE)
+ edge (Sobel gradients of grey, L1); soft/hard renders use random colours from COLORS.
Only the merge block and the two decoder LoRAs train; the Wan encoder/decoder stay frozen.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rgbacli.errors import WeightsError
from rgbacli.models.rgba_vae import hard_render, random_colors, soft_render
from rgbacli.weights.io import load_state_dict, load_strict


log = logging.getLogger(__name__)

# torchvision's vgg16().features indices up to relu2_2: conv, relu, conv, relu, pool, conv, relu, conv, relu
VGG_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128)}
VGG_KEYS = [f"features.{i}.{p}" for i in VGG_CONVS for p in ("weight", "bias")]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B,C,T,H,W) → (B·T,C,H,W)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


class VGG16Relu22(nn.Module):
    """The first 9 layers of torchvision's VGG16 `features` (to relu2_2), built without torchvision.
    State-dict keys: features.{0,2,5,7}.{weight,bias} (the layout of torchvision's checkpoint)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(9):
            if i in VGG_CONVS:
                layers.append(nn.Conv2d(*VGG_CONVS[i], 3, padding=1))
            elif i == 4:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path) -> "VGG16Relu22":
        """Load from a local .safetensors/.pth holding at least features.{0,2,5,7}.* (deeper layers ignored)."""
        sd = load_state_dict(Path(path))
        missing = [k for k in VGG_KEYS if k not in sd]
        if missing:
            raise WeightsError(f"VGG16 weights {path}: missing key {missing[0]!r}")
        deeper = [k for k in sd if not (k.startswith("features.") or k.startswith("classifier."))]
        if deeper:
            raise WeightsError(f"VGG16 weights {path}: unexpected key {deeper[0]!r}")
        m = cls()

        load_strict(m, {k: sd[k].float() for k in VGG_KEYS}, what=str(path))
        return m.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N,3,H,W) in [0,1]
        return self.features((x - self.mean.to(x)) / self.std.to(x))


class WanEncoderFeatures(nn.Module):
    """Fallback perceptual features: the frozen Wan encoder's conv_in + first block, frame by frame."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N,3,H,W) in [0,1]
        h = self.encoder.conv_in((x * 2 - 1).unsqueeze(2))
        h = self.encoder.down_blocks[0](h)
        return h.squeeze(2)


class PerceptualLoss(nn.Module):
    """MSE between feature maps of prediction and target, per frame. VGG16 (relu2_2) when a local
    weights file is given; otherwise the frozen Wan encoder's first features (logged)."""

    def __init__(self, vgg_path=None, vae=None):
        super().__init__()
        if vgg_path is not None:
            self.net, self.kind = VGG16Relu22.from_file(vgg_path), "vgg16_relu2_2"
        elif vae is not None:
            log.warning("no VGG16 weights given: the perceptual loss uses the frozen Wan encoder's first block")
            self.net, self.kind = WanEncoderFeatures(vae.base.encoder), "wan_encoder_block0"
        else:
            raise WeightsError("the perceptual loss needs VGG16 weights (a local file) or the VAE for its fallback")
        self.net.requires_grad_(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t = _frames(pred), _frames(target)
        if p.shape[1] == 1:
            p, t = p.expand(-1, 3, -1, -1), t.expand(-1, 3, -1, -1)
        with torch.no_grad():
            ft = self.net(t)
        return F.mse_loss(self.net(p), ft)


_FALLBACK_PERCEPTUAL: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradients (gx, gy) of the grey image, per frame: (B,C,T,H,W) → (B·T,2,H,W)."""
    f = _frames(x)
    if f.shape[1] == 3:
        f = 0.299 * f[:, :1] + 0.587 * f[:, 1:2] + 0.114 * f[:, 2:3]
    k = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(f)
    return F.conv2d(F.pad(f, (1, 1, 1, 1), mode="replicate"), k)


def edge_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel gradients of grey prediction and target."""
    return (sobel(pred) - sobel(target)).abs().mean()


def term_losses(pred, target, perceptual: PerceptualLoss) -> dict[str, torch.Tensor]:
    return {"l1": (pred - target).abs().mean(), "per": perceptual(pred, target), "edge": edge_loss(pred, target)}


def rgba_vae_losses(pred: torch.Tensor, target: torch.Tensor, perceptual: PerceptualLoss,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """All 9 terms and their sum ('loss') for predicted vs target straight RGBA (B,4,T,H,W) in [0,1]."""
    b = target.shape[0]
    c_soft = random_colors(b, generator, target.device).to(target.dtype)
    c_hard = random_colors(b, generator, target.device).to(target.dtype)
    parts = {
        "alpha": (pred[:, 3:4], target[:, 3:4]),
        "soft": (soft_render(pred, c_soft), soft_render(target, c_soft)),
        "hard": (hard_render(pred, c_hard), hard_render(target, c_hard)),
    }
    out: dict[str, torch.Tensor] = {}
    for name, (p, t) in parts.items():
        for term, v in term_losses(p, t, perceptual).items():
            out[f"{term}_{name}"] = v
    out["loss"] = sum(out.values())
    return out


def check_trainable(model) -> list[str]:
    """Names of parameters that require grad; raises if anything outside the merge block, the LoRAs
    (stages 3, 3b) or the fused RGB decoder copy (stage 3c) does: the encoder must never move."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    bad = [n for n in names
           if not (n.startswith(("merge.", "merged.rgb.")) or ".lora_A." in n or ".lora_B." in n)]
    if bad:
        raise RuntimeError(f"frozen parameter requires grad: {bad[0]}")
    return names


def vae_train_step(model, batch_rgba: torch.Tensor, optimizer: torch.optim.Optimizer,
                   generator: torch.Generator, perceptual: PerceptualLoss | None = None) -> dict[str, float]:
    """One optimiser step on a batch (B,4,T,H,W) of straight RGBA in [0,1]; returns the loss terms.

    Encoder render colour, soft colour and hard colour are all drawn from `generator`."""
    if model.merged is not None:
        raise RuntimeError("train the LoRA form: call unmerge() before training")
    check_trainable(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in trainable:
                raise RuntimeError("the optimizer holds a parameter that is frozen in the RGBA VAE")
    if perceptual is None:  # build the fallback once per model (not registered as a submodule)
        perceptual = _FALLBACK_PERCEPTUAL.get(model)
        if perceptual is None:
            perceptual = _FALLBACK_PERCEPTUAL[model] = PerceptualLoss(vae=model)
    optimizer.zero_grad(set_to_none=True)
    pred = model(batch_rgba, generator=generator)
    losses = rgba_vae_losses(pred, batch_rgba.to(pred.dtype), perceptual, generator)
    losses["loss"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}
