"""The tiny-model recipe, stage by stage, each reading and writing files in one run folder.

1. base-vae   base AutoencoderKLWan on RGB renders            → base_vae.safetensors
2. base-dit   text encoder + WanTransformer3DModel, RGB latents → text_encoder / transformer.safetensors
3. rgba-vae   merge block + RGB/alpha decoder LoRAs (Wan-Alpha) → vae.safetensors
3b. rgba-decoders  the two LoRAs only, merge block frozen         → vae.safetensors
3c. rgb-decoder    the fused RGB decoder copy only, whole clips   → vae.safetensors (merged decoders)
4. dora       DoRA on the DiT over RGBA latents, motion-free    → dora.safetensors (Wan-Alpha layout)
4b. alpha-tokens  TransPixar alpha tokens on the base DiT          → alpha_tokens.safetensors
5. trajectory Tora extractor + motion fusers on the frozen DiT    → trajectory.safetensors
`export` copies the shipped files into the package (rgbacli/weights/tiny/).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from rgbacli.backends import AlphaTokenBackend, WanAlphaBackend
from rgbacli.console import info, warn
from rgbacli.data import FolderDataset
from rgbacli.errors import OutputExistsError, RgbaError
from rgbacli.evaluation import vae_reconstruction
from rgbacli.fsutil import atomic_output
from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights
from rgbacli.models.dora import add_dora_adapter, export_dora_state_dict, save_adapter
from rgbacli.models.latent_norm import LatentNorm
from rgbacli.models.position_embedding import attach_position_embedding
from rgbacli.models.rgba_vae import RGBAVAE, soft_render
from rgbacli.models.text_encoder import TinyTextEncoder, vocab_for
from rgbacli.models.text_mask import enable_text_mask
from rgbacli.train import tiny_config as tc
from rgbacli.train.base_vae import (BaseVAEConfig, latent_stats, new_base_vae, object_psnr, train_base_vae, uniform_colour_error)
from rgbacli.train.clips import ClipSource
from rgbacli.train.dit import DiTTrainConfig, eval_loss, train_dit
from rgbacli.train.latents import encode_clips, encode_procedural, LatentSet, probe_latent
from rgbacli.train.rgba_vae_stage import RGBAVAEConfig, train_rgba_vae
from rgbacli.train.vae_losses import PerceptualLoss
from rgbacli.weights.io import base_fingerprint
from rgbacli.weights.own import load_model, save_model


# Share of DiT training captions with some attributes left out, in stages 4 and 4b (people type "a
# bubble"); stage 2 trains on full captions. Why and what was measured: docs/training.md.
P_SHORT = 0.2

# The DiT stages weigh the flow loss on latent cells that show an object 1 + this (train/dit.py):
# objects cover a few % of the frame. Measured: docs/training.md ("object weight").
OBJECT_WEIGHT = 10.0


def _dit_config(minutes: float, p_short: float = P_SHORT, object_weight: float = OBJECT_WEIGHT):
    """Every DiT stage of the recipe: time-bound, lr 1e-3 with the cosine, object-weighted loss."""
    return DiTTrainConfig(minutes=minutes, steps=100_000, lr=1e-3, p_short=p_short, object_weight=object_weight)

SHIPPED = ("text_encoder.safetensors", "transformer.safetensors", "dora.safetensors", "vae.safetensors",
           "base_vae.safetensors", "alpha_tokens.safetensors", "trajectory.safetensors")
OPTIONAL_SHIPPED = ("smp.safetensors",)  # stage 6 (the motion predictor): exported when the run has it

# Each stage's checkpoint and the files it creates (rgba-decoders and rgb-decoder update vae.safetensors).
STAGE_FILES = {
    "base-vae": ("base_vae.ckpt.safetensors", ("base_vae.safetensors",)),
    "base-dit": ("base_dit.ckpt.safetensors", ("text_encoder.safetensors", "transformer.safetensors")),
    "rgba-vae": ("rgba_vae.ckpt.safetensors", ("vae.safetensors",)),
    "rgba-decoders": ("rgba_decoders.ckpt.safetensors", ()),
    "rgb-decoder": ("rgb_decoder.ckpt.safetensors", ()),
    "dora": ("dora.ckpt.safetensors", ("dora.safetensors",)),
    "alpha-tokens": ("alpha_tokens.ckpt.safetensors", ("alpha_tokens.safetensors",)),
    "trajectory": ("trajectory.ckpt.safetensors", ("trajectory.safetensors",)),
    "smp": ("smp.ckpt.safetensors", ("smp.safetensors",)),
}
MADE_BY = {name: stage for stage, (_, outs) in STAGE_FILES.items() for name in outs}


def check_stage(run: Path, stage: str, resume: bool, force: bool) -> None:
    """Before a stage starts: `--resume` needs its checkpoint; without `--resume` or `--force` a run
    folder where the stage already ran (its checkpoint or outputs exist) is refused, not clobbered."""
    ckpt, outputs = STAGE_FILES[stage]
    if resume:
        if not (run / ckpt).exists():
            raise RgbaError(f"{run / ckpt} does not exist: nothing to resume (run `rgba train {stage}` "
                            "without --resume to start the stage)")
        return
    existing = [run / name for name in (ckpt, *outputs) if (run / name).exists()]
    if existing and not force:
        raise OutputExistsError(f"{existing[0]} already exists: {stage} has run in {run} (pass --resume to "
                                "continue it, or --force to train it again from the start)")


def _need(run: Path, name: str, stage: str | None = None) -> Path:
    path = run / name
    if not path.exists():
        raise RgbaError(f"{path} is missing: run `rgba train {stage or MADE_BY[name]} --out {run}` first")
    return path


def load_base_vae(path: Path):
    from diffusers import AutoencoderKLWan

    return load_model(AutoencoderKLWan, path)


def new_transformer():
    from diffusers import WanTransformer3DModel

    dit = WanTransformer3DModel(**tc.TINY_DIT)
    attach_position_embedding(dit, **tc.TINY_POS, init_std=tc.TINY_POS_INIT_STD)
    if tc.TEXT_MASK:
        enable_text_mask(dit)
    return dit


# ----------------------------------------------------------------------------- latent caches
def _cached(path: Path, make_encoder, clips: int, seed0: int, what: str, log, mask_copies: int = 1,
            folder: str | None = None):
    """The DiT stages train on latents encoded once; `rgba train latents` builds a cache ahead of
    its stage (e.g. while another stage still trains). A cache is encoded again when its clips came
    from elsewhere (procedural vs `--data`) or its encoder has changed since (the latent of a fixed
    probe clip differs), so a stage never trains on latents of another VAE."""
    source = f"folder:{Path(folder).resolve()}" if folder else "procedural"
    encode = None
    if path.exists():
        data = LatentSet.load(path)
        stale = None
        if (data.source or "procedural") != source:
            stale = f"it was encoded from {data.source or 'procedural'} clips, not {source}"
        elif data.probe is not None:
            encode = make_encoder()
            probe = probe_latent(encode, tc.TINY_SIZE, tc.TINY_FRAMES)
            if probe.shape != data.probe.shape or not torch.allclose(probe, data.probe, atol=1e-4, rtol=1e-3):
                stale = "its VAE encoder has changed since"
        if stale is None:
            if len(data.captions) != clips and not folder:
                warn(f"{path} holds {len(data.captions)} clips, not {clips}: using it as it is (delete it to re-encode)")
            return data
        info(f"{path}: encoding it again ({stale})")
    encode = encode or make_encoder()
    progress = lambda i, n: log(i, n, None, f"encode {what} latents")  # noqa: E731
    if folder:
        ds = FolderDataset(folder, size=tc.TINY_SIZE, frames=tc.TINY_FRAMES, fps=tc.TINY_FPS, seed=seed0)
        data = encode_clips(encode, ds, min(clips, len(ds)), seed=seed0, frames=tc.TINY_FRAMES, progress=progress,
                            mask_copies=mask_copies)
        data.source = source
    else:
        data = encode_procedural(encode, clips, seed0=seed0, size=tc.TINY_SIZE, frames=tc.TINY_FRAMES,
                                 progress=progress, mask_copies=mask_copies)
    data.probe = probe_latent(encode, tc.TINY_SIZE, tc.TINY_FRAMES)
    data.save(path)
    return data


def rgb_latents(run: Path, clips: int, log, folder: str | None = None):
    """Stage 2's data: clips soft-rendered over black through the base VAE."""
    return _cached(run / "rgb_latents.safetensors",
                   lambda: _encoder_rgb(load_base_vae(_need(run, "base_vae.safetensors"))),
                   clips, 0, "RGB", log, folder=folder)


