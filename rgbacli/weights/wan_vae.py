"""Wan 2.1 VAE and Wan-Alpha RGBA VAE weight loaders (local files only, safe loading only).

Formats (key layouts are documented in docs/rgba_vae.md):
- Wan 2.1 VAE: a diffusers directory, or the original `Wan2.1_VAE.pth` (original key names,
  converted with `original_vae_key_map`, which generalises diffusers'
  scripts/convert_wan_to_diffusers.py to any Wan 2.1 VAE config).
- Wan-Alpha `decoder.bin`: LoRAs `vae_fgr.decoder.<orig>[.conv3D].lora_{A,B}.default.weight`
  (RGB) and `vae_pha.…` (alpha).
- Wan-Alpha `Wan-Alpha-VAE.bin`: the same plus the merge block `middle.block.<…>` and
  (optionally) the frozen base weights `vae_fgr.encoder.*`, `vae_fgr.conv2.*`, `vae_fgr.decoder.*`.
- ComfyUI `wan_alpha_2.1_vae_{rgb,alpha}_channel.safetensors`: two full original-layout VAEs
  with the LoRA merged → the merged (two-decoder) path, without a merge block.
A missing or unexpected key is a `WeightsError` that names the key.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from rgbacli.errors import WeightsError
from rgbacli.models.latent_norm import fill_latent_stats
from rgbacli.models.rgba_vae import RGBAVAE
from rgbacli.weights.io import format_keys, load_state_dict, load_strict

WAN21_VAE_CONFIG: dict = {}  # AutoencoderKLWan() defaults are the Wan 2.1 VAE
WAN_ALPHA_IGNORED_PREFIXES = ("perceptual_loss.", "sobel_edge_loss.", "pipe.")
_RES_INNER = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
              "conv_shortcut": "shortcut"}
_MID = {("resnets", "0"): "0", ("attentions", "0"): "1", ("resnets", "1"): "2"}


# ----------------------------------------------------------------------------- helpers
def _vae_config(config: dict | None) -> dict:
    cfg = {k: v for k, v in dict(config or WAN21_VAE_CONFIG).items() if not k.startswith("_")}
    if config:
        cfg = fill_latent_stats(cfg)
    return cfg


def _meta_vae(config: dict):
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        return AutoencoderKLWan(**config)


# ----------------------------------------------------------------------------- Wan original ↔ diffusers
def _diffusers_to_original_key(key: str, cfg) -> str:
    """One diffusers AutoencoderKLWan key → the original Wan 2.1 (Wan2.1_VAE.pth) key."""
    n_levels, n_res = len(cfg["dim_mult"]), cfg["num_res_blocks"]
    m = re.fullmatch(r"(quant_conv|post_quant_conv)\.(\w+)", key)
    if m:
        return ("conv1." if m[1] == "quant_conv" else "conv2.") + m[2]
    side, rest = key.split(".", 1)
    if side not in ("encoder", "decoder"):
        raise KeyError(key)
    parts = rest.split(".")
    if parts[0] == "conv_in":
        return f"{side}.conv1.{'.'.join(parts[1:])}"
    if parts[0] in ("norm_out", "conv_out"):
        return f"{side}.head.{0 if parts[0] == 'norm_out' else 2}.{'.'.join(parts[1:])}"
    if parts[0] == "mid_block":
        block, tail, res = f"{side}.middle.{_MID[(parts[1], parts[2])]}", parts[3:], parts[1] == "resnets"
    elif parts[0] == "down_blocks":
        block, tail = f"{side}.downsamples.{parts[1]}", parts[2:]
        res = tail[0] in _RES_INNER
    elif parts[0] == "up_blocks":
        i = int(parts[1])
        per_block = [n_res + 1 + (1 if j != n_levels - 1 else 0) for j in range(n_levels)]
        base = sum(per_block[:i])
        if parts[2] == "resnets":
            block, tail, res = f"{side}.upsamples.{base + int(parts[3])}", parts[4:], True
        else:  # upsamplers.0
            block, tail, res = f"{side}.upsamples.{base + n_res + 1}", parts[4:], False
    else:
        raise KeyError(key)
    if res:
        tail = _RES_INNER[tail[0]].split(".") + tail[1:]
    return ".".join([block, *tail])


def original_vae_key_map(config: dict | None = None) -> dict[str, str]:
    """{diffusers key: original Wan key} for every tensor of an AutoencoderKLWan with `config`."""
    cfg = _vae_config(config)
    vae = _meta_vae(cfg)
    c = dict(vae.config)
    if c.get("is_residual"):
        raise WeightsError("only Wan 2.1 VAEs (is_residual=False) have the original key layout supported here")
    out = {k: _diffusers_to_original_key(k, c) for k in vae.state_dict()}
    if len(set(out.values())) != len(out):
        raise AssertionError("original VAE key map is not one-to-one")
    return out


def convert_original_vae(sd: dict[str, torch.Tensor], config: dict | None = None, what: str = "Wan VAE",
                         allow_missing_prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Original-layout Wan 2.1 VAE state dict → diffusers names (strict; errors name the key)."""
    fwd = original_vae_key_map(config)
    inv = {v: k for k, v in fwd.items()}
    unexpected = [k for k in sd if k not in inv]
    if unexpected:
        raise WeightsError(f"{what}: unexpected key {format_keys(unexpected)} (not an original-layout Wan 2.1 VAE?)")
    missing = [o for o in inv if o not in sd and not o.startswith(allow_missing_prefixes)]
    if missing:
        raise WeightsError(f"{what}: missing key {format_keys(missing)}")
    return {inv[k]: v for k, v in sd.items()}


