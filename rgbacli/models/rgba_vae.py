"""Wan-Alpha RGBA VAE: alpha embedded in the frozen Wan 2.1 latent space.

Encoder: RGB hard-rendered over a colour from the 8 cube corners and alpha repeated to 3
channels both go through the frozen Wan encoder *trunk* (conv_in → down blocks → mid block;
the `norm_out/SiLU/conv_out` head and `quant_conv` are not used) → concat → merge block →
latent mean (no KL). Decoder: ONE frozen Wan decoder carrying two peft LoRA adapters,
"rgb" and "alpha", on every Conv2d/Conv3d; alpha = mean of the alpha decoder's 3 channels,
each clamped to [−1, 1] first.
Everything streams over time with the Wan causal feature cache (encode: first frame, then
4-frame chunks; decode: one latent frame at a time), so memory does not grow with length.
Latents leaving `encode` are normalised with the base VAE's `latents_mean/std`; `decode`
takes normalised latents (the only place normalisation happens).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import (
    CACHE_T,
    WanAttentionBlock,
    WanCausalConv3d,
    WanResidualBlock,
    WanRMS_norm,
)

from rgbacli.errors import RgbaError, WeightsError
from rgbacli.models.conv_lora import CausalConvForLora, conv_target_names, wrap_causal_convs
from rgbacli.models.latent_norm import LatentNorm, fill_latent_stats
from rgbacli.weights.io import load_strict, read_metadata, save_safetensors

ADAPTERS = ("rgb", "alpha")
ENCODE_CHUNK = 4  # frames per encoder chunk after the first frame (diffusers/Wan convention)

# The colour set C: the 8 corners of the RGB cube, in the reference's order (bits r, g, b).
COLORS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "green": (0.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
}
INFERENCE_COLOR = "black"  # fixed hard-render colour for encode() without a generator


# ----------------------------------------------------------------------------- rendering
def color_tensor(color, batch: int, like: torch.Tensor) -> torch.Tensor:
    """(B,3,1,1,1) colours from a name, an (r,g,b) triple, a (3,) or (B,3) tensor; None = black."""
    if color is None:
        color = INFERENCE_COLOR
    if isinstance(color, str):
        if color not in COLORS:
            raise RgbaError(f"unknown colour {color!r}; choose one of {', '.join(COLORS)}")
        color = COLORS[color]
    c = torch.as_tensor(color, dtype=like.dtype, device=like.device)
    if c.ndim == 1:
        c = c.expand(batch, 3)
    if c.shape != (batch, 3):
        raise RgbaError(f"colour must be 3 values or one per sample (B,3); got shape {tuple(c.shape)}")
    return c.reshape(batch, 3, 1, 1, 1)


def random_colors(batch: int, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """(B,3) colours drawn uniformly from COLORS with an explicit generator."""
    idx = torch.randint(len(COLORS), (batch,), generator=generator)
    table = torch.tensor(list(COLORS.values()))
    return table[idx].to(device)


def soft_render(rgba: torch.Tensor, color=None) -> torch.Tensor:
    """R^s = rgb·α + c·(1−α) on straight RGBA (B,4,T,H,W) in [0,1] → (B,3,T,H,W)."""
    rgb, a = rgba[:, :3], rgba[:, 3:4]
    c = color_tensor(color, rgba.shape[0], rgba)
    return rgb * a + c * (1 - a)


def hard_render(rgba: torch.Tensor, color=None) -> torch.Tensor:
    """R^h: like soft_render with α binarised (α>0 → 1): every non-transparent pixel keeps its colour."""
    a = (rgba[:, 3:4] > 0).to(rgba.dtype)
    return soft_render(torch.cat([rgba[:, :3], a], dim=1), color)


# ----------------------------------------------------------------------------- causal cache helpers
def cached_conv(conv: nn.Module, x: torch.Tensor, feat_cache: list | None, feat_idx: list[int]) -> torch.Tensor:
    """Run a causal conv with Wan's feature-cache protocol (keep the last CACHE_T input frames)."""
    if feat_cache is None:
        return conv(x)
    idx = feat_idx[0]
    cache_x = x[:, :, -CACHE_T:].clone()
    if cache_x.shape[2] < CACHE_T and feat_cache[idx] is not None:
        cache_x = torch.cat([feat_cache[idx][:, :, -1:].to(cache_x.device), cache_x], dim=2)
    out = conv(x, feat_cache[idx])
    feat_cache[idx] = cache_x
    feat_idx[0] += 1
    return out


