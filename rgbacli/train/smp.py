"""`rgba train smp`: the semantic motion predictor on a FROZEN base (DiT, VAE, text encoder).

Each procedural (or user) clip gives its first and last frames as the keyframes A and B. The
predictor turns them into per-latent-frame embeddings that the DiT's extra cross-attention reads;
the loss is the DiT's own rectified-flow loss (object-weighted, as the base stages), on the inner
latent frames: at sampling the first and last are pinned to the keyframes' latents
(`Backend.encode_keyframes`), which match the clip's own first and last latent frames.
Captions are often left out or lose their motion words: the predictor, not the text, must carry
where things go.

Guided samples (`guided`, 80 % of each batch by default) are drawn where `rgba interpolate` really
samples: it starts from the keyframes' motion guide noised to the level after the guide's steps, so
the DiT never sees the clip's own latents there, only the guide's, and only at the lower noise levels.
Those samples take the noise levels of the sampler's steps after the guide, and the clean latents of
the path an exact sampler would take from the noised guide to the clip (the guide's share falls with
the noise-to-signal ratio); the target is the velocity that leads to the clip. The others are the
plain flow loss on the clip's own latents (what `--guide 0` samples from).
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
from rgbacli.pipelines.interpolate import DEFAULT_GUIDE, FIRST_ORDER, guide_latents
from rgbacli.pipelines.schedulers import make_scheduler
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
    guided: float = 0.8  # share of each batch drawn from the noised motion guide (docs/interpolate.md: 0.5 / 0.8 / 1.0)
    guided_levels: tuple[float, ...] = ()  # noise levels of the sampler's steps after the guide (first = its start)


@dataclass
class KeyframeSet:
    """Latents (N, C, t, h, w), object masks on the latent grid, keyframes (N, 2, 4, H, W) uint8, captions,
    and the latents of each clip's motion guide (N, C, t, h, w; None in a cache from before them)."""

    latents: torch.Tensor
    masks: torch.Tensor
    keyframes: torch.Tensor
    captions: list[str]
    source: str = "procedural"
    guides: torch.Tensor | None = None

    def save(self, path: Path) -> None:
        tensors = {"latents": self.latents, "masks": self.masks.half(), "keyframes": self.keyframes}
        if self.guides is not None:
            tensors["guides"] = self.guides
        save_safetensors(tensors, path, metadata={"captions": json.dumps(self.captions), "source": self.source})

    @classmethod
    def load(cls, path: Path) -> "KeyframeSet":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            return cls(t["latents"], t["masks"].float(), t["keyframes"], json.loads(meta["captions"]),
                       meta.get("source", "procedural"), t.get("guides"))
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
def encode_guides(backend: Backend, keyframes: torch.Tensor, latent_frames: int, batch: int = 8,
                  progress=None) -> torch.Tensor:
    """Keyframes (N, 2, 4, H, W) uint8 → their motion guides' latents (N, C, copies·latent_frames, h, w),
    as `rgba interpolate` encodes them (from the 8-bit keyframes a user's files hold)."""
    frames = 1 + backend.temporal_factor * (latent_frames - 1)
    out = []
    for i in range(0, len(keyframes), batch):
        k = keyframes[i:i + batch].float() / 255.0
        out.append(guide_latents(backend, k[:, 0], k[:, 1], frames, latent_frames))
        if progress:
            progress(min(len(keyframes), i + batch), len(keyframes))
    return torch.cat(out)


