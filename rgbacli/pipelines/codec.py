"""RGBA media ↔ latents files through the RGBA VAE (`rgba encode` / `rgba decode`).

A latents file is safetensors with one tensor `latents` (1, z, t, h, w), normalised, and metadata
naming the preset, fps, size and the true frame count: clips whose length is not 4k+1 are padded
by repeating the last frame before encoding, and decode trims back to the true count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rgbacli.errors import RgbaError, UsageError
from rgbacli.media import to_float


LATENTS_FORMAT = "rgbacli.latents/1"


def pad_frames(frames: np.ndarray, multiple: int = 4) -> np.ndarray:
    """Repeat the last frame until the count is k·multiple + 1 (what the causal VAE accepts)."""
    t = frames.shape[0]
    padded = 1 + -(-(t - 1) // multiple) * multiple if t > 1 else 1
    if padded == t:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], padded - t, axis=0)], axis=0)


def vae_backend(engine):
    """The preset's backend around its VAE alone (encode and decode need no DiT)."""
    return engine.backend_class(None, engine.component("vae"))


def encode_clip(engine, clip, progress=None) -> tuple[torch.Tensor, dict]:
    """Clip → (normalised latents (1, z, t, h, w), metadata) through the preset's backend: the RGBA
    VAE (wan-alpha), or `[RGB ; alpha]` from the plain VAE (alpha-tokens, t doubled)."""
    backend = vae_backend(engine)
    vae = backend.vae
    if getattr(vae, "encoder_ready", True) is False:
        raise RgbaError(f"preset '{engine.preset.name}' has decoder weights only; encoding needs the full "
                        "RGBA VAE (merge block), e.g. Wan-Alpha-VAE.bin")
    s = vae.spatial_factor
    if clip.width % s or clip.height % s:
        raise UsageError(f"frame size {clip.width}x{clip.height} is not a multiple of {s} for preset "
                         f"'{engine.preset.name}' (resize or crop the clip first)")
    frames = pad_frames(to_float(clip.frames))
    rgba = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None]
    with torch.no_grad(), engine.on_device(vae):
        z = backend.encode(rgba.to(engine.device))
    meta = {
        "format": LATENTS_FORMAT, "preset": engine.preset.name, "fps": float(clip.fps),
        "width": clip.width, "height": clip.height, "frames": clip.n_frames, "padded_frames": frames.shape[0],
        "normalization": "latents_mean/std of the preset's VAE (decode expects normalised latents)",
        "z_dim": int(z.shape[1]), "had_alpha": bool(clip.had_alpha),
    }
    return z.float().cpu(), meta


def save_latents(path: Path, z: torch.Tensor, meta: dict) -> None:
    """Write a latents file (header in a fixed order: same latents → same bytes)."""
    from rgbacli.weights.io import safetensors_bytes

    Path(path).write_bytes(safetensors_bytes({"latents": z}, {k: json.dumps(v) for k, v in sorted(meta.items())}))


def load_latents(path: str | Path) -> tuple[torch.Tensor, dict]:
    """Read a latents file, checking it is one of ours; corrupt files are a one-line error."""
    from safetensors import safe_open

    from rgbacli.weights.io import is_safetensors

    path = Path(path)
    if not path.is_file():
        raise RgbaError(f"latents file {path} does not exist")
    if not is_safetensors(path):
        raise RgbaError(f"{path} is not a safetensors file (latents files are made by `rgba encode`; "
                        "pickles are never loaded)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            z = f.get_tensor("latents") if "latents" in f.keys() else None
    except Exception as e:
        raise RgbaError(f"cannot read latents file {path}: {str(e).splitlines()[0]}") from None
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError:
        meta = {}
    if z is None or meta.get("format") != LATENTS_FORMAT:
        raise RgbaError(f"{path} is not an rgbacli latents file (made by `rgba encode`)")
    bad = int((~torch.isfinite(z)).sum())
    if bad:
        raise RgbaError(f"{path}: {bad} of {z.numel()} latent values are NaN or infinite; refusing to decode them")
    return z, meta


def check_latents(engine, z: torch.Tensor, meta: dict) -> None:
    """The latents must come from this preset and have the geometry its metadata claims."""
    backend = vae_backend(engine)
    vae = backend.vae
    if meta.get("preset") != engine.preset.name:
        raise UsageError(f"these latents were made with preset '{meta.get('preset')}', not "
                         f"'{engine.preset.name}' (pass --preset {meta.get('preset')})")
    expect_t = (1 + (int(meta["padded_frames"]) - 1) // vae.temporal_factor) * backend.copies
    expect = (1, vae.latent_channels, expect_t, meta["height"] // vae.spatial_factor,
              meta["width"] // vae.spatial_factor)
    if tuple(z.shape) != expect:
        raise RgbaError(f"latents have shape {tuple(z.shape)}, expected {expect} for a "
                        f"{meta['width']}x{meta['height']}x{meta['padded_frames']} clip of preset '{engine.preset.name}'")


def decode_latents(engine, z: torch.Tensor, meta: dict, progress=None) -> np.ndarray:
    """Latents → straight RGBA float frames (T, H, W, 4), trimmed to the true frame count."""
    backend = vae_backend(engine)
    vae = backend.vae
    chunks = []
    with torch.no_grad(), engine.on_device(vae):
        if hasattr(vae, "iter_decode"):  # the RGBA VAE streams frame by frame
            for i, frame in enumerate(vae.iter_decode(z.to(engine.device))):
                chunks.append(frame.float().cpu())
                if progress:
                    progress(i + 1, z.shape[2])
        else:
            chunks.append(backend.decode(z.to(engine.device)).float().cpu())
            if progress:
                progress(z.shape[2], z.shape[2])
    video = torch.cat(chunks, dim=2)[0, :, : int(meta["frames"])]
    return video.permute(1, 2, 3, 0).numpy()