def count_cache_slots(module: nn.Module) -> int:
    """How many feature-cache slots a Wan-style module consumes (one per causal conv)."""
    return sum(isinstance(m, (WanCausalConv3d, CausalConvForLora)) for m in module.modules())


def encoder_trunk(encoder: nn.Module, x: torch.Tensor, feat_cache: list | None, feat_idx: list[int]) -> torch.Tensor:
    """The Wan encoder without its head: conv_in → down blocks → mid block (384 ch in Wan 2.1)."""
    x = cached_conv(encoder.conv_in, x, feat_cache, feat_idx)
    for layer in encoder.down_blocks:
        x = layer(x) if isinstance(layer, WanAttentionBlock) else layer(x, feat_cache=feat_cache, feat_idx=feat_idx)
    return encoder.mid_block(x, feat_cache=feat_cache, feat_idx=feat_idx)


def time_chunks(num_frames: int) -> list[slice]:
    """Encoder chunks: the first frame alone, then ENCODE_CHUNK frames at a time."""
    return [slice(0, 1)] + [slice(s, s + ENCODE_CHUNK) for s in range(1, num_frames, ENCODE_CHUNK)]


# ----------------------------------------------------------------------------- merge block
class MergeBlock(nn.Module):
    """Feature merge block M: concat(E(rgb), E(alpha)) → causal conv k=1 → [Res, Attn, Res, Attn, Res]
    → RMSNorm → SiLU → causal conv k=3 → z_dim. Built from diffusers' Wan blocks so it uses the
    same causal feature cache and streams over time."""

    def __init__(self, in_dim: int, mid_dim: int, z_dim: int):
        super().__init__()
        self.conv_in = WanCausalConv3d(in_dim, mid_dim, 1)
        self.resnets = nn.ModuleList([WanResidualBlock(mid_dim, mid_dim) for _ in range(3)])
        self.attentions = nn.ModuleList([WanAttentionBlock(mid_dim) for _ in range(2)])
        self.norm_out = WanRMS_norm(mid_dim, images=False)
        self.conv_out = WanCausalConv3d(mid_dim, z_dim, 3, padding=1)
        for attn in self.attentions:  # attention starts as identity (as in the reference)
            nn.init.zeros_(attn.proj.weight)

    def forward(self, x: torch.Tensor, feat_cache: list | None = None, feat_idx: list[int] | None = None):
        feat_idx = [0] if feat_idx is None else feat_idx
        x = cached_conv(self.conv_in, x, feat_cache, feat_idx)
        x = self.resnets[0](x, feat_cache=feat_cache, feat_idx=feat_idx)
        for attn, res in zip(self.attentions, self.resnets[1:]):
            x = res(attn(x), feat_cache=feat_cache, feat_idx=feat_idx)
        x = F.silu(self.norm_out(x))
        return cached_conv(self.conv_out, x, feat_cache, feat_idx)