def rgba_latents(run: Path, clips: int, log, folder: str | None = None):
    """Stage 4's data: RGBA clips through the RGBA VAE (stage 3)."""
    def make():
        vae = RGBAVAE.load(_need(run, "vae.safetensors")).eval()
        return lambda x: vae.encode(x)

    return _cached(run / "rgba_latents.safetensors", make, clips, 50_000, "RGBA", log, folder=folder)


def alpha_token_latents(run: Path, clips: int, log, folder: str | None = None):
    """Stage 4b's data: the same clip twice through the plain base VAE, its RGB over black, then
    its alpha as grey, concatenated in time."""
    def make():
        vae = load_base_vae(_need(run, "base_vae.safetensors"))
        norm = LatentNorm.of_wan(vae.config)

        def encode(x):
            rgb = vae.encode(soft_render(x, "black") * 2 - 1).latent_dist.mode()
            alpha = vae.encode(x[:, 3:4].expand(-1, 3, -1, -1, -1) * 2 - 1).latent_dist.mode()
            return norm.normalize(torch.cat([rgb, alpha], dim=2))

        return encode

    return _cached(run / "alpha_token_latents.safetensors", make, clips, 100_000, "RGB+alpha", log, mask_copies=2,
                   folder=folder)


def _warn_unknown_words(text, captions: list[str]) -> None:
    """Caption words the frozen text encoder cannot read (user clips): said once, not every step."""
    unknown: dict[str, None] = {}
    for caption in captions:
        unknown.update(dict.fromkeys(text.tokenizer.tokenize(caption)[1]))
    if unknown:
        words = list(unknown)
        more = f" and {len(words) - 12} more" if len(words) > 12 else ""
        warn("caption words outside the text encoder's vocabulary (set by base-dit) are ignored: "
             + ", ".join(words[:12]) + more)


