"""Tora: trajectory-controlled DiT (trajectory extractor + motion-guidance fusers), and the motion maps.

    path points (T, 2) per object ─ sparse_flow / dense_flow ─▶ displacement (T, 2, H, W)
        ─ flow_to_rgb (Middlebury wheel, clip max) ─▶ RGB (T, 3, H, W) in [0, 1]
        ─ the preset's VAE (RGB part) ─▶ motion latents (B, C, t, h, w)
        ─ TrajExtractor (PixelUnshuffle to the token grid → conv → residual blocks) ─▶ one map per block
        ─ MotionFuser on every block's self-attention input: h + GroupNorm(h)·γ + β

The fusers are :class:`~rgbacli.models.attention.Behaviour` s on the ``prepare`` hook of each block's
``attn1`` (the adaLN-modulated video tokens just before self-attention, as Tora does). The motion
latents reach them through the sampler's per-pass ``cond`` dict (key ``"motion"``); the extractor runs
once per DiT forward (cached in the context's ``memo``). The temporal convolutions that make γ and β
are zero-initialised, so a fresh adapter leaves the DiT's output exactly as it was.

Key layout (Tora's diffusers release): ``traj_extractor.conv_in.*``,
``traj_extractor.body.{k}.{block1,block2,bn1,bn2}.*`` (``nums_rb`` residual blocks per DiT block),
``fuser.{i}.{flow_gamma_spatial,flow_gamma_temporal,flow_beta_spatial,flow_beta_temporal,flow_cond_norm}.*``.

Sections: 2. motion maps (resampling: rgbacli/pipelines/trajectory_input.py) · 3. extractor · 4. fusers and the adapter · 5. loading.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rgbacli.models.attention import Attachment, AttnCall, Behaviour, attach, blocks_of, unwrap

__all__ = [
    "motion_sigma", "sparse_flow", "dense_flow", "flow_to_rgb", "COLORWHEEL",
    "TrajExtractor", "MotionFuser", "ToraAdapter", "attach_tora", "tora_state_dict_keys", "split_tora_keys",
]

MOTION_KEY = "motion"  # cond["motion"]: (B, C, t, h, w) motion latents
TORA_SIGMA, TORA_AREA = 10.0, 480 * 720  # Tora's Gaussian: σ 10 px at 480×720 (99×99 window)


# --------------------------------------------------------------------------- 2. motion maps


def motion_sigma(height: int, width: int, spatial_factor: int = 1) -> float:
    """The splat's σ in pixels: Tora's 10 px at 480×720 scaled by √(area ratio), and never below one
    latent cell (``spatial_factor`` px) so that the splat survives the VAE's downsampling."""
    return max(TORA_SIGMA * math.sqrt(height * width / TORA_AREA), float(spatial_factor))


def _gaussian_1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(4.9 * sigma)))  # Tora: 99×99 at σ 10
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    return torch.exp(-0.5 * (x / sigma) ** 2)  # centre 1 (not normalised to sum 1)


def sparse_flow(tracks: Sequence[torch.Tensor], height: int, width: int, sigma: float) -> torch.Tensor:
    """Displacement maps (T, 2, H, W) of point tracks (each (T, 2), x/y in output pixels).

    Frame 0 is zero; at frame i+1 the pixel nearest point i holds p_{i+1} − p_i; every frame is then
    filtered by an isotropic Gaussian of ``sigma`` whose centre weight is 1 (Tora). Where splats of
    two points overlap, their filtered displacements add."""
    frames = int(tracks[0].shape[0])
    flow = torch.zeros(frames, 2, height, width)
    for track in tracks:
        track = torch.as_tensor(track, dtype=torch.float32)
        for i in range(frames - 1):
            x, y = int(round(float(track[i, 0]))), int(round(float(track[i, 1])))
            if 0 <= x < width and 0 <= y < height:
                flow[i + 1, :, y, x] += track[i + 1] - track[i]
    g = _gaussian_1d(sigma)
    r = g.numel() // 2
    x = flow.reshape(frames * 2, 1, height, width)
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r)), g.view(1, 1, -1, 1))
    return x.reshape(frames, 2, height, width)