# ----------------------------------------------------------------------------- the model
def alpha_from_channels(decoded: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """The alpha decoder's 3 channels in [−1, 1] → (B,1,…) alpha in [0, 1], as the reference does:
    each channel clamped to [−1, 1] first, then the mean (a channel far outside the range cannot
    pull the others). `clamp=False` (training) keeps the plain mean so gradients reach every channel."""
    if clamp:
        decoded = decoded.clamp(-1, 1)
    return (decoded.mean(dim=1, keepdim=True) + 1) / 2


def _lora_layers(module: nn.Module):
    from peft.tuners.lora.layer import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def lora_delta(layer, adapter: str) -> torch.Tensor:
    """ΔW = scale · B·A for a conv LoRA (lora_A: the base kernel, lora_B: 1×…×1), any conv rank.
    Computed here because peft 0.21 mis-merges Conv3d LoRAs with a 1×1×1 kernel."""
    a = layer.lora_A[adapter].weight.float()
    b = layer.lora_B[adapter].weight.float().flatten(1)
    return torch.einsum("or,ri...->oi...", b, a) * layer.scaling[adapter]


def _strip_lora(module: nn.Module, merge_adapter: str | None) -> None:
    """Replace every LoRA layer by its base conv, first merging `merge_adapter` into it (if given)."""
    from peft.tuners.lora.layer import LoraLayer

    for name, m in list(module.named_modules()):
        if isinstance(m, LoraLayer):
            if merge_adapter is not None:
                base = m.get_base_layer()
                base.weight.data += lora_delta(m, merge_adapter).to(base.weight.dtype)
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, child, m.get_base_layer())