def _need_masks(data, path: Path) -> None:
    """The object-weighted stages need the masks that caches made before them lack."""
    if data.masks is None:
        raise RgbaError(f"{path} was encoded without object masks (older rgbacli): "
                        "delete it so that this stage encodes it again")


LATENT_CACHES = {"base-dit": rgb_latents, "dora": rgba_latents, "alpha-tokens": alpha_token_latents}


# ----------------------------------------------------------------------------- stages
def stage_base_vae(run: Path, minutes: float, resume: bool, folder: str | None, log) -> dict:

    vae = new_base_vae(tc.TINY_VAE)
    source = ClipSource(tc.TINY_SIZE, tc.TINY_FRAMES, folder)
    result = train_base_vae(vae, source, BaseVAEConfig(minutes=minutes), run / "base_vae.ckpt.safetensors",
                            resume, log)
    result.update(uniform_colour_error=uniform_colour_error(vae), object_psnr_db=object_psnr(vae))

    mean, std = latent_stats(lambda x: vae.encode(soft_render(x, "black") * 2 - 1).latent_dist.mode(), source)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    save_model(vae, run / "base_vae.safetensors")
    return result


def _encoder_rgb(vae):
    """RGB latents for the base DiT: the clip soft-rendered over black, normalised by the base stats."""
    norm = LatentNorm.of_wan(vae.config)
    return lambda x: norm.normalize(vae.encode(soft_render(x, "black") * 2 - 1).latent_dist.mode())