def vae_from_diffusers_state(sd: dict[str, torch.Tensor], config: dict | None = None, what: str = "Wan VAE"):
    """An AutoencoderKLWan holding `sd` (diffusers names), built on the meta device then assigned."""
    cfg = _vae_config(config)
    vae = _meta_vae(cfg)
    load_strict(vae, {k: v.float() for k, v in sd.items()}, what, assign=True)
    return vae.eval().requires_grad_(False)


def load_wan_vae(path, config: dict | None = None):
    """Wan 2.1 VAE from a local diffusers directory, or an original-layout `.pth`/`.safetensors`."""
    p = Path(path)
    if p.is_dir():
        from diffusers import AutoencoderKLWan

        sub = p / "vae" if (p / "vae" / "config.json").is_file() else p
        if not (sub / "config.json").is_file():
            raise WeightsError(f"{p} is not a diffusers VAE directory (no config.json)")
        try:
            return AutoencoderKLWan.from_pretrained(str(sub), local_files_only=True).eval().requires_grad_(False)
        except Exception as e:
            raise WeightsError(f"cannot load the Wan VAE from {sub}: {e}".splitlines()[0]) from None
    if not p.is_file():
        raise WeightsError(f"Wan VAE weights not found: {p}")
    sd = load_state_dict(p)
    if any(k.startswith("encoder.down_blocks.") or k.startswith("decoder.up_blocks.") for k in sd):
        return vae_from_diffusers_state(sd, config, what=str(p))
    return vae_from_diffusers_state(convert_original_vae(sd, config, what=str(p)), config, what=str(p))