class RGBAVAE(nn.Module):
    """Wan-Alpha RGBA VAE around one frozen diffusers `AutoencoderKLWan` (see module docstring).

    Takes ownership of `base`: its decoder convs are wrapped for LoRA in place."""

    def __init__(self, base: AutoencoderKLWan, lora_rank: int = 128, lora_alpha: float = 1.0,
                 merge_dim: int | None = None, lora: bool = True):
        super().__init__()
        cfg = base.config
        if cfg.get("is_residual") or cfg.get("patch_size"):
            raise WeightsError("the RGBA VAE needs a Wan 2.1 VAE (is_residual=False, no patch_size)")
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise WeightsError(f"VAE config latents_mean/std have {len(cfg.latents_mean)} values, z_dim is {cfg.z_dim}")
        base.requires_grad_(False).eval()
        self.base = base
        self.feat_dim = cfg.base_dim * cfg.dim_mult[-1]
        self.merge_dim = merge_dim or self.feat_dim
        self.lora_rank, self.lora_alpha = int(lora_rank), float(lora_alpha)
        self.merge = MergeBlock(2 * self.feat_dim, self.merge_dim, cfg.z_dim)
        self.temporal_factor = 2 ** sum(bool(t) for t in cfg.temperal_downsample)
        self.spatial_factor = 2 ** (len(cfg.dim_mult) - 1)
        self.latent_norm = LatentNorm.of_wan(cfg)
        wrap_causal_convs(base.decoder)
        self.has_lora = bool(lora)
        if lora:
            from peft import LoraConfig, inject_adapter_in_model

            targets = conv_target_names(base.decoder)
            for name in ADAPTERS:
                conf = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, target_modules=targets,
                                  init_lora_weights=True)
                with warnings.catch_warnings():  # peft warns about a second adapter; that is the design
                    warnings.simplefilter("ignore")
                    inject_adapter_in_model(conf, base.decoder, adapter_name=name)
            self._lora = _lora_layers(base.decoder)
        else:
            self._lora = []
        self._active: str | None = None
        self.merged: nn.ModuleDict | None = None  # {"rgb": decoder, "alpha": decoder} after merge_lora()
        self.encoder_ready = True  # False when weights for the merge block were never loaded
        self._dec_slots = count_cache_slots(base.decoder)
        self._enc_slots = count_cache_slots(base.encoder)
        self._merge_slots = count_cache_slots(self.merge)
        self.freeze_base()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, vae_config: dict, lora_rank: int = 128, lora_alpha: float = 1.0,
                    merge_dim: int | None = None, lora: bool = True) -> "RGBAVAE":
        """Randomly initialised model (tests, tiny model). Latent stats default to identity if absent."""
        cfg = {k: v for k, v in dict(vae_config).items() if not k.startswith("_")}
        return cls(AutoencoderKLWan(**fill_latent_stats(cfg)), lora_rank, lora_alpha, merge_dim, lora)

    def config_dict(self) -> dict:
        """Everything needed to rebuild this model's structure (stored in our safetensors metadata)."""
        vae_cfg = {k: v for k, v in dict(self.base.config).items() if not k.startswith("_")}
        return {"format": "rgbacli.rgba_vae/1", "vae_config": vae_cfg, "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha, "merge_dim": self.merge_dim, "lora": self.has_lora,
                "merged": self.merged is not None, "encoder_ready": self.encoder_ready}

    def save(self, path) -> None:
        """Write the whole model to one .safetensors file with the config as JSON metadata (temp file,
        then rename: the decoder stages rewrite their input file in place)."""
        save_safetensors(self.state_dict(), path, metadata={"rgba_vae_config": json.dumps(self.config_dict())})

    @classmethod
    def load(cls, path) -> "RGBAVAE":
        """Read a file written by `save` (safetensors only; missing/unexpected keys → WeightsError)."""
        from safetensors.torch import load_file

        meta = read_metadata(path).get("rgba_vae_config")
        if not meta:
            raise WeightsError(f"{path} is not an rgbacli RGBA VAE file (no 'rgba_vae_config' metadata)")
        c = json.loads(meta)
        model = cls.from_config(c["vae_config"], c["lora_rank"], c["lora_alpha"], c["merge_dim"], c["lora"])
        if c.get("merged"):
            model._make_merged(drop_lora=not c["lora"], merge=False)
        load_strict(model, load_file(str(path)), what=str(path))
        model.encoder_ready = bool(c.get("encoder_ready", True))
        return model

    @torch.no_grad()
    def init_merge_from_encoder_head(self) -> "RGBAVAE":
        """Start the merge block as the frozen encoder's own head applied to the RGB features.

        conv_in passes the RGB half through (alpha half zero), residual and attention blocks start
        as identity, and RMSNorm → SiLU → conv_out equal the encoder head with quant_conv's mean rows
        folded in. The RGBA latent then starts *in the base latent space*, where the RGB decoder is
        already exact and a DiT trained on RGB latents already works; training adds alpha from there.
        """
        m, enc, z = self.merge, self.base.encoder, self.base.config.z_dim
        if self.merge_dim != self.feat_dim or enc.norm_out.gamma.shape != m.norm_out.gamma.shape:
            raise RgbaError("init from the encoder head needs merge_dim equal to the encoder feature width")
        c = self.feat_dim
        m.conv_in.weight.zero_()
        m.conv_in.bias.zero_()
        m.conv_in.weight[:, :c].copy_(torch.eye(c).view(c, c, 1, 1, 1))
        for res in m.resnets:
            res.conv2.weight.zero_()
            res.conv2.bias.zero_()
        for attn in m.attentions:
            attn.proj.weight.zero_()
            attn.proj.bias.zero_()
        m.norm_out.gamma.copy_(enc.norm_out.gamma)
        wq = self.base.quant_conv.weight[:z, :, 0, 0, 0]  # mean rows of the 1x1 quant conv
        m.conv_out.weight.copy_(torch.einsum("om,mikhw->oikhw", wq, enc.conv_out.weight))
        m.conv_out.bias.copy_(wq @ enc.conv_out.bias + self.base.quant_conv.bias[:z])
        return self

    def freeze_base(self) -> None:
        """Frozen: the Wan encoder/decoder weights. Trainable: merge block + both LoRA adapters."""
        self.base.requires_grad_(False)
        self.merge.requires_grad_(True)
        for layer in self._lora:
            for d in (layer.lora_A, layer.lora_B):
                d.requires_grad_(True)

    @property
    def latent_channels(self) -> int:
        """z_dim of the latent (16 for Wan 2.1)."""
        return int(self.base.config.z_dim)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the frozen encoder (inputs are cast to it)."""
        return self.base.encoder.conv_in.weight.dtype

    # ------------------------------------------------------------------ latent normalisation
    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """Raw Wan latent → the normalised latent the DiT sees."""
        return self.latent_norm.normalize(mu)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latent → raw Wan latent for the decoder."""
        return self.latent_norm.denormalize(z)

    def set_latent_stats(self, mean: list[float], std: list[float]) -> None:
        """New normalisation statistics, kept in the base config (saved) and the LatentNorm (used)."""
        self.base.register_to_config(latents_mean=list(mean), latents_std=list(std))
        self.latent_norm.set(mean, std)

    def latent_frames(self, num_frames: int) -> int:
        """1 + (T−1)/temporal_factor latent frames for T = 4k+1 input frames."""
        return 1 + (num_frames - 1) // self.temporal_factor

    # ------------------------------------------------------------------ encode
    def _check_input(self, rgba: torch.Tensor) -> None:
        if rgba.ndim != 5 or rgba.shape[1] != 4:
            raise RgbaError(f"RGBA VAE input must be (B,4,T,H,W); got {tuple(rgba.shape)}")
        t, h, w = rgba.shape[2:]
        if (t - 1) % ENCODE_CHUNK:
            raise RgbaError(f"the RGBA VAE needs 4k+1 frames (1, 5, 9, …, 81); got {t} (pad the clip first)")
        s = self.spatial_factor
        if h % s or w % s:
            raise RgbaError(f"frame size {w}x{h} is not a multiple of {s}")

    def encode(self, rgba: torch.Tensor, generator: torch.Generator | None = None, color=None) -> torch.Tensor:
        """(B,4,T,H,W) straight RGBA in [0,1] → normalised latents (B,z,1+(T−1)/tf,H/s,W/s).

        The RGB is hard-rendered over `color`, or over a random colour of COLORS per sample when a
        `generator` is given (training); by default over black (INFERENCE_COLOR)."""
        if not self.encoder_ready:
            raise WeightsError("these RGBA VAE weights have no merge block (decoders only); encode needs a "
                               "full Wan-Alpha VAE (Wan-Alpha-VAE.bin or an rgbacli .safetensors)")
        self._check_input(rgba)
        dtype = self.base.encoder.conv_in.weight.dtype
        rgba = rgba.to(dtype)
        b = rgba.shape[0]
        if color is None and generator is not None:
            color = random_colors(b, generator, rgba.device).to(dtype)
        rgb_in = hard_render(rgba, color) * 2 - 1
        a_in = rgba[:, 3:4].expand(-1, 3, -1, -1, -1) * 2 - 1
        x = torch.cat([rgb_in, a_in], dim=0)  # one pass of the shared frozen trunk for both inputs
        enc_cache, merge_cache = [None] * self._enc_slots, [None] * self._merge_slots
        out = []
        for sl in time_chunks(x.shape[2]):
            with torch.no_grad():  # the trunk is frozen: no activations kept for backward
                f = encoder_trunk(self.base.encoder, x[:, :, sl], enc_cache, [0])
            out.append(self.merge(torch.cat([f[:b], f[b:]], dim=1), merge_cache, [0]))
        return self.normalize(torch.cat(out, dim=2).float())

    # ------------------------------------------------------------------ decode
    def _activate(self, name: str) -> None:
        """Make `name` the active adapter of the shared decoder, keeping LoRA requires_grad as it was
        (peft's set_adapter would freeze the inactive adapter, which training must not see)."""
        if self._active == name:
            return
        trainable = self._lora[0].lora_A[ADAPTERS[0]].weight.requires_grad
        for layer in self._lora:
            layer.set_adapter(name, inference_mode=True)
            for d in (layer.lora_A, layer.lora_B):
                d.requires_grad_(trainable)
        self._active = name

    def _decoder(self, name: str) -> nn.Module:
        if self.merged is not None:
            return self.merged[name]
        if not self.has_lora:
            raise WeightsError("this RGBA VAE has neither LoRA adapters nor merged decoders")
        self._activate(name)
        return self.base.decoder

    def iter_decode(self, z: torch.Tensor, adapters: Sequence[str] = ADAPTERS, clamp: bool = True
                    ) -> Iterator[torch.Tensor]:
        """Yield decoded frames latent frame by latent frame: (B,4,t_i,H,W) straight RGBA in [0,1]
        (or (B,3,…) RGB when adapters == ("rgb",)). Both adapters advance together so only one
        latent frame of activations (plus the causal caches) is alive at a time."""
        if z.ndim != 5 or z.shape[1] != self.base.config.z_dim:
            raise RgbaError(f"latents must be (B,{self.base.config.z_dim},t,h,w); got {tuple(z.shape)}")
        dtype = self.base.post_quant_conv.weight.dtype
        x = self.denormalize(z.float()).to(dtype)
        caches = {a: [None] * self._dec_slots for a in adapters}
        for i in range(x.shape[2]):
            h = self.base.post_quant_conv(x[:, :, i:i + 1])
            outs = {}
            for a in adapters:
                outs[a] = self._decoder(a)(h, feat_cache=caches[a], feat_idx=[0], first_chunk=(i == 0)).float()
            rgb = (outs["rgb"] + 1) / 2 if "rgb" in outs else None
            alpha = alpha_from_channels(outs["alpha"], clamp) if "alpha" in outs else None
            frame = torch.cat([t for t in (rgb, alpha) if t is not None], dim=1)
            yield frame.clamp(0, 1) if clamp else frame

    def _collect(self, z: torch.Tensor, adapters: Sequence[str], clamp: bool) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: keep the autograd graph simple
            return torch.cat(list(self.iter_decode(z, adapters, clamp)), dim=2)
        out, t0 = None, 0  # inference: one preallocated output, no list of frames + cat copy
        for frame in self.iter_decode(z, adapters, clamp):
            if out is None:
                b, c, _, h, w = frame.shape
                total = 1 + (z.shape[2] - 1) * self.temporal_factor
                out = frame.new_empty(b, c, total, h, w)
            out[:, :, t0:t0 + frame.shape[2]] = frame
            t0 += frame.shape[2]
        return out

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Normalised latents (B,z,t,h,w) → straight RGBA (B,4,T,H,W) in [0,1]."""
        return self._collect(z, ADAPTERS, clamp)

    def decode_rgb_only(self, z: torch.Tensor) -> torch.Tensor:
        """RGB decoder only (B,3,T,H,W): the plain-RGB cost, for measuring the RGBA overhead."""
        return self._collect(z, ("rgb",), True)

    def decode_alpha_only(self, z: torch.Tensor) -> torch.Tensor:
        """Alpha decoder only (B,1,T,H,W): the subject's mask without the RGB decoder's cost."""
        return self._collect(z, ("alpha",), True)

    def forward(self, rgba: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction for training: encode (random render colour) → decode without clamping."""
        return self.decode(self.encode(rgba, generator=generator), clamp=False)

    # ------------------------------------------------------------------ LoRA merge
    def _make_merged(self, drop_lora: bool, merge: bool = True) -> None:
        dec = {}
        for a in ADAPTERS:
            d = copy.deepcopy(self.base.decoder)
            _strip_lora(d, a if (merge and self.has_lora) else None)
            d.requires_grad_(False)
            dec[a] = d
        self.merged = nn.ModuleDict(dec)
        if drop_lora and self.has_lora:
            _strip_lora(self.base.decoder, None)
            self._lora, self.has_lora = [], False

    @torch.no_grad()
    def merge_lora(self, drop_lora: bool = False) -> "RGBAVAE":
        """Fuse each adapter into its own decoder copy (no LoRA cost at decode). `drop_lora` also
        removes the adapters from the shared decoder to save memory (no more training then)."""
        if not self.has_lora:
            raise RgbaError("nothing to merge: this RGBA VAE has no LoRA adapters")
        self._make_merged(drop_lora)
        return self

    def unmerge(self) -> "RGBAVAE":
        """Go back to the shared-decoder + adapters path (only if the adapters were kept)."""
        if not self.has_lora:
            raise RgbaError("the LoRA adapters were dropped when merging; reload the weights to unmerge")
        self.merged = None
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Merge block + LoRA parameters (what the VAE training step optimises)."""
        return [p for p in self.parameters() if p.requires_grad]
