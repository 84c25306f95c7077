"""What each preset section builds, and what each adapter kind does to a component.

| registry | name → | used for |
|---|---|---|
| `COMPONENTS` | preset section (`[text_encoder]`, `[transformer]`, `[vae]`, …) → builder | `Engine.component(name)` |
| `ADAPTERS` | adapter kind (`dora`, `lora`, `alpha-tokens`, …) → apply function | a section's `adapters = [...]` |
| `FAMILIES` | `family` → the diffusers DiT class | the transformer builder |
| `TEXT_ENCODERS`, `VAE_FORMATS` | `[text_encoder] kind`, `[vae] format` → loader | their builders |

A new method adds its entries here (a new section such as `[image_encoder]`, a new adapter kind);
the preset parser and the engine do not change. :func:`validate` names an unknown section or kind
as one line, with the preset and the section it came from.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from rgbacli.backends import BACKENDS
from rgbacli.errors import UsageError, WeightsError
from rgbacli.models import dora, tora
from rgbacli.models.alpha_tokens import AlphaTokenTransformer, load_alpha_token_weights
from rgbacli.models.hf_text_encoder import HFTextEncoder
from rgbacli.models.latent_norm import fill_latent_stats
from rgbacli.models.rgba_vae import RGBAVAE
from rgbacli.models.semantic_motion import ClipImageEncoder, SemanticMotionPredictor, SMPConfig, load_smp
from rgbacli.models.text_encoder import TinyTextEncoder
from rgbacli.models.video_vae import PlainVideoVAE
from rgbacli.presets import Preset, require
from rgbacli.registry import Registry
from rgbacli.seeding import seeded
from rgbacli.weights import wan_vae
from rgbacli.weights.io import base_fingerprint, check_adapter_base, check_state_dict, load_state_dict
from rgbacli.weights.own import load_model


@dataclass
class BuildContext:
    """What a builder may use: the preset and where its files are."""

    preset: Preset
    weights_dir: str | None = None
    # shapes + weights fingerprint of the component before its first adapter (weights.io.base_fingerprint)
    base_fingerprint: dict | None = None

    def path(self, role: str) -> Path | None:
        """The file for `role` (e.g. "vae.decoder_lora"), None if optional and absent; else a WeightsError."""
        return require(self.preset, role, self.weights_dir)

    def where(self, section: str | None = None) -> str:
        return f"preset '{self.preset.name}'" + (f" [{section}]" if section else "")

    @property
    def backend(self):
        return BACKENDS.get(self.preset.backend, self.where())


@dataclass
class Built:
    """A built component; `dtype` None means "the engine's dtype"."""

    module: nn.Module
    dtype: torch.dtype | None = None


Builder = Callable[[BuildContext, dict], Built]
AdapterFn = Callable[[nn.Module, dict, Path, BuildContext], nn.Module]

COMPONENTS: Registry[Builder] = Registry("section")
ADAPTERS: Registry[AdapterFn] = Registry("adapter kind")
FAMILIES: Registry[Callable[[], type]] = Registry("model family")
TEXT_ENCODERS: Registry[Callable[[BuildContext, dict], Built]] = Registry("text encoder kind")
VAE_FORMATS: Registry[Callable[[BuildContext, dict], nn.Module]] = Registry("vae format")


def validate(preset: Preset) -> None:
    """Every section, adapter kind, backend and family the preset names is known (else one line)."""
    where = f"preset '{preset.name}'"
    BACKENDS.get(preset.backend, where)
    FAMILIES.get(preset.family, where)
    for name, section in preset.components.items():
        COMPONENTS.get(name, where)
        for ad in section.get("adapters", []):
            ADAPTERS.get(ad.get("kind"), f"{where} [{name}]")


def apply_adapters(module: nn.Module, section_name: str, section: dict, ctx: BuildContext) -> nn.Module:
    """Apply the section's `adapters = [...]` in order; an optional adapter whose file is absent is skipped.
    Every adapter is checked against the component as it was before the first one (`ctx.base_fingerprint`)."""
    adapters = section.get("adapters", [])
    ctx.base_fingerprint = base_fingerprint(module) if adapters else None
    for i, ad in enumerate(adapters):
        kind = ad.get("kind")
        apply = ADAPTERS.get(kind, ctx.where(section_name))
        path = ctx.path(f"{section_name}.{kind}[{i}]")
        if path is None:
            continue
        module = apply(module, ad, path, ctx)
    return module


# --------------------------------------------------------------------------- families
@FAMILIES.register("wan")
def _wan():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel


@FAMILIES.register("cogvideox")
def _cogvideox():
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel


# --------------------------------------------------------------------------- text encoder
@COMPONENTS.register("text_encoder")
def build_text_encoder(ctx: BuildContext, section: dict) -> Built:
    """`encode(prompts) -> ((B, L, D) hidden states, padding zeroed; (B, L) mask)`."""
    return TEXT_ENCODERS.get(section.get("kind", "tiny"), ctx.where("text_encoder"))(ctx, section)


@TEXT_ENCODERS.register("tiny")
def _tiny_text(ctx: BuildContext, section: dict) -> Built:
    if section.get("format") == "random":
        enc = TinyTextEncoder(**section.get("config", {}))
    else:
        enc = TinyTextEncoder.load(ctx.path("text_encoder"))
    return Built(enc, torch.float32)  # tiny and cheap: always float32


def _hf_text(kind: str, default_length: int):
    def load(ctx: BuildContext, section: dict) -> Built:
        length = int(section.get("config", {}).get("max_length", default_length))
        return Built(HFTextEncoder.load(kind, ctx.path("text_encoder"), ctx.path("text_encoder.tokenizer"), length))

    return load


TEXT_ENCODERS.add("umt5", _hf_text("umt5", 512))
TEXT_ENCODERS.add("t5", _hf_text("t5", 226))


# --------------------------------------------------------------------------- transformer
@COMPONENTS.register("transformer")
def build_transformer(ctx: BuildContext, section: dict) -> Built:
    """The DiT of the preset's family, before its adapters."""
    fmt = section.get("format", "diffusers")
    cls = FAMILIES.get(ctx.preset.family, ctx.where())()
    if fmt == "diffusers":
        path = ctx.path("transformer")
        try:
            model = cls.from_pretrained(str(path), local_files_only=True, torch_dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise WeightsError(f"cannot load transformer from {path}: {str(e).splitlines()[0]}") from None
    elif fmt == "random":
        with seeded(int(section.get("seed", 0))):
            model = cls(**section.get("config", {}))
    elif fmt == "rgbacli":
        model = load_model(cls, ctx.path("transformer"), section.get("config"))
    else:
        raise UsageError(f"{ctx.where('transformer')}: unknown format '{fmt}' (use diffusers, rgbacli or random)")
    return Built(model)


@contextmanager
def _fits_base(path: Path, ctx: BuildContext, section: str = "transformer"):
    """An adapter file and the base it is applied to: a fingerprint it carries (the files we write) must
    match the base's; a released file without one is checked by shape by its loader, and a misfit is
    one line naming the file and the preset."""
    where = ctx.where(section)
    if ctx.base_fingerprint is not None:
        check_adapter_base(path, ctx.base_fingerprint, where)
    try:
        yield
    except WeightsError as e:
        raise WeightsError(f"{where}: {path.name} does not fit this base model (made for another one?): {e}") from None


@ADAPTERS.register("dora")
def _dora(model: nn.Module, spec: dict, path: Path, ctx: BuildContext) -> nn.Module:
    """Wan-Alpha DoRA, merged into the base weights (no cost per step)."""
    with _fits_base(path, ctx):
        dora.merge_dora(model, load_state_dict(path), scale=float(spec.get("scale", 1.0)))
    return model


@ADAPTERS.register("lora")
def _lora(model: nn.Module, spec: dict, path: Path, ctx: BuildContext) -> nn.Module:
    """A plain LoRA (e.g. LightX2V's distill LoRA), merged."""
    with _fits_base(path, ctx):
        dora.merge_lora(model, load_state_dict(path), scale=float(spec.get("scale", 1.0)))
    return model


@ADAPTERS.register("alpha-tokens")
def _alpha_tokens(model: nn.Module, spec: dict, path: Path, ctx: BuildContext) -> nn.Module:
    """TransPixar: wrap the DiT so it denoises [RGB ; alpha] latents, then load the adapter file."""
    with _fits_base(path, ctx):
        wrapped = AlphaTokenTransformer(model, rank=int(spec.get("rank", 128)),
                                        lora_alpha=float(spec.get("alpha", 1.0)))
        try:
            load_alpha_token_weights(wrapped, path)
        except WeightsError:
            wrapped.remove()  # leave the base as it was
            raise
    return wrapped


@ADAPTERS.register("trajectory")
def _trajectory(model: nn.Module, spec: dict, path: Path, ctx: BuildContext) -> nn.Module:
    """Tora: a trajectory extractor and a motion fuser on every block's self-attention input, read from
    Tora's key layout (`traj_extractor.*`, `fuser.{i}.*`; other keys of a full Tora transformer file are
    ignored). Without motion latents in `cond` the DiT computes exactly what it did before."""
    sd = tora.read_tora_keys(path)
    where = f"{ctx.where('transformer')} trajectory adapter {path}"
    try:
        cfg = tora.infer_config(sd)
    except KeyError as e:
        raise WeightsError(f"{where}: missing key {str(e)}") from None
    patch, _, _ = tora._dit_geometry(model)
    if cfg["in_channels"] % (patch * patch):
        raise WeightsError(f"{where}: traj_extractor.conv_in takes {cfg['in_channels']} channels, not a multiple of "
                           f"the DiT's patch² ({patch * patch})")
    adapter, _ = tora.attach_tora(model, cfg["in_channels"] // (patch * patch), channels=cfg["channels"],
                                  nums_rb=cfg["nums_rb"])
    expected = tora.tora_state_dict_keys(adapter)
    check_state_dict(expected, {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, where)
    adapter.load_state_dict(sd, strict=False)
    return model


# --------------------------------------------------------------------------- vae
@COMPONENTS.register("vae")
def build_vae(ctx: BuildContext, section: dict) -> Built:
    """The RGBA VAE (backends with vae_kind "rgba") or the plain video VAE ("plain").

    | [vae] format | what is read |
    |---|---|
    | rgbacli   | our single .safetensors: RGBAVAE.save (rgba) or a plain diffusers VAE (plain) |
    | random    | random initialisation from `config` (tests, benchmarks) |
    | diffusers / wan-original | Wan 2.1 base VAE + Wan-Alpha `decoder.bin` (+ `Wan-Alpha-VAE.bin` for encode) |
    | comfy     | the ComfyUI repack: full RGB and alpha VAEs, LoRA already merged (decode only) |
    | cogvideox | CogVideoX's VAE (plain only) |
    """
    fmt = section.get("format", "diffusers")
    if ctx.backend.vae_kind == "plain":
        return Built(PlainVideoVAE(_plain_base_vae(ctx, section, fmt), ctx.preset.family))
    vae = VAE_FORMATS.get(fmt, ctx.where("vae"))(ctx, section)
    if vae.has_lora and vae.merged is None:
        vae.merge_lora(drop_lora=True)  # fused decoder copies: no LoRA convs per frame at inference
    return Built(vae)


def _lora_settings(section: dict) -> tuple[int, float]:
    return int(section.get("rank", 128)), float(section.get("alpha", 1.0))


@VAE_FORMATS.register("rgbacli")
def _rgba_own(ctx: BuildContext, section: dict):
    return RGBAVAE.load(ctx.path("vae"))


@VAE_FORMATS.register("random")
def _rgba_random(ctx: BuildContext, section: dict):
    rank, alpha = _lora_settings(section)
    with seeded(int(section.get("seed", 0))):
        vae = RGBAVAE.from_config(section.get("config", {}), lora_rank=rank, lora_alpha=alpha)
        if section.get("random_lora", True):  # peft starts LoRA B at zero; make both adapters matter
            for name, p in vae.named_parameters():
                if ".lora_B." in name:
                    torch.nn.init.normal_(p, std=0.02)
    return vae


def _rgba_wan_files(ctx: BuildContext, section: dict):
    _, alpha = _lora_settings(section)
    base = wan_vae.load_wan_vae(ctx.path("vae"))
    full = ctx.path("vae.encoder") if "encoder_file" in section else None
    if full is not None:
        return wan_vae.load_wan_alpha_full(base, full, lora_alpha=alpha)
    return wan_vae.load_wan_alpha_decoder(base, ctx.path("vae.decoder_lora"), lora_alpha=alpha)


VAE_FORMATS.add("diffusers", _rgba_wan_files)
VAE_FORMATS.add("wan-original", _rgba_wan_files)


@VAE_FORMATS.register("comfy")
def _rgba_comfy(ctx: BuildContext, section: dict):
    return wan_vae.load_comfy_pair(ctx.path("vae.rgb"), ctx.path("vae.alpha"))


def _plain_base_vae(ctx: BuildContext, section: dict, fmt: str) -> nn.Module:
    if ctx.preset.family == "cogvideox":
        from diffusers import AutoencoderKLCogVideoX

        if fmt == "random":
            with seeded(int(section.get("seed", 0))):
                return AutoencoderKLCogVideoX(**section.get("config", {}))
        return AutoencoderKLCogVideoX.from_pretrained(str(ctx.path("vae")), local_files_only=True)
    from diffusers import AutoencoderKLWan

    if fmt == "random":
        with seeded(int(section.get("seed", 0))):
            return AutoencoderKLWan(**fill_latent_stats(section.get("config", {})))
    if fmt == "rgbacli":  # our single-file diffusers VAE (e.g. the tiny model's base VAE)

        return load_model(AutoencoderKLWan, ctx.path("vae"))

    return wan_vae.load_wan_vae(ctx.path("vae"))


# --------------------------------------------------------------------------- image encoder, motion predictor
@COMPONENTS.register("image_encoder")
def build_image_encoder(ctx: BuildContext, section: dict) -> Built:
    """A frozen CLIP vision tower (`kind = "clip"`) from a local folder, e.g. Wan I2V's `image_encoder`;
    `format = "random"` builds one from `config` (tests). Its output: penultimate hidden states."""
    kind = section.get("kind", "clip")
    if kind != "clip":
        raise UsageError(f"{ctx.where('image_encoder')}: unknown kind '{kind}' (known: clip)")
    if section.get("format") == "random":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        with seeded(int(section.get("seed", 0))):
            return Built(ClipImageEncoder(CLIPVisionModel(CLIPVisionConfig(**section.get("config", {})))), torch.float32)
    return Built(ClipImageEncoder.load(ctx.path("image_encoder")))


@COMPONENTS.register("motion_predictor")
def build_motion_predictor(ctx: BuildContext, section: dict) -> Built:
    """StoryDiffusion's semantic motion predictor (rgbacli/models/semantic_motion.py) for `rgba
    interpolate`: our single file (`format = "rgbacli"`) or `random` from `config`. A predictor whose
    config names the "clip" encoder uses the preset's `[image_encoder]`."""
    encoder = None
    if "image_encoder" in ctx.preset.components:
        encoder = build_image_encoder(ctx, ctx.preset.components["image_encoder"]).module
    fmt = section.get("format", "rgbacli")
    if fmt == "random":
        with seeded(int(section.get("seed", 0))):
            smp = SemanticMotionPredictor(SMPConfig(**section.get("config", {})), encoder)
            if not section.get("zero_init", False):  # random outputs, so that tests see the predictor act
                for cross in smp.cross:
                    torch.nn.init.normal_(cross.to_out.weight, std=0.02)
        return Built(smp, torch.float32)
    if fmt != "rgbacli":
        raise UsageError(f"{ctx.where('motion_predictor')}: unknown format '{fmt}' (use rgbacli or random)")
    return Built(load_smp(ctx.path("motion_predictor"), encoder), torch.float32)
