"""`rgba train smp`: the semantic motion predictor on a FROZEN base (DiT, VAE, text encoder).

Each procedural (or user) clip gives its first and last frames as the keyframes A and B. The
predictor turns them into per-latent-frame embeddings that the DiT's extra cross-attention reads;
the loss is the DiT's own rectified-flow loss (object-weighted, as the base stages), on the inner
latent frames: at sampling the first and last are pinned to the keyframes' latents
(`Backend.encode_keyframes`), which match the clip's own first and last latent frames.
Captions are often left out or lose their motion words: the predictor, not the text, must carry
where things go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rgbacli.backends import Backend
from rgbacli.data import FolderDataset, ProceduralDataset
from rgbacli.data.captions import leave_out
from rgbacli.errors import RgbaError
from rgbacli.seeding import seeded
from rgbacli.models.attention import context_of
from rgbacli.models.semantic_motion import COND_KEY, SemanticMotionPredictor, SMPConfig, attach_smp, dit_sizes
from rgbacli.train.base_vae import object_weights
from rgbacli.train.flow import noisy_input, sample_timesteps
from rgbacli.train.latents import latent_object_mask
from rgbacli.train.loop import LoopConfig, run_loop
from rgbacli.weights.io import save_safetensors

SMP_SEED_BASE = 300_000  # train-split seeds of the SMP's clips (the DiT stages drew from 0 and 50 000)


@dataclass
class SMPTrainConfig(LoopConfig):
    minutes: float = 35.0
    steps: int = 100_000
    lr: float = 1e-3
    warmup: int = 50
    decay: float = 0.1
    ckpt_every: int = 100
    batch: int = 8
    p_empty: float = 0.4  # no caption at all
    p_no_motion: float = 0.4  # the caption without its motion words
    t_shift: float = 3.0
    object_weight: float = 10.0


@dataclass
class KeyframeSet:
    """Latents (N, C, t, h, w), object masks on the latent grid, keyframes (N, 2, 4, H, W) uint8, captions."""

    latents: torch.Tensor
    masks: torch.Tensor
    keyframes: torch.Tensor
    captions: list[str]
    source: str = "procedural"

    def save(self, path: Path) -> None:
        save_safetensors({"latents": self.latents, "masks": self.masks.half(), "keyframes": self.keyframes}, path,
                         metadata={"captions": json.dumps(self.captions), "source": self.source})

    @classmethod
    def load(cls, path: Path) -> "KeyframeSet":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            return cls(t["latents"], t["masks"].float(), t["keyframes"], json.loads(meta["captions"]),
                       meta.get("source", "procedural"))
        except Exception as e:
            raise RgbaError(f"cannot read keyframe cache {path} ({type(e).__name__}): delete it to encode it again")

    def keyframe_tensors(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.keyframes[idx].float() / 255.0
        return k[:, 0], k[:, 1]


def pin_keyframes(z: torch.Tensor, z_start: torch.Tensor, z_end: torch.Tensor, copies: int = 1) -> torch.Tensor:
    """``z`` (B, C, copies·t, h, w) with each copy's first and last latent frame set to the keyframe
    latents (B, C, copies, h, w)."""
    z = z.clone()
    v = z.unflatten(2, (copies, -1))
    v[:, :, :, 0] = z_start
    v[:, :, :, -1] = z_end
    return v.flatten(2, 3)


def inner_frames(t: int, copies: int = 1, device=None) -> torch.Tensor:
    """(copies·t,) 1.0 on every copy's inner latent frames, 0.0 on the pinned first and last."""
    w = torch.ones(copies, t, device=device)
    w[:, 0] = w[:, -1] = 0
    return w.flatten()