# ----------------------------------------------------------------------------- decoder LoRA (Wan-Alpha)
def decoder_conv_map(config: dict | None = None) -> dict[str, tuple[str, bool]]:
    """{diffusers decoder conv module path (no 'decoder.'): (original module path, is_causal_conv3d)}."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    cfg = _vae_config(config)
    vae = _meta_vae(cfg)
    fwd = {k: v for k, v in original_vae_key_map(cfg).items()}
    out = {}
    for name, m in vae.decoder.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            orig = fwd[f"decoder.{name}.weight"][len("decoder."):-len(".weight")]
            out[name] = (orig, isinstance(m, WanCausalConv3d))
    return out


def wan_alpha_lora_keys(config: dict | None = None) -> dict[tuple[str, str, str], str]:
    """{(adapter, diffusers conv path, 'A'|'B'): key in decoder.bin} for every decoder conv."""
    out = {}
    for name, (orig, causal) in decoder_conv_map(config).items():
        mod = orig + (".conv3D" if causal else "")
        for adapter, prefix in (("rgb", "vae_fgr"), ("alpha", "vae_pha")):
            for ab in "AB":
                out[(adapter, name, ab)] = f"{prefix}.decoder.{mod}.lora_{ab}.default.weight"
    return out


def _model_lora_key(name: str, causal: bool, adapter: str, ab: str) -> str:
    return f"base.decoder.{name}{'.conv3D' if causal else ''}.lora_{ab}.{adapter}.weight"


def _wan_alpha_base_key(key: str, fwd_inv: dict[str, str]) -> str | None:
    """`vae_fgr.decoder.x.conv3D.base_layer.weight` etc. → diffusers base key, or None if unknown."""
    m = re.fullmatch(r"vae_(?:fgr|pha)\.(.*)", key)
    if not m:
        return None
    orig = m[1].replace(".conv3D.", ".").replace(".base_layer.", ".")
    return fwd_inv.get(orig)


MERGE_KEY_PREFIX = "middle.block."


def merge_block_key_map() -> dict[str, str]:
    """{our MergeBlock key: Wan-Alpha key} — the reference's `Mapping.block` naming (assumed)."""
    m = {"conv_in.weight": "conv1.weight", "conv_in.bias": "conv1.bias", "norm_out.gamma": "head.0.gamma",
         "conv_out.weight": "head.2.weight", "conv_out.bias": "head.2.bias"}
    for i, slot in enumerate((0, 2, 4)):
        for ours, orig in _RES_INNER.items():
            if ours == "conv_shortcut":
                continue
            for p in (("gamma",) if ours.startswith("norm") else ("weight", "bias")):
                m[f"resnets.{i}.{ours}.{p}"] = f"middle.{slot}.{orig}.{p}"
    for i, slot in enumerate((1, 3)):
        for p in ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias"):
            m[f"attentions.{i}.{p}"] = f"middle.{slot}.{p}"
    return {k: MERGE_KEY_PREFIX + v for k, v in m.items()}


def wan_alpha_rank(sd: dict[str, torch.Tensor]) -> int:
    """LoRA rank stored in a Wan-Alpha file (rows of any lora_A)."""
    for k, v in sd.items():
        if ".lora_A." in k:
            return int(v.shape[0])
    raise WeightsError("no LoRA key (…lora_A.default.weight) found: not a Wan-Alpha decoder file")


