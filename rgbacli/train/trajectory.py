"""The trajectory stage (Tora): only the extractor and the motion fusers train, on the frozen base.

Data: path clips (rgbacli/data/paths.py: still objects moved along random lines, arcs and zig-zags,
captions without motion words) and plain procedural clips, whose exact centre tracks and masks we
have. Each clip is encoded once: its RGBA latent, a *dense* motion latent (every pixel of an object
holds its displacement) and a *sparse* one (1–3 points per object, Gaussian splats). Tora's two
stages: the first `dense_steps` updates on dense motion, then sparse motion (a few dense still mixed in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from rgbacli.data import make_clip
from rgbacli.data.paths import path_clip
from rgbacli.errors import RgbaError
from rgbacli.models.tora import MOTION_KEY, ToraAdapter, dense_flow, flow_to_rgb, motion_sigma, sparse_flow
from rgbacli.train.base_vae import object_weights
from rgbacli.train.flow import noisy_input, sample_timesteps
from rgbacli.train.latents import latent_object_mask
from rgbacli.train.loop import LoopConfig, run_loop
from rgbacli.weights.io import save_safetensors


@dataclass
class TrajectoryTrainConfig(LoopConfig):
    minutes: float = 40.0
    lr: float = 1e-3
    decay: float = 0.1
    warmup: int = 50
    ckpt_every: int = 100
    batch: int = 8
    dense_steps: int = 300  # Tora's stage 1 (dense flow), then sparse points
    p_dense_after: float = 0.1
    p_uncond: float = 0.1
    t_shift: float = 3.0
    object_weight: float = 10.0


def motion_rgb(flows: list[torch.Tensor]) -> torch.Tensor:
    """Displacement maps [(T, 2, H, W)] → (B, 3, T, H, W) flow colours in [0, 1]."""
    return torch.stack([flow_to_rgb(f).permute(1, 0, 2, 3) for f in flows])


def sparse_points(track: np.ndarray, mask: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The centre track and k−1 more points inside the object at frame 0, moving rigidly with it."""
    out = [track]
    ys, xs = np.nonzero(mask[0] > 0.5)
    for _ in range(k - 1):
        if len(xs) == 0:
            break
        j = int(rng.integers(len(xs)))
        out.append(track + (np.array([xs[j], ys[j]], np.float32) - track[0]))
    return out


@dataclass
class TrajectorySet:
    latents: torch.Tensor  # (N, C, t, h, w)
    dense: torch.Tensor  # (N, C, t, h, w) motion latents
    sparse: torch.Tensor
    masks: torch.Tensor  # (N, 1, t, h, w) object cells
    captions: list[str]
    tracks: list[list]  # per clip, per object: (T, 2) centre track

    def save(self, path: Path) -> None:
        save_safetensors({"latents": self.latents, "dense": self.dense, "sparse": self.sparse,
                          "masks": self.masks.half()}, path,
                         metadata={"captions": json.dumps(self.captions), "tracks": json.dumps(self.tracks)})

    @classmethod
    def load(cls, path: Path) -> "TrajectorySet":
        from safetensors import safe_open

        try:
            t = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            return cls(t["latents"], t["dense"], t["sparse"], t["masks"].float(), json.loads(meta["captions"]),
                       json.loads(meta["tracks"]))
        except Exception as e:
            raise RgbaError(f"cannot read trajectory cache {path} ({type(e).__name__}): delete it to encode it again")