@torch.no_grad()
def encode_keyframe_set(backend: Backend, ds, n: int, batch: int = 8, progress=None, source: str = "procedural",
                        guide_progress=None):
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
    latents, keys = torch.cat(zs), torch.cat(keys)
    guides = encode_guides(backend, keys, latents.shape[2] // backend.copies, batch, guide_progress)
    return KeyframeSet(latents, torch.cat(masks), keys, caps, source, guides)


def keyframe_cache(path: Path, backend: Backend, clips: int, size: int, frames: int, folder: str | None = None,
                   log=None) -> KeyframeSet:
    """The stage's cache (encoded once; again when its source changed)."""
    source = f"folder:{Path(folder).resolve()}" if folder else "procedural"
    progress = (lambda i, n: log(i, n, None, "encode keyframe latents")) if log else None  # noqa: E731
    guide_progress = (lambda i, n: log(i, n, None, "encode motion guides")) if log else None  # noqa: E731
    if path.exists():
        data = KeyframeSet.load(path)
        if data.source == source:
            if data.guides is None:  # a cache from before the guided samples: add its guides' latents
                data.guides = encode_guides(backend, data.keyframes, data.latents.shape[2] // backend.copies,
                                            progress=guide_progress)
                data.save(path)
            return data
    ds = (FolderDataset(folder, size=size, frames=frames) if folder
          else ProceduralDataset(split="train", size=size, frames=frames, base=SMP_SEED_BASE))
    data = encode_keyframe_set(backend, ds, min(clips, len(ds)), progress=progress, source=source,
                               guide_progress=guide_progress)
    data.save(path)
    return data


def _caption(caption: str, cfg: SMPTrainConfig, gen: torch.Generator) -> str:
    u = float(torch.rand(1, generator=gen))
    if u < cfg.p_empty:
        return ""
    if u < cfg.p_empty + cfg.p_no_motion:
        return leave_out(caption, ["motion"])
    return caption


def guided_levels(steps: int, shift: float, solver: str = "unipc", guide: float = DEFAULT_GUIDE) -> tuple[float, ...]:
    """The noise levels at which `rgba interpolate` runs the DiT with `guide` (its first-order solver):
    the first is the level the noised guide starts from."""
    scheduler = make_scheduler(FIRST_ORDER.get(solver, solver), shift)
    scheduler.set_timesteps(steps)
    return tuple(float(s) for s in scheduler.sigmas[round(guide * steps):steps])


def guide_share(t: torch.Tensor, start: float) -> torch.Tensor:
    """How much of the guide an exact sampler started at level `start` from the noised guide still holds
    at level t: its clean-latent estimate moves to the clip in proportion to the noise-to-signal ratio
    t / (1 − t), so the share is that ratio over the start's (1 at the start, → 0 at the end)."""
    return ((t / (1 - t)) / (start / (1 - start))).clamp(0, 1)


def guided_input(z: torch.Tensor, z_guide: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, mu: torch.Tensor,
                 copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's latents moved `mu` (B,) of the way to its motion guide's on the inner frames (the
    pinned first and last stay the clip's, as the pins hold them), noised to t; the target is the
    velocity from there to the clip, (x_t − z) / t. At mu 0 it is :func:`noisy_input` exactly."""
    inner = inner_frames(z.shape[2] // copies, copies).view(1, 1, -1, 1, 1)
    d = mu.view(-1, 1, 1, 1, 1) * inner * (z_guide - z)  # (B, C, t, h, w); 0 on the pinned frames
    tt = t.view(-1, 1, 1, 1, 1)
    return tt * noise + (1 - tt) * (z + d), noise - z + (1 - tt) / tt * d


def smp_loss(backend: Backend, text_encoder, smp: SemanticMotionPredictor, data: KeyframeSet, idx: torch.Tensor,
             t: torch.Tensor, noise: torch.Tensor, captions: list[str], object_weight: float,
             mu: torch.Tensor | None = None) -> torch.Tensor:
    """The DiT's flow loss with the predictor's embeddings as `cond`, on the inner latent frames; with
    `mu` (B,), the samples start that share of the way to the motion guide (:func:`guided_input`)."""
    z, mask = data.latents[idx], data.masks[idx]
    if mu is None:
        x_t, target = noisy_input(z, noise, t)
    else:
        x_t, target = guided_input(z, data.guides[idx], noise, t, mu, backend.copies)
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

    guided = cfg.guided > 0 and bool(cfg.guided_levels)
    if guided and data.guides is None:
        raise RgbaError("guided SMP samples need the keyframe set's motion guides (encode_keyframe_set makes them)")
    levels = torch.tensor(cfg.guided_levels, dtype=torch.float32)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        captions = [_caption(data.captions[i], cfg, gen) for i in idx.tolist()]
        t = sample_timesteps(cfg.batch, gen, cfg.t_shift)
        noise = torch.randn(data.latents[idx].shape, generator=gen)
        mu = None
        if guided:  # these samples sit where the sampler of `rgba interpolate` does
            on = torch.rand(cfg.batch, generator=gen) < cfg.guided
            t = torch.where(on, levels[torch.randint(0, len(levels), (cfg.batch,), generator=gen)], t)
            mu = torch.where(on, guide_share(t, cfg.guided_levels[0]), torch.zeros_like(t))
        return smp_loss(backend, text_encoder, smp, data, idx, t, noise, captions, cfg.object_weight, mu)

    try:
        return run_loop(params, loss_fn, cfg, ckpt, resume, log)
    finally:
        attachment.remove()
        smp.eval().requires_grad_(False)


@torch.no_grad()
def eval_smp_loss(backend: Backend, text_encoder, smp: SemanticMotionPredictor | None, data: KeyframeSet,
                  n: int = 32, seed: int = 4321, object_weight: float = 10.0, t_shift: float = 3.0,
                  levels: tuple[float, ...] = ()) -> float:
    """The loss on the first n clips with fixed noise, timesteps and motion-free captions; `smp=None`
    measures the base DiT alone (what the zero-initialised predictor starts from). With `levels`
    (:func:`guided_levels`), every sample is a guided one at those levels in turn."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.arange(min(n, len(data.captions)))
    t = sample_timesteps(len(idx), gen, t_shift)
    noise = torch.randn(data.latents[idx].shape, generator=gen)
    mu = None
    if levels:
        t = torch.tensor(levels, dtype=torch.float32)[torch.arange(len(idx)) % len(levels)]
        mu = guide_share(t, levels[0])
    captions = [leave_out(data.captions[i], ["motion"]) for i in idx.tolist()]
    if smp is None:
        smp = SemanticMotionPredictor(SMPConfig(**dit_sizes(backend.transformer)))  # zero output: the base
    attachment = attach_smp(backend.transformer, smp)
    try:
        return smp_loss(backend, text_encoder, smp.eval(), data, idx, t, noise, captions, object_weight, mu).item()
    finally:
        attachment.remove()


HELDOUT_EVAL_BASE = 5_000  # held-out seeds for the stage's figures, away from those benchmarks/interpolate.py draws first


def heldout_keyframe_set(backend: Backend, size: int, frames: int, n: int = 32) -> KeyframeSet:
    """Procedural clips never drawn in training, encoded as the stage's cache is (its figures' held-out half)."""
    return encode_keyframe_set(backend, ProceduralDataset("heldout", size=size, frames=frames, base=HELDOUT_EVAL_BASE), n)


NEW_QUERY_POS = 4  # fresh predictors are position-aware (ExtraCrossAttention's query_pos)


def new_smp(transformer, **overrides) -> SemanticMotionPredictor:
    """A fresh tiny predictor sized for `transformer` (zero-initialised outputs), seeded."""
    with seeded(int(overrides.pop("seed", 0))):
        return SemanticMotionPredictor(SMPConfig(**{**dit_sizes(transformer), "query_pos": NEW_QUERY_POS,
                                                    **overrides}))


def stage_smp(run: Path, minutes: float, resume: bool, clips: int, log, folder: str | None = None,
              base: str | None = None, steps: int | None = None, guided: float = SMPTrainConfig.guided) -> dict:
    """Train the tiny SMP on the frozen tiny model (the package's weights, or `base`'s folder) →
    `run/smp.safetensors`; `guided` of each batch where `rgba interpolate` samples (the preset's steps,
    shift and solver, the default guide)."""
    from rgbacli.engine import Engine
    from rgbacli.models.semantic_motion import save_smp
    from rgbacli.train import tiny_config as tc

    engine = Engine("tiny", device="cpu", dtype="float32", weights_dir=base)
    backend, text = engine.backend, engine.component("text_encoder")
    data = keyframe_cache(run / "smp_latents.safetensors", backend, clips, tc.TINY_SIZE, tc.TINY_FRAMES, folder, log)
    smp = new_smp(backend.transformer)
    sampling = engine.preset.sampling
    levels = guided_levels(int(sampling["steps"]), float(sampling["shift"]), str(sampling["solver"]))
    cfg = SMPTrainConfig(minutes=minutes, guided=guided, guided_levels=levels, **({"steps": steps} if steps else {}))
    heldout = heldout_keyframe_set(backend, tc.TINY_SIZE, tc.TINY_FRAMES) if folder is None else None
    figures = {}

    def evaluate(name: str, predictor) -> None:  # plain and guided losses, on training and held-out clips
        for part, clips_set in (("", data), ("heldout_", heldout)):
            if clips_set is not None:
                figures[f"eval_{part}loss{name}"] = eval_smp_loss(backend, text, predictor, clips_set)
                figures[f"eval_{part}guided_loss{name}"] = eval_smp_loss(backend, text, predictor, clips_set,
                                                                         levels=levels)

    evaluate("_before", None)
    result = train_smp(backend, text, smp, data, cfg, run / "smp.ckpt.safetensors", resume, log)
    evaluate("", smp)
    result.update(figures, guided=guided, clips=len(data.captions))
    save_smp(smp, run / "smp.safetensors")
    return result