def load_wan_alpha_state(model, sd: dict[str, torch.Tensor], what: str = "Wan-Alpha weights",
                         require_merge: bool = False, use_base: bool = True) -> dict[str, int]:
    """Load a Wan-Alpha state dict (decoder.bin or Wan-Alpha-VAE.bin layout) into an RGBAVAE with LoRA.

    LoRA keys for both decoders are required; `middle.block.*` (merge block) is loaded when
    present (required if `require_merge`); original-layout base weights under `vae_fgr.` are
    loaded into the frozen base (encoder trunk, conv2, decoder) when `use_base`, those under
    `vae_pha.` must map to a known base key and are ignored (the alpha decoder shares the base
    weights). `use_base=False` (decoder.bin, as the reference reads it: only `lora_A/B`) checks
    base keys but ignores them, so bf16 copies inside the file never replace the Wan 2.1 base.
    Returns counts of what was loaded."""
    if not model.has_lora:
        raise WeightsError("the RGBA VAE has no LoRA adapters to load Wan-Alpha LoRA weights into")
    cfg = dict(model.base.config)
    lora_keys = wan_alpha_lora_keys(cfg)
    causal = {name: c for name, (_, c) in decoder_conv_map(cfg).items()}
    by_file = {v: k for k, v in lora_keys.items()}
    fwd = original_vae_key_map(cfg)
    fwd_inv = {v: k for k, v in fwd.items()}
    merge_map = merge_block_key_map()
    merge_inv = {v: k for k, v in merge_map.items()}
    own = model.state_dict()
    new, base_sd, merge_sd, counts = {}, {}, {}, {"lora": 0, "merge": 0, "base": 0, "ignored": 0}
    for k, v in sd.items():
        if k in by_file:
            adapter, name, ab = by_file[k]
            tk = _model_lora_key(name, causal[name], adapter, ab)
            if tk not in own or own[tk].shape != v.shape:
                exp = tuple(own[tk].shape) if tk in own else None
                raise WeightsError(f"{what}: key {k!r} has shape {tuple(v.shape)}, expected {exp} "
                                   f"(LoRA rank {model.lora_rank})")
            new[tk] = v
            counts["lora"] += 1
        elif k in merge_inv:
            merge_sd[merge_inv[k]] = v
        elif k.startswith(WAN_ALPHA_IGNORED_PREFIXES):
            counts["ignored"] += 1
        elif (bk := _wan_alpha_base_key(k, fwd_inv)) is not None:
            if use_base and k.startswith("vae_fgr.") and not bk.startswith(("encoder.norm_out", "encoder.conv_out",
                                                                              "quant_conv")):
                base_sd[bk] = v
            else:
                counts["ignored"] += 1
        else:
            raise WeightsError(f"{what}: unexpected key {k!r}")
    missing = [v for v in lora_keys.values() if v not in sd]
    if missing:
        raise WeightsError(f"{what}: missing key {format_keys(missing)}")
    if merge_sd or require_merge:
        miss = [merge_map[k] for k in merge_map if k not in merge_sd]
        if miss:
            raise WeightsError(f"{what}: missing key {format_keys(miss)}")
        load_strict(model.merge, {k: v.to(model.merge.conv_in.weight.dtype) for k, v in merge_sd.items()}, what)
        counts["merge"] = len(merge_sd)
        model.encoder_ready = True
    own_base = model.base.state_dict()
    with torch.no_grad():
        for k, v in new.items():
            own[k].copy_(v)
        for dk, v in base_sd.items():
            tk = _wrapped_base_key(dk, own_base)
            if own_base[tk].shape != v.shape:
                raise WeightsError(f"{what}: base key for {dk!r} has shape {tuple(v.shape)}, "
                                   f"expected {tuple(own_base[tk].shape)}")
            own_base[tk].copy_(v)
            counts["base"] += 1
    return counts


def _wrapped_base_key(diff_key: str, own_base: dict) -> str:
    """diffusers base key → the key in our (conv-wrapped, peft-wrapped) base module."""
    if diff_key in own_base:
        return diff_key
    mod, _, p = diff_key.rpartition(".")
    for cand in (f"{mod}.conv3D.{p}", f"{mod}.conv3D.base_layer.{p}", f"{mod}.base_layer.{p}"):
        if cand in own_base:
            return cand
    raise WeightsError(f"base key {diff_key!r} has no place in the RGBA VAE")


def _as_base(base_vae):
    if base_vae is None:
        raise WeightsError("a Wan 2.1 VAE (diffusers directory or Wan2.1_VAE.pth) is needed as the base")
    if isinstance(base_vae, (str, Path)):
        return load_wan_vae(base_vae)
    return base_vae


def load_wan_alpha_decoder(base_vae, decoder_bin, merge_weights=None, lora_alpha: float = 1.0):
    """RGBAVAE from a Wan 2.1 base + Wan-Alpha `decoder.bin` (LoRA rank read from the file; only its
    `lora_A/B` keys are read: base weights inside the file are ignored, as in the reference).

    `merge_weights`: optional file holding `middle.block.*`; without it `encode` refuses to run."""
    sd = load_state_dict(decoder_bin)
    model = RGBAVAE(_as_base(base_vae), lora_rank=wan_alpha_rank(sd), lora_alpha=lora_alpha)
    if merge_weights is not None:
        sd = {**sd, **load_state_dict(merge_weights)}
    load_wan_alpha_state(model, sd, what=str(decoder_bin), use_base=False)
    model.encoder_ready = any(k.startswith(MERGE_KEY_PREFIX) for k in sd)
    return model