@torch.no_grad()
def encode_trajectory_set(encode_rgba, encode_rgb, n: int, *, seed0: int, size: int, frames: int, spatial_factor: int,
                          p_path: float = 0.8, batch: int = 16, progress=None) -> TrajectorySet:
    """n clips (a `p_path` share of path clips, the rest procedural), each encoded as an RGBA latent and
    as dense and sparse motion latents (`encode_rgb` (B, 3, T, H, W) in [0, 1] → latents)."""
    rng = np.random.default_rng(seed0)
    sigma = motion_sigma(size, size, spatial_factor)
    lat, dense, sparse, masks, caps, tracks = [], [], [], [], [], []
    for start in range(0, n, batch):
        samples = []
        for i in range(start, min(n, start + batch)):
            samples.append(path_clip(seed0 + i, size, frames) if rng.random() < p_path else make_clip(seed0 + i, size, frames))
        rgba = torch.from_numpy(np.stack([s.rgba for s in samples])).permute(0, 4, 1, 2, 3).float()
        z = encode_rgba(rgba)
        lat.append(z)
        masks.append(latent_object_mask(rgba[:, 3:], z.shape[2:]))
        d_flows, s_flows = [], []
        for s in samples:
            d_flows.append(dense_flow(torch.from_numpy(s.masks), torch.from_numpy(s.track)))
            pts = []
            for k in range(len(s.objects)):
                pts += sparse_points(s.track[k], s.masks[k], int(rng.choice([1, 1, 1, 2, 3])), rng)
            s_flows.append(sparse_flow([torch.from_numpy(p) for p in pts], size, size, sigma))
        dense.append(encode_rgb(motion_rgb(d_flows)))
        sparse.append(encode_rgb(motion_rgb(s_flows)))
        caps += [s.caption for s in samples]
        tracks += [s.track.tolist() for s in samples]
        if progress:
            progress(min(n, start + batch), n)
    return TrajectorySet(torch.cat(lat), torch.cat(dense), torch.cat(sparse), torch.cat(masks), caps, tracks)


def train_trajectory(backend, text_encoder, adapter: ToraAdapter, data: TrajectorySet, cfg: TrajectoryTrainConfig,
                     ckpt: Path, resume: bool = False, log=None) -> dict:
    """Rectified flow on the frozen DiT with motion latents in `cond`; only `adapter` trains."""
    from rgbacli.models.attention import context_of

    context = context_of(backend.transformer)
    params = {k: p for k, p in adapter.named_parameters()}
    for p in params.values():
        p.requires_grad_(True)
    adapter.train()
    n = len(data.captions)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        z, mask = data.latents[idx], data.masks[idx]
        p_dense = 1.0 if step < cfg.dense_steps else cfg.p_dense_after
        use_dense = (torch.rand(cfg.batch, generator=gen) < p_dense)[:, None, None, None, None]
        motion = torch.where(use_dense, data.dense[idx], data.sparse[idx])
        captions = [data.captions[i] for i in idx.tolist()]
        drop = torch.rand(cfg.batch, generator=gen) < cfg.p_uncond
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        t = sample_timesteps(cfg.batch, gen, cfg.t_shift)
        x_t, target = noisy_input(z, torch.randn(z.shape, generator=gen), t)
        with torch.no_grad():
            text = text_encoder.encode(captions, warn=False)[0]
        with context.use(cond={MOTION_KEY: motion}):
            pred = backend.predict(x_t, t * 1000, text)
        return (object_weights(mask, cfg.object_weight) * (pred.float() - target) ** 2).mean()

    try:
        return run_loop(params, loss_fn, cfg, ckpt, resume, log)
    finally:
        adapter.eval()


@torch.no_grad()
def eval_motion_loss(backend, text_encoder, data: TrajectorySet, n: int = 32, seed: int = 1234, t_shift: float = 3.0,
                     object_weight: float = 10.0) -> dict:
    """Object-weighted flow loss on the first n clips with fixed noise: with sparse motion, and without."""
    from rgbacli.models.attention import context_of

    gen = torch.Generator().manual_seed(seed)
    z, mask = data.latents[:n], data.masks[:n]
    t = sample_timesteps(z.shape[0], gen, t_shift)
    x_t, target = noisy_input(z, torch.randn(z.shape, generator=gen), t)
    text = text_encoder.encode(data.captions[:n], warn=False)[0]
    w = object_weights(mask, object_weight)
    out = {}
    for name, cond in (("with_motion", {MOTION_KEY: data.sparse[:n]}), ("without_motion", {})):
        with context_of(backend.transformer).use(cond=cond):
            pred = backend.predict(x_t, t * 1000, text)
        out[name] = float((w * (pred.float() - target) ** 2).mean())
    return out


__all__ = ["TrajectoryTrainConfig", "TrajectorySet", "encode_trajectory_set", "train_trajectory", "eval_motion_loss",
           "motion_rgb", "sparse_points"]