def stage_base_dit(run: Path, minutes: float, resume: bool, clips: int, log, folder: str | None = None) -> dict:
    """Stage 2. On user clips (`folder`) the text encoder's vocabulary grows by the words of their captions."""
    data = rgb_latents(run, clips, log, folder)
    _need_masks(data, run / "rgb_latents.safetensors")
    text = TinyTextEncoder(vocab=vocab_for(data.captions) if folder else None, **tc.TINY_TEXT)
    dit = new_transformer()
    params = {**{f"dit.{k}": p for k, p in dit.named_parameters()},
              **{f"text.{k}": p for k, p in text.named_parameters()}}
    backend = WanAlphaBackend(dit)
    before = eval_loss(backend, text, data)
    result = train_dit(backend, text, data, params, _dit_config(minutes, p_short=0.0),
                       run / "base_dit.ckpt.safetensors", resume, log)
    result.update(eval_loss_before=before, eval_loss=eval_loss(backend, text, data))
    text.save(run / "text_encoder.safetensors")
    save_model(dit, run / "transformer.safetensors", abs_pos=tc.TINY_POS, text_mask=hasattr(dit, "text_mask"))
    return result


def _perceptual(model, vgg: str | None):
    """The paper's VGG16 (relu2_2) perceptual loss from a local weights file, or the frozen-encoder fallback."""
    return PerceptualLoss(vgg_path=vgg, vae=model)


def stage_rgba_vae(run: Path, minutes: float, resume: bool, folder: str | None, log, vgg: str | None = None,
                   eval_clips: int = 8) -> dict:
    base = load_base_vae(_need(run, "base_vae.safetensors"))
    model = RGBAVAE(base, lora_rank=tc.TINY_VAE_LORA["rank"], lora_alpha=tc.TINY_VAE_LORA["alpha"])
    model.init_merge_from_encoder_head()  # start in the base latent space (overwritten on --resume)
    source = ClipSource(tc.TINY_SIZE, tc.TINY_FRAMES, folder, seed=1)
    perceptual = _perceptual(model, vgg)
    result = train_rgba_vae(model, source, RGBAVAEConfig(minutes=minutes), run / "rgba_vae.ckpt.safetensors",
                            resume, log, perceptual)
    result.update(perceptual=perceptual.kind, alpha_iou=vae_reconstruction(model.eval(), eval_clips)["alpha_iou"])
    # Normalise the RGBA latent by its own statistics (measured on training clips), in the one place
    # the model keeps them: the base config's latents_mean/std.
    mean, std = latent_stats(lambda x: model.denormalize(model.encode(x)), source)
    model.set_latent_stats(mean, std)
    model.save(run / "vae.safetensors")
    return result


def stage_rgba_decoders(run: Path, minutes: float, resume: bool, folder: str | None, log,
                        vgg: str | None = None, eval_clips: int = 8) -> dict:
    """Stage 3 continued, decoders only: more steps on the RGB/alpha LoRAs with the merge block (and so
    the latent space) frozen. The latent caches and DiT stages built on vae.safetensors stay valid,
    so this can run beside or after stage 4."""
    path = _need(run, "vae.safetensors")
    model = RGBAVAE.load(path)
    if not model.has_lora:
        raise RgbaError(f"{path} has merged decoders (rgb-decoder ran on it): rgba-decoders trains the LoRA "
                        "form, so run it before rgb-decoder")
    model.freeze_base()
    model.merge.requires_grad_(False)
    before = vae_reconstruction(model.eval(), eval_clips)["alpha_iou"]
    source = ClipSource(tc.TINY_SIZE, tc.TINY_FRAMES, folder, seed=2)
    perceptual = _perceptual(model, vgg)
    result = train_rgba_vae(model, source, RGBAVAEConfig(minutes=minutes), run / "rgba_decoders.ckpt.safetensors",
                            resume, log, perceptual)
    result.update(perceptual=perceptual.kind, alpha_iou_before=before,
                  alpha_iou=vae_reconstruction(model.eval(), eval_clips)["alpha_iou"])
    model.save(path)
    return result


