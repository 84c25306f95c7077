"""Build the VAE a preset asks for: the RGBA VAE (Wan-Alpha) or a plain video VAE (alpha tokens).

| preset [vae] format | what is read |
|---|---|
| rgbacli   | our single .safetensors: RGBAVAE.save (wan-alpha) or a plain VAE (alpha tokens) |
| random    | random initialisation from `config` (tests, benchmarks) |
| diffusers / wan-original | Wan 2.1 base VAE + Wan-Alpha `decoder.bin` (+ `Wan-Alpha-VAE.bin` for encode) |
| comfy     | the ComfyUI repack: full RGB and alpha VAEs, LoRA already merged (decode only) |
| cogvideox | CogVideoX's VAE (alpha-token backend only) |
"""

from __future__ import annotations

import torch
from torch import nn

from rgbacli.errors import UsageError
from rgbacli.models.video_vae import PlainVideoVAE


def load_vae(engine) -> nn.Module:
    """The engine's VAE for its preset (see the table above)."""
    comp = engine._component("vae")
    fmt = comp.get("format", "diffusers")
    family = engine.preset.family
    if engine.preset.backend == "alpha-tokens":
        return PlainVideoVAE(_base_vae(engine, comp, fmt, family), family)
    from rgbacli.models.rgba_vae import RGBAVAE
    from rgbacli.weights import wan_vae

    rank, alpha = int(comp.get("rank", 128)), float(comp.get("alpha", 1.0))
    if fmt == "rgbacli":
        vae = RGBAVAE.load(engine._path("vae"))
    elif fmt == "random":
        from rgbacli.engine import seeded

        with seeded(int(comp.get("seed", 0))):
            vae = RGBAVAE.from_config(comp.get("config", {}), lora_rank=rank, lora_alpha=alpha)
            if comp.get("random_lora", True):  # peft starts LoRA B at zero; make both adapters matter
                for name, p in vae.named_parameters():
                    if ".lora_B." in name:
                        torch.nn.init.normal_(p, std=0.02)
    elif fmt in ("diffusers", "wan-original"):
        base = wan_vae.load_wan_vae(engine._path("vae"))
        full = engine._path("vae.encoder") if "encoder_file" in comp else None
        if full is not None:
            vae = wan_vae.load_wan_alpha_full(base, full, lora_alpha=alpha)
        else:
            vae = wan_vae.load_wan_alpha_decoder(base, engine._path("vae.decoder_lora"), lora_alpha=alpha)
    elif fmt == "comfy":
        vae = wan_vae.load_comfy_pair(engine._path("vae.rgb"), engine._path("vae.alpha"))
    else:
        raise UsageError(f"preset '{engine.preset.name}': unknown vae format '{fmt}'")
    if vae.has_lora and vae.merged is None:
        vae.merge_lora(drop_lora=True)  # fused decoder copies: no LoRA convs per frame at inference
    return vae


def _base_vae(engine, comp: dict, fmt: str, family: str) -> nn.Module:
    if family == "cogvideox":
        from diffusers import AutoencoderKLCogVideoX

        if fmt == "random":
            return AutoencoderKLCogVideoX(**comp.get("config", {}))
        return AutoencoderKLCogVideoX.from_pretrained(str(engine._path("vae")), local_files_only=True)
    from diffusers import AutoencoderKLWan

    if fmt == "random":
        from rgbacli.engine import seeded
        from rgbacli.models.latent_norm import fill_latent_stats

        with seeded(int(comp.get("seed", 0))):
            return AutoencoderKLWan(**fill_latent_stats(comp.get("config", {})))
    if fmt == "rgbacli":  # our single-file diffusers VAE (e.g. the tiny model's base VAE)
        from rgbacli.weights.own import load_model

        return load_model(AutoencoderKLWan, engine._path("vae"))
    from rgbacli.weights import wan_vae

    return wan_vae.load_wan_vae(engine._path("vae"))