@torch.no_grad()
def encode_keyframe_set(backend: Backend, ds, n: int, batch: int = 8, progress=None, source: str = "procedural"):
    zs, masks, keys, caps = [], [], [], []
    for start in range(0, n, batch):
        samples = [ds[i] for i in range(start, min(n, start + batch))]
        rgba = torch.from_numpy(np.stack([s.rgba for s in samples])).permute(0, 4, 1, 2, 3).float()
        z = backend.encode(rgba)  # the clip's own latents: its first and last frames are its keyframes'
        zs.append(z)
        masks.append(latent_object_mask(rgba[:, 3:], z.shape[2:], backend.copies))
        keys.append((torch.stack([rgba[:, :, 0], rgba[:, :, -1]], 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8))
        caps += [s.caption for s in samples]
        if progress:
            progress(min(n, start + batch), n)
    return KeyframeSet(torch.cat(zs), torch.cat(masks), torch.cat(keys), caps, source)


def keyframe_cache(path: Path, backend: Backend, clips: int, size: int, frames: int, folder: str | None = None,
                   log=None) -> KeyframeSet:
    """The stage's cache (encoded once; again when its source changed)."""
    source = f"folder:{Path(folder).resolve()}" if folder else "procedural"
    if path.exists():
        data = KeyframeSet.load(path)
        if data.source == source:
            return data
    ds = (FolderDataset(folder, size=size, frames=frames) if folder
          else ProceduralDataset(split="train", size=size, frames=frames, base=SMP_SEED_BASE))
    progress = (lambda i, n: log(i, n, None, "encode keyframe latents")) if log else None  # noqa: E731
    data = encode_keyframe_set(backend, ds, min(clips, len(ds)), progress=progress, source=source)
    data.save(path)
    return data


def _caption(caption: str, cfg: SMPTrainConfig, gen: torch.Generator) -> str:
    u = float(torch.rand(1, generator=gen))
    if u < cfg.p_empty:
        return ""
    if u < cfg.p_empty + cfg.p_no_motion:
        return leave_out(caption, ["motion"])
    return caption


def smp_loss(backend: Backend, text_encoder, smp: SemanticMotionPredictor, data: KeyframeSet, idx: torch.Tensor,
             t: torch.Tensor, noise: torch.Tensor, captions: list[str], object_weight: float) -> torch.Tensor:
    """The DiT's flow loss with the predictor's embeddings as `cond`, on the inner latent frames."""
    z, mask = data.latents[idx], data.masks[idx]
    x_t, target = noisy_input(z, noise, t)
    start, end = data.keyframe_tensors(idx)
    frames = z.shape[2] // backend.copies
    emb = smp.embed(start, end, frames)
    text = text_encoder.encode(captions, warn=False)[0]
    with context_of(backend.transformer).use(cond={COND_KEY: emb}):
        pred = backend.predict(x_t, t * 1000, text)
    w = inner_frames(frames, backend.copies).view(1, 1, -1, 1, 1)
    if object_weight:
        w = w * object_weights(mask, object_weight)
    return (w * (pred.float() - target) ** 2).sum() / (w.expand_as(target).sum())


def train_smp(backend: Backend, text_encoder, smp: SemanticMotionPredictor, data: KeyframeSet, cfg: SMPTrainConfig,
              ckpt: Path, resume: bool = False, log=None) -> dict:
    """Optimise the predictor (encoder, transformer, extra projections); everything else frozen."""
    backend.transformer.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
    smp.requires_grad_(True).train()
    params = smp.trainable_parameters()
    attachment = attach_smp(backend.transformer, smp)
    n = len(data.captions)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        captions = [_caption(data.captions[i], cfg, gen) for i in idx.tolist()]
        t = sample_timesteps(cfg.batch, gen, cfg.t_shift)
        noise = torch.randn(data.latents[idx].shape, generator=gen)
        return smp_loss(backend, text_encoder, smp, data, idx, t, noise, captions, cfg.object_weight)

    try:
        return run_loop(params, loss_fn, cfg, ckpt, resume, log)
    finally:
        attachment.remove()
        smp.eval().requires_grad_(False)


@torch.no_grad()
def eval_smp_loss(backend: Backend, text_encoder, smp: SemanticMotionPredictor | None, data: KeyframeSet,
                  n: int = 32, seed: int = 4321, object_weight: float = 10.0, t_shift: float = 3.0) -> float:
    """The loss on the first n clips with fixed noise, timesteps and motion-free captions; `smp=None`
    measures the base DiT alone (what the zero-initialised predictor starts from)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.arange(min(n, len(data.captions)))
    t = sample_timesteps(len(idx), gen, t_shift)
    noise = torch.randn(data.latents[idx].shape, generator=gen)
    captions = [leave_out(data.captions[i], ["motion"]) for i in idx.tolist()]
    if smp is None:
        smp = SemanticMotionPredictor(SMPConfig(**dit_sizes(backend.transformer)))  # zero output: the base
    attachment = attach_smp(backend.transformer, smp)
    try:
        return smp_loss(backend, text_encoder, smp.eval(), data, idx, t, noise, captions, object_weight).item()
    finally:
        attachment.remove()


NEW_QUERY_POS = 4  # fresh predictors are position-aware (ExtraCrossAttention's query_pos)


def new_smp(transformer, **overrides) -> SemanticMotionPredictor:
    """A fresh tiny predictor sized for `transformer` (zero-initialised outputs), seeded."""
    with seeded(int(overrides.pop("seed", 0))):
        return SemanticMotionPredictor(SMPConfig(**{**dit_sizes(transformer), "query_pos": NEW_QUERY_POS,
                                                    **overrides}))


def stage_smp(run: Path, minutes: float, resume: bool, clips: int, log, folder: str | None = None,
              base: str | None = None, steps: int | None = None) -> dict:
    """Train the tiny SMP on the frozen tiny model (the package's weights, or `base`'s folder) →
    `run/smp.safetensors`."""
    from rgbacli.engine import Engine
    from rgbacli.models.semantic_motion import save_smp
    from rgbacli.train import tiny_config as tc

    engine = Engine("tiny", device="cpu", dtype="float32", weights_dir=base)
    backend, text = engine.backend, engine.component("text_encoder")
    data = keyframe_cache(run / "smp_latents.safetensors", backend, clips, tc.TINY_SIZE, tc.TINY_FRAMES, folder, log)
    smp = new_smp(backend.transformer)
    cfg = SMPTrainConfig(minutes=minutes, **({"steps": steps} if steps else {}))
    before = eval_smp_loss(backend, text, None, data)
    result = train_smp(backend, text, smp, data, cfg, run / "smp.ckpt.safetensors", resume, log)
    result.update(eval_loss_before=before, eval_loss=eval_smp_loss(backend, text, smp, data), clips=len(data.captions))
    save_smp(smp, run / "smp.safetensors")
    return result