def stage_rgb_decoder(run: Path, minutes: float, resume: bool, folder: str | None, log, vgg: str | None = None,
                      eval_clips: int = 8) -> dict:
    """Stage 3c: the two adapters fused into their own decoder copies, then the RGB copy alone trained,
    every weight of it, on whole clips. The shorter VAE windows leave frames past the 9th in the wrong
    hue; the encoder, merge block and alpha decoder stay as they are, so the latent space, every DiT
    stage and the generated alpha stay valid (docs/training.md)."""
    path = _need(run, "vae.safetensors")
    model = RGBAVAE.load(path)
    if model.merged is None:
        model.merge_lora(drop_lora=True)
    model.requires_grad_(False)
    model.merged["rgb"].requires_grad_(True)
    before = vae_reconstruction(model.eval(), eval_clips)["rgb_psnr_opaque_db"]
    source = ClipSource(tc.TINY_SIZE, tc.TINY_FRAMES, folder, seed=3)
    cfg = RGBAVAEConfig(minutes=minutes, window=tc.TINY_FRAMES, batch=2)
    perceptual = _perceptual(model, vgg)
    result = train_rgba_vae(model, source, cfg, run / "rgb_decoder.ckpt.safetensors", resume, log, perceptual)
    result.update(perceptual=perceptual.kind, rgb_psnr_opaque_db_before=before,
                  rgb_psnr_opaque_db=vae_reconstruction(model.eval(), eval_clips)["rgb_psnr_opaque_db"])
    model.save(path)
    return result


def stage_dora(run: Path, minutes: float, resume: bool, clips: int, log, folder: str | None = None) -> dict:
    data = rgba_latents(run, clips, log, folder)
    _need_masks(data, run / "rgba_latents.safetensors")
    from diffusers import WanTransformer3DModel

    text = TinyTextEncoder.load(_need(run, "text_encoder.safetensors")).requires_grad_(False)
    _warn_unknown_words(text, data.captions)
    dit = load_model(WanTransformer3DModel, _need(run, "transformer.safetensors"))
    dit.requires_grad_(False)
    base = base_fingerprint(dit)  # recorded in dora.safetensors, checked when a preset loads it
    add_dora_adapter(dit, rank=tc.TINY_DORA["rank"], alpha=tc.TINY_DORA["alpha"])
    params = {k: p for k, p in dit.named_parameters() if p.requires_grad}
    backend = WanAlphaBackend(dit)
    before = eval_loss(backend, text, data)
    result = train_dit(backend, text, data, params, _dit_config(minutes),
                       run / "dora.ckpt.safetensors", resume, log)
    result.update(eval_loss_before=before, eval_loss=eval_loss(backend, text, data),
                  eval_loss_object_weighted=eval_loss(backend, text, data, object_weight=OBJECT_WEIGHT))
    save_adapter(export_dora_state_dict(dit), run / "dora.safetensors", base)
    return result


def stage_alpha_tokens(run: Path, minutes: float, resume: bool, clips: int, log, folder: str | None = None) -> dict:
    """TransPixar on the tiny DiT: [RGB ; alpha] latents from the plain base VAE (alpha as grey),
    domain embedding + alpha-only LoRA trained, base DiT and text encoder frozen."""
    from diffusers import WanTransformer3DModel

    data = alpha_token_latents(run, clips, log, folder)
    text = TinyTextEncoder.load(_need(run, "text_encoder.safetensors")).requires_grad_(False)
    _warn_unknown_words(text, data.captions)
    base = load_model(WanTransformer3DModel, _need(run, "transformer.safetensors"))
    dit = AlphaTokenTransformer(base, rank=tc.TINY_ALPHA_TOKENS["rank"], lora_alpha=tc.TINY_ALPHA_TOKENS["alpha"])
    params = {f"adapter.{i}": p for i, p in enumerate(dit.adapter_parameters())}
    for p in params.values():
        p.requires_grad_(True)
    backend = AlphaTokenBackend(dit)
    before = eval_loss(backend, text, data)
    result = train_dit(backend, text, data, params, _dit_config(minutes, object_weight=0.0),
                       run / "alpha_tokens.ckpt.safetensors", resume, log)
    result.update(eval_loss_before=before, eval_loss=eval_loss(backend, text, data))
    save_alpha_token_weights(dit, run / "alpha_tokens.safetensors", force=True)
    return result