def dense_flow(masks: torch.Tensor, tracks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Dense displacement (T, 2, H, W) of rigidly translating objects: frame i+1 holds p_{i+1} − p_i on
    every pixel of the object's mask at frame i (masks (N, T, H, W), tracks (N, T, 2)); later objects
    overwrite earlier ones where they overlap (they are drawn on top)."""
    masks, tracks = torch.as_tensor(masks), torch.as_tensor(tracks, dtype=torch.float32)
    n, frames, height, width = masks.shape
    flow = torch.zeros(frames, 2, height, width)
    for k in range(n):
        d = tracks[k, 1:] - tracks[k, :-1]  # (T-1, 2)
        on = masks[k, :-1] > threshold  # (T-1, H, W)
        flow[1:] = torch.where(on[:, None], d[:, :, None, None].expand(-1, -1, height, width), flow[1:])
    return flow


def _make_colorwheel() -> torch.Tensor:
    """The Middlebury colour wheel (55 colours, 0–255), as torchvision's ``flow_to_image`` uses it."""
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    wheel = torch.zeros(ry + yg + gc + cb + bm + mr, 3)
    col = 0

    def ramp(n):
        return torch.floor(255 * torch.arange(n, dtype=torch.float32) / n)

    wheel[col:col + ry, 0], wheel[col:col + ry, 1] = 255, ramp(ry)
    col += ry
    wheel[col:col + yg, 0], wheel[col:col + yg, 1] = 255 - ramp(yg), 255
    col += yg
    wheel[col:col + gc, 1], wheel[col:col + gc, 2] = 255, ramp(gc)
    col += gc
    wheel[col:col + cb, 1], wheel[col:col + cb, 2] = 255 - ramp(cb), 255
    col += cb
    wheel[col:col + bm, 2], wheel[col:col + bm, 0] = 255, ramp(bm)
    col += bm
    wheel[col:col + mr, 2], wheel[col:col + mr, 0] = 255 - ramp(mr), 255
    return wheel


COLORWHEEL = _make_colorwheel()


def flow_to_rgb(flow: torch.Tensor) -> torch.Tensor:
    """Displacement (T, 2, H, W) → RGB (T, 3, H, W) in [0, 1] by the Middlebury wheel, normalised by the
    largest displacement norm of the whole clip (torchvision's ``flow_to_image`` on the clip as one
    batch, before its uint8 rounding). Zero displacement is white."""
    flow = flow.float()
    max_norm = flow.pow(2).sum(dim=1).sqrt().max()
    flow = flow / (max_norm + torch.finfo(torch.float32).eps)
    u, v = flow[:, 0], flow[:, 1]
    rad = (u ** 2 + v ** 2).sqrt()
    a = torch.atan2(-v, -u) / math.pi
    n = COLORWHEEL.shape[0]
    fk = (a + 1) / 2 * (n - 1)
    k0 = torch.floor(fk).long()
    k1 = k0 + 1
    k1[k1 == n] = 0
    f = (fk - k0)[:, None]
    col0, col1 = COLORWHEEL[k0].permute(0, 3, 1, 2) / 255, COLORWHEEL[k1].permute(0, 3, 1, 2) / 255
    col = (1 - f) * col0 + f * col1
    rad = rad[:, None]
    return torch.where(rad <= 1, 1 - rad * (1 - col), col * 0.75)


# --------------------------------------------------------------------------- 3. extractor


class ResnetBlock(nn.Module):
    """Two 3×3 convs with batch norms and a ReLU, added to the input (no downsampling)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.block2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        h = F.relu(self.bn1(self.block1(x)))
        return x + self.bn2(self.block2(h))


class TrajExtractor(nn.Module):
    """Motion latents (B, C, t, h, w) → one map (B·t, channels, h/p, w/p) per DiT block.

    Per latent frame: PixelUnshuffle(p) to the DiT's token grid (p = its spatial patch) → 3×3 conv to
    ``channels`` → ``nums_rb`` residual blocks per DiT block, each block's map taken after its stage."""

    def __init__(self, latent_channels: int, patch: int, num_blocks: int, channels: int = 128, nums_rb: int = 2):
        super().__init__()
        self.patch, self.num_blocks, self.nums_rb = patch, num_blocks, nums_rb
        self.unshuffle = nn.PixelUnshuffle(patch)
        self.conv_in = nn.Conv2d(latent_channels * patch * patch, channels, 3, 1, 1)
        self.body = nn.ModuleList(ResnetBlock(channels) for _ in range(num_blocks * nums_rb))

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        b, c, t, h, w = z.shape
        x = self.conv_in(self.unshuffle(z.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)))
        out = []
        for i in range(self.num_blocks):
            for j in range(self.nums_rb):
                x = self.body[i * self.nums_rb + j](x)
            out.append(x)
        return out


# --------------------------------------------------------------------------- 4. fusers and the adapter