def load_wan_alpha_full(base_vae, path, lora_alpha: float = 1.0):
    """RGBAVAE from the full `Wan-Alpha-VAE.bin` (merge block required; base weights in it are used)."""
    sd = load_state_dict(path)
    model = RGBAVAE(_as_base(base_vae), lora_rank=wan_alpha_rank(sd), lora_alpha=lora_alpha)
    load_wan_alpha_state(model, sd, what=str(path), require_merge=True)
    return model


def load_comfy_pair(rgb_path, alpha_path, config: dict | None = None):
    """RGBAVAE (merged decoders, no LoRA, no merge block) from the ComfyUI repack pair of full VAEs."""
    rgb_sd = convert_original_vae(load_state_dict(rgb_path), config, what=str(rgb_path))
    alpha_sd = convert_original_vae(load_state_dict(alpha_path), config, what=str(alpha_path),
                                    allow_missing_prefixes=("encoder.", "conv1."))
    base = vae_from_diffusers_state(rgb_sd, config, what=str(rgb_path))
    a_post = alpha_sd.get("post_quant_conv.weight")
    if a_post is not None and not torch.allclose(a_post.float(), rgb_sd["post_quant_conv.weight"].float(), atol=1e-3):
        raise WeightsError(f"{alpha_path}: key 'conv2.weight' differs from the RGB file (expected the same base)")
    model = RGBAVAE(base, lora=False)
    model._make_merged(drop_lora=True, merge=False)
    dec = model.merged["alpha"]
    own = dec.state_dict()
    mapped = {}
    for k, v in alpha_sd.items():
        if k.startswith("decoder."):
            mapped[_wrapped_base_key(k[len("decoder."):], own)] = v.to(own[_wrapped_base_key(k[len("decoder."):], own)].dtype)
    load_strict(dec, mapped, what=str(alpha_path))
    model.encoder_ready = False
    return model


# ----------------------------------------------------------------------------- inverse (test fixtures, export)
def to_original_vae_state(vae) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKLWan → original Wan 2.1 layout (the inverse of convert_original_vae)."""
    fwd = original_vae_key_map(dict(vae.config))
    return {fwd[k]: v.detach().clone() for k, v in vae.state_dict().items()}


def to_wan_alpha_state(model, include_merge: bool = True, include_base: bool = False) -> dict[str, torch.Tensor]:
    """Our RGBAVAE (LoRA mode) → Wan-Alpha layout (decoder.bin; + merge block/base → Wan-Alpha-VAE.bin)."""
    cfg = dict(model.base.config)
    own = model.state_dict()
    causal = {name: c for name, (_, c) in decoder_conv_map(cfg).items()}
    out = {}
    for (adapter, name, ab), fk in wan_alpha_lora_keys(cfg).items():
        out[fk] = own[_model_lora_key(name, causal[name], adapter, ab)].clone()
    if include_merge:
        for ours, theirs in merge_block_key_map().items():
            out[theirs] = model.merge.state_dict()[ours].clone()
    if include_base:
        own_base = model.base.state_dict()
        for dk, ok in original_vae_key_map(cfg).items():
            if dk.startswith(("encoder.norm_out", "encoder.conv_out", "quant_conv")):
                continue  # the reference deletes the encoder head and conv1
            tk = _wrapped_base_key(dk, own_base)
            key = ok
            if ".conv3D." in tk:
                key = ok.rsplit(".", 1)[0] + ".conv3D" + (".base_layer." if "base_layer" in tk else ".") + ok.rsplit(".", 1)[1]
            elif ".base_layer." in tk:
                key = ok.rsplit(".", 1)[0] + ".base_layer." + ok.rsplit(".", 1)[1]
            out["vae_fgr." + key] = own_base[tk].clone()
    return out