def export(run: Path, to: Path, force: bool = False) -> list[Path]:
    """Copy the shipped files into `to` (default: the package's tiny weights folder). Every source is
    checked before anything is written; a destination file that differs needs `force`; each copy
    goes through a temporary file and a rename."""
    sources = [_need(run, name) for name in SHIPPED] + [run / n for n in OPTIONAL_SHIPPED if (run / n).exists()]
    if to.exists() and not to.is_dir():
        raise RgbaError(f"{to} is not a folder")
    changed = [src for src in sources if not (to / src.name).exists()
               or (to / src.name).read_bytes() != src.read_bytes()]
    clobbered = [to / src.name for src in changed if (to / src.name).exists()]
    if clobbered and not force:
        raise OutputExistsError(f"{clobbered[0]} already exists and differs (pass --force to replace the "
                                f"{len(clobbered)} installed weight file(s))")
    to.mkdir(parents=True, exist_ok=True)
    for src in changed:
        with atomic_output(to / src.name, force=True) as tmp:
            shutil.copyfile(src, tmp)
    return [to / src.name for src in sources]


def stage_trajectory(run: Path, minutes: float, resume: bool, clips: int, log, folder: str | None = None) -> dict:
    """Tora on the frozen tiny model: the base (text encoder, DiT + DoRA, RGBA VAE) from the run folder
    where it has them, else the shipped ones; only the extractor and fusers train."""
    from rgbacli.engine import Engine
    from rgbacli.models.tora import attach_tora, save_tora
    from rgbacli.presets import load_preset
    from rgbacli.seeding import seeded
    from rgbacli.train.trajectory import (TrajectorySet, TrajectoryTrainConfig, encode_trajectory_set,
                                          eval_motion_loss, train_trajectory)

    if folder:
        raise RgbaError("the trajectory stage trains on procedural clips (their exact centre tracks); --data is not supported")
    preset = load_preset("tiny")
    section = preset.components["transformer"]
    section["adapters"] = [a for a in section.get("adapters", []) if a.get("kind") != "trajectory"]
    engine = Engine(preset, device="cpu", dtype="float32", weights_dir=str(run))
    backend = WanAlphaBackend(engine.component("transformer"), engine.component("vae"))
    text = engine.component("text_encoder")
    cache = run / "trajectory_latents.safetensors"
    if cache.exists():
        data = TrajectorySet.load(cache)
    else:
        data = encode_trajectory_set(backend.vae.encode, backend.encode_rgb, clips, seed0=200_000, size=tc.TINY_SIZE,
                                     frames=tc.TINY_FRAMES, spatial_factor=backend.spatial_factor,
                                     progress=lambda i, n: log(i, n, None, "encode trajectory latents"))
        data.save(cache)
    with seeded(0):
        adapter, _ = attach_tora(backend.transformer, backend.latent_channels, **tc.TINY_TORA)
    held = encode_trajectory_set(backend.vae.encode, backend.encode_rgb, 32, seed0=2_900_000, size=tc.TINY_SIZE,
                                 frames=tc.TINY_FRAMES, spatial_factor=backend.spatial_factor)
    before = eval_motion_loss(backend, text, held)
    result = train_trajectory(backend, text, adapter, data, TrajectoryTrainConfig(minutes=minutes),
                              run / "trajectory.ckpt.safetensors", resume, log)
    after = eval_motion_loss(backend, text, held)
    result.update(heldout_loss_before=before["with_motion"], heldout_loss_with_motion=after["with_motion"],
                  heldout_loss_without_motion=after["without_motion"])
    save_tora(adapter, run / "trajectory.safetensors")
    return result