class MotionFuser(nn.Module, Behaviour):
    """Adaptive-norm motion guidance on one block: ``h ← h + GroupNorm(h)·γ + β``.

    γ and β each: a 3×3 conv (``in_channels`` → width/4) per frame, then a temporal Conv1d (k 3,
    replicate padding, zero-initialised) to the DiT width, per token. ``h`` is the video tokens
    (B, copies·t·s, width); under alpha tokens both copies of a frame get the same γ/β."""

    def __init__(self, adapter: "ToraAdapter", block: int, in_channels: int, width: int, groups: int = 32):
        nn.Module.__init__(self)
        self.block = block
        object.__setattr__(self, "_adapter", adapter)  # not a submodule: the adapter owns the fusers
        mid = width // 4
        self.flow_gamma_spatial = nn.Conv2d(in_channels, mid, 3, padding=1)
        self.flow_gamma_temporal = nn.Conv1d(mid, width, 3, padding=1, padding_mode="replicate")
        self.flow_beta_spatial = nn.Conv2d(in_channels, mid, 3, padding=1)
        self.flow_beta_temporal = nn.Conv1d(mid, width, 3, padding=1, padding_mode="replicate")
        self.flow_cond_norm = nn.GroupNorm(groups, width)
        for conv in (self.flow_gamma_temporal, self.flow_beta_temporal):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def _modulation(self, feature: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature (B·t, C, h, w) → γ, β (B, t·h·w, width)."""
        bt, _, h, w = feature.shape
        b = bt // frames

        def one(spatial, temporal):
            x = spatial(feature)  # (B·t, mid, h, w)
            x = x.view(b, frames, -1, h, w).permute(0, 3, 4, 2, 1).reshape(b * h * w, -1, frames)
            x = temporal(x)  # (B·h·w, width, t)
            return x.view(b, h, w, -1, frames).permute(0, 4, 1, 2, 3).reshape(b, frames * h * w, -1)

        return one(self.flow_gamma_spatial, self.flow_gamma_temporal), one(self.flow_beta_spatial, self.flow_beta_temporal)

    def fuse(self, h: torch.Tensor, feature: torch.Tensor, frames: int, copies: int = 1) -> torch.Tensor:
        gamma, beta = self._modulation(feature.to(self.flow_gamma_spatial.weight.dtype), frames)
        if copies > 1:
            gamma, beta = gamma.repeat(1, copies, 1), beta.repeat(1, copies, 1)
        if gamma.shape[:2] != h.shape[:2]:
            raise ValueError(f"motion features for {tuple(gamma.shape[:2])} tokens do not fit the video tokens "
                             f"{tuple(h.shape[:2])} (motion latents of another size or frame count?)")
        norm = self.flow_cond_norm  # in float32 whatever the DiT's dtype (Tora's FloatGroupNorm)
        normed = F.group_norm(h.transpose(1, 2).float(), norm.num_groups, norm.weight.float(), norm.bias.float(),
                              norm.eps).transpose(1, 2)
        return (h.float() + normed * gamma.float() + beta.float()).to(h.dtype)

    def prepare(self, call: AttnCall, hidden_states: torch.Tensor) -> torch.Tensor:
        features = self._adapter.features(call)
        if features is None:
            return hidden_states
        layout = call.context.layout
        fused = self.fuse(hidden_states, features[self.block], layout.frames, layout.copies)
        off = call.context.values.get("trajectory_off")  # (B,) the trajectory-guidance passes without it
        if off is None or not bool(off.any()):
            return fused
        return torch.where(off.to(fused.device).view(-1, 1, 1), hidden_states, fused)


class ToraAdapter(nn.Module):
    """Tora's trainable part: ``traj_extractor`` and one ``fuser`` per DiT block (Tora's key names).

    :meth:`features` reads ``context.values["cond"]["motion"]`` (absent: no motion, the DiT unchanged)
    and runs the extractor once per forward."""

    def __init__(self, latent_channels: int, patch: int, num_blocks: int, width: int, channels: int = 128,
                 nums_rb: int = 2, groups: int = 32):
        super().__init__()
        self.config = dict(latent_channels=latent_channels, patch=patch, num_blocks=num_blocks, width=width,
                           channels=channels, nums_rb=nums_rb, groups=groups)
        self.traj_extractor = TrajExtractor(latent_channels, patch, num_blocks, channels, nums_rb)
        self.fuser = nn.ModuleList(MotionFuser(self, i, channels, width, groups) for i in range(num_blocks))

    def features(self, call: AttnCall) -> list[torch.Tensor] | None:
        ctx = call.context
        motion = (ctx.values.get("cond") or {}).get(MOTION_KEY)
        if motion is None:
            return None
        key = ("tora", id(self))
        if key not in ctx.memo:
            weight = self.traj_extractor.conv_in.weight
            ctx.memo[key] = self.traj_extractor(motion.to(weight.device, weight.dtype))
        return ctx.memo[key]


def _dit_geometry(model: nn.Module) -> tuple[int, int, int]:
    """(patch, number of blocks, width) of a Wan or CogVideoX DiT."""
    base = unwrap(model)
    cfg = base.config
    ps = cfg.get("patch_size", 2)
    patch = int(ps[-1] if isinstance(ps, (tuple, list)) else ps)
    width = int(cfg.num_attention_heads * cfg.attention_head_dim)
    return patch, len(blocks_of(base)), width


def attach_tora(model: nn.Module, latent_channels: int, channels: int = 128, nums_rb: int = 2,
                groups: int | None = None) -> tuple[ToraAdapter, Attachment]:
    """Build a zero-initialised adapter for ``model``'s geometry and attach its fusers openly to every
    block's self-attention (``prepare`` hook); the adapter is kept as ``model.tora`` on the DiT (its
    parameters then move and cast with the model)."""
    patch, num_blocks, width = _dit_geometry(model)
    groups = groups or math.gcd(32, width)  # Tora: 32 groups
    adapter = ToraAdapter(latent_channels, patch, num_blocks, width, channels, nums_rb, groups)
    attachment = attach(model, lambda i: adapter.fuser[i], role="attn1")
    unwrap(model).tora = adapter
    return adapter, attachment


# --------------------------------------------------------------------------- 5. loading


PREFIXES = ("traj_extractor.", "fuser.")


def split_tora_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Tora keys of a state dict (a full Tora transformer file also holds the base DiT's keys);
    a leading ``transformer.`` is allowed; BatchNorm's ``num_batches_tracked`` is optional."""
    out = {}
    for k, v in sd.items():
        k = k[len("transformer."):] if k.startswith("transformer.") else k
        if k.startswith(PREFIXES):
            out[k] = v
    return out


