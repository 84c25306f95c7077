"""Backends: how an alpha method turns DiT latents into RGBA frames.

The sampler never looks at the model: it asks the engine's backend to shape the noise
(:meth:`Backend.prepare_latents`), to call the DiT (:meth:`Backend.predict`) and to decode
(:meth:`Backend.decode`), as k-diffusion's samplers call a model wrapper. Family quirks
(CogVideoX's layout and 3-D RoPE) live in the model wrappers, not here.

| backend | latent the DiT samples | VAE |
|---|---|---|
| `wan-alpha` (Wan-Alpha) | one latent whose channels carry RGB and alpha | RGBA VAE: RGB + alpha decoders |
| `alpha-tokens` (TransPixar) | `[RGB ; alpha]` along frames, the alpha half from the same noise | the plain video VAE, twice |
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from rgbacli.errors import UsageError
from rgbacli.models.alpha_tokens import AlphaTokenTransformer
from rgbacli.models.rgba_vae import soft_render
from rgbacli.pipelines.params import Limits
from rgbacli.registry import Registry

BACKENDS: Registry[type["Backend"]] = Registry("backend")
KEYFRAME_CHUNK = 4  # the RGBA / Wan VAE encodes 1 + 4k frames


def keyframe_context(start: torch.Tensor, end: torch.Tensor, length: int, tail: int) -> torch.Tensor:
    """(B, 4, length, H, W): A, then a premultiplied crossfade to B, the last `tail` frames B itself."""
    w = torch.linspace(0, 1, max(2, length - tail + 1), device=start.device, dtype=start.dtype)
    w = torch.cat([w, w.new_ones(length - w.numel())]).view(1, 1, -1, 1, 1)
    a, b = start[:, :, None], end[:, :, None]
    alpha = (1 - w) * a[:, 3:] + w * b[:, 3:]
    pre = (1 - w) * a[:, :3] * a[:, 3:] + w * b[:, :3] * b[:, 3:]
    rgb = torch.where(alpha > 1e-6, pre / alpha.clamp(min=1e-6), torch.zeros_like(pre))
    return torch.cat([rgb.clamp(0, 1), alpha], dim=1)


class Backend:
    """One DiT + VAE pair as the sampler sees it. ``transformer`` or ``vae`` may be None where a
    caller needs only one side (training calls :meth:`predict` alone)."""

    name: ClassVar[str]
    vae_kind: ClassVar[str]  # "rgba": an RGBAVAE; "plain": a PlainVideoVAE (rgbacli/models/video_vae.py)
    copies: ClassVar[int] = 1  # frame-grid copies in the DiT's latent (2: [RGB ; alpha])

    def __init__(self, transformer: nn.Module | None, vae: nn.Module | None = None):
        self.transformer, self.vae = transformer, vae

    @classmethod
    def check_transformer(cls, model: nn.Module, where: str) -> None:
        """Refuse a transformer this backend cannot drive (one line naming the preset)."""

    # -- geometry
    @property
    def temporal_factor(self) -> int:
        return self.vae.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.vae.spatial_factor

    @property
    def latent_channels(self) -> int:
        return self.vae.latent_channels

    @property
    def patch_size(self) -> int:
        """Spatial patch of the DiT: sizes must be multiples of spatial_factor × this."""
        ps = self.transformer.config.get("patch_size", 2)
        return int(ps[-1] if isinstance(ps, (tuple, list)) else ps)

    def limits(self, preset: str = "") -> Limits:
        """What this DiT + VAE can sample: size multiples, and the largest token grid its absolute
        position table (`abs_pos`) or RoPE table (`rope_max_seq_len`) holds."""
        model = getattr(self.transformer, "base", self.transformer)  # alpha tokens wrap the DiT
        config = getattr(model, "config", {})
        ps = config.get("patch_size", 2)
        patch_t = int(ps[0]) if isinstance(ps, (tuple, list)) else int(config.get("patch_size_t") or 1)
        frames = rows = cols = None
        table = "position table"
        rope = config.get("rope_max_seq_len")
        if rope is not None:  # Wan: one RoPE row per token along each axis (both halves of [RGB ; alpha])
            frames, rows, cols = int(rope) // self.copies, int(rope), int(rope)
            table = "RoPE table"
        pos = getattr(model, "abs_pos", None)
        if pos is not None:
            f, r, c = pos.frame.shape[0], pos.row.shape[0], pos.col.shape[0]
            frames, rows, cols = (min(x, y) if y else x for x, y in ((f, frames), (r, rows), (c, cols)))
            table = "position table"
        return Limits(preset=preset, size_multiple=self.spatial_factor * self.patch_size,
                      temporal_factor=self.temporal_factor, patch_t=patch_t, max_latent_frames=frames,
                      max_rows=rows, max_cols=cols, table=table)

    # -- the three steps the sampler delegates
    def prepare_latents(self, noise: torch.Tensor) -> torch.Tensor:
        """Per-sample noise (B, C, t, h, w) → what the DiT samples."""
        return noise

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """One DiT forward: the flow-matching velocity (or the scheduler's target) for ``x``."""
        raise NotImplementedError

    def encode(self, rgba: torch.Tensor) -> torch.Tensor:
        """(B, 4, T, H, W) straight RGBA in [0, 1] → the normalised latents the DiT samples
        (`rgba encode`; decode() is its inverse)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, rgba: bool = True) -> torch.Tensor:
        """Final latents → (B, 4, T, H, W) straight RGBA in [0, 1] ((B, 3, …) RGB with ``rgba=False``)."""
        raise NotImplementedError

    def decode_alpha(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → (B, 1, T, H, W) alpha in [0, 1] alone (cheaper: the subject's mask while sampling)."""
        raise NotImplementedError

    def encode_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) RGB in [0, 1] → normalised latents of one frame grid (Tora's motion latents:
        the flow colours through the preset's VAE, RGB part)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_keyframes(self, start: torch.Tensor, end: torch.Tensor, frames: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Keyframes (B, 4, H, W) → their latents (B, C, copies, h, w) for the first and last latent
        frame of a clip of `frames` pixel frames.

        The VAE is causal both ways: latent frame 0 is pixel frame 0 alone (so A's latent is exact),
        but each later latent frame is encoded, and decoded, in the context of the frames before it.
        B's latent is therefore taken from the encode of a context clip: the premultiplied crossfade
        A → B over `frames` frames (rounded up to 4k+1), its last `temporal_factor` frames B. Decoded
        after an in-between clip, that latent gives back B about as well as the true clip's own last
        latent does; the latent of B held still (the clip [B, B, B, B, B]) does not (docs/interpolate.md)."""
        length = max(1 + KEYFRAME_CHUNK, 1 + KEYFRAME_CHUNK * -(-(frames - 1) // KEYFRAME_CHUNK))
        clip = keyframe_context(start, end, length, self.temporal_factor)
        z = self.encode(clip).unflatten(2, (self.copies, -1))  # (B, C, copies, t, h, w)
        return z[:, :, :, 0], z[:, :, :, -1]


@BACKENDS.register("wan-alpha")
class WanAlphaBackend(Backend):
    """Wan-Alpha: alpha lives in the RGB latent space; the RGBA VAE decodes it twice."""

    name, vae_kind = "wan-alpha", "rgba"

    def predict(self, x, timestep, text):
        return self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]

    def encode(self, rgba):
        return self.vae.encode(rgba)

    def decode(self, latents, rgba=True):
        return self.vae.decode(latents) if rgba else self.vae.decode_rgb_only(latents)

    def decode_alpha(self, latents):
        return self.vae.decode_alpha_only(latents)

    def encode_rgb(self, rgb):
        return self.vae.encode(torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1))  # opaque: the RGB alone


@BACKENDS.register("alpha-tokens")
class AlphaTokenBackend(Backend):
    """TransPixar: the latent holds ``[RGB ; alpha]``; the plain VAE decodes both halves and the alpha
    half becomes one channel (the max of its three, as the reference does)."""

    name, vae_kind, copies = "alpha-tokens", "plain", 2

    @classmethod
    def check_transformer(cls, model, where):
        if not isinstance(model, AlphaTokenTransformer):
            raise UsageError(f"{where} uses the alpha-tokens backend but names no alpha-tokens adapter file")

    def prepare_latents(self, noise):
        return torch.cat([noise, noise], dim=2)  # the alpha half starts from the same noise

    def predict(self, x, timestep, text):
        return self.transformer(x, timestep, text)

    def encode(self, rgba):
        """RGB over black (premultiplied) and alpha as grey, each through the plain VAE, in time order
        [RGB ; alpha] (the layout the alpha tokens were trained on)."""
        rgb, alpha = soft_render(rgba, "black"), rgba[:, 3:4].expand(-1, 3, -1, -1, -1)
        return torch.cat([self.vae.encode_rgb(rgb), self.vae.encode_rgb(alpha)], dim=2)

    def decode(self, latents, rgba=True):
        rgb = self.vae.decode_rgb(self.half(latents, 0))
        return torch.cat([rgb, self.decode_alpha(latents)], dim=1) if rgba else rgb

    def decode_alpha(self, latents):
        # TransPixar: alpha = the max of the alpha half's 3 decoded channels (in [0, 1])
        return self.vae.decode_rgb(self.half(latents, 1)).amax(dim=1, keepdim=True)

    def encode_rgb(self, rgb):
        return self.vae.encode_rgb(rgb)

    @staticmethod
    def half(latents: torch.Tensor, which: int) -> torch.Tensor:
        """The RGB (0) or alpha (1) half of `[RGB ; alpha]` latents (B, C, 2t, h, w)."""
        t = latents.shape[2] // 2
        return latents[:, :, t * which: t * (which + 1)]