def read_tora_keys(path: Path) -> dict[str, torch.Tensor]:
    """The Tora keys of one weights file or of a folder of ``.safetensors`` shards (a full Tora
    transformer): safetensors files are read key by key, so the base DiT's tensors are never loaded."""
    from safetensors import safe_open

    from rgbacli.errors import WeightsError
    from rgbacli.weights.io import load_state_dict

    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise WeightsError(f"{path} holds no .safetensors files")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix != ".safetensors":
            out.update(split_tora_keys(load_state_dict(f)))
            continue
        try:
            with safe_open(str(f), framework="pt") as handle:
                for k in handle.keys():
                    name = k[len("transformer."):] if k.startswith("transformer.") else k
                    if name.startswith(PREFIXES):
                        out[name] = handle.get_tensor(k)
        except Exception as e:
            raise WeightsError(f"cannot read weights file {f}: {e}".splitlines()[0]) from None
    return out


def tora_state_dict_keys(adapter: ToraAdapter) -> dict[str, tuple]:
    """Expected key → shape, without the optional ``num_batches_tracked`` counters."""
    return {k: tuple(v.shape) for k, v in adapter.state_dict().items() if not k.endswith("num_batches_tracked")}


def infer_config(sd: dict[str, torch.Tensor]) -> dict:
    """channels, nums_rb and groups from a Tora state dict (for :func:`attach_tora`)."""
    conv_in = sd.get("traj_extractor.conv_in.weight")
    if conv_in is None:
        raise KeyError("traj_extractor.conv_in.weight")
    body = {int(k.split(".")[2]) for k in sd if k.startswith("traj_extractor.body.")}
    fusers = {int(k.split(".")[1]) for k in sd if k.startswith("fuser.")}
    nums_rb = (max(body) + 1) // max(1, len(fusers)) if body and fusers else 2
    return {"channels": int(conv_in.shape[0]), "in_channels": int(conv_in.shape[1]), "nums_rb": max(1, nums_rb),
            "num_fusers": len(fusers)}


def save_tora(adapter: ToraAdapter, path: Path) -> None:
    """Our tiny adapter file: Tora's key layout, the config as metadata."""
    import json

    from rgbacli.weights.io import save_safetensors

    save_safetensors(adapter.state_dict(), path, metadata={"tora_config": json.dumps(adapter.config)})
