"""StoryDiffusion's semantic motion predictor (SMP), for keyframe → clip interpolation.

The paper (code never released): an image encoder E turns the start and end frames into
semantic embeddings K_s, K_e; they are linearly interpolated to one set per frame, K_1 … K_L;
a transformer B predicts the transition P_1 … P_L = B(K_1 … K_L); each frame's features then
cross-attend to concat(text, P_i) through extra K/V projections (IP-adapter style).

Here, on a Wan DiT:

    A, B (B, 4, H, W) RGBA ─ E ─→ (B, L, D_e) each ─ lerp over F latent frames ─→ (B, F, L, D_e)
        ─ in-projection + frame/token positions ─ transformer over F·L tokens ─→ P (B, F, L, D)
        ─ every block's attn2: ExtraCrossAttention (own to_k/to_v/norm_k, to_out zero-initialised;
          `query_pos`: the token's grid position added to its query, so P_f can say where, not only what)

so a fresh predictor leaves the DiT's output exactly as it was. Frame f's video tokens attend only
to P_f (rgbacli/models/attention.py handles the per-frame grouping, alpha-token copies included).

Image encoders:
- ``tiny``: :class:`TinyImageEncoder`, a small conv net on the RGBA keyframe (x/y coordinate
  channels so its pooled tokens can say where things are), trained with the predictor.
- ``clip``: :class:`ClipImageEncoder`, a CLIP vision tower from local files (e.g. Wan I2V's
  ``image_encoder`` folder), frozen; its penultimate hidden states, as Wan's I2V uses them.

Sections: 1. image encoders · 2. the predictor · 3. weights file · 4. attaching to a DiT.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rgbacli.errors import WeightsError
from rgbacli.models.attention import Attachment, ExtraCrossAttention, attach, blocks_of, unwrap
from rgbacli.weights.io import load_state_dict, load_strict, read_metadata, save_safetensors

__all__ = ["SMPConfig", "TinyImageEncoder", "ClipImageEncoder", "SemanticMotionPredictor", "interpolate_embeddings",
           "attach_smp", "save_smp", "load_smp", "COND_KEY"]

COND_KEY = "smp"  # the key of the per-frame embeddings in the sampler's `cond` dict


@dataclass
class SMPConfig:
    """Sizes of one predictor. ``encoder`` is "tiny" (trained here, part of the file) or "clip"
    (a frozen CLIP vision tower given at load; ``encoder_dim`` is its hidden size)."""

    encoder: str = "tiny"
    encoder_dim: int = 128
    tokens: int = 8  # tiny encoder: embedding tokens per image (CLIP: its 257)
    hidden: int = 128  # paper: 1024
    layers: int = 2  # paper: 8
    heads: int = 4  # paper: 12
    max_frames: int = 32  # latent frames the frame-position table covers
    inner_dim: int = 128  # the DiT's attention width (heads × head_dim)
    dit_heads: int = 4
    num_blocks: int = 6  # DiT blocks that get the extra cross-attention
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    query_pos: int = 0  # octaves of the video tokens' grid position added to the extra attention's query (0: none)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# --------------------------------------------------------------------------- 1. image encoders


def _coords(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) x/y coordinates in [−1, 1] beside an image batch."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([xs, ys], dim=1)


class TinyImageEncoder(nn.Module):
    """RGBA keyframes (B, 4, H, W) in [0, 1] → (B, tokens, dim): strided convs over RGBA plus
    coordinate channels, then attention pooling by ``tokens`` learned queries."""

    def __init__(self, dim: int = 128, tokens: int = 8, channels: list[int] | tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers, c_in = [], 6
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in + 2, dim, 1)  # coordinates again at the pooled resolution
        self.queries = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.pool = nn.MultiheadAttention(dim, num_heads=max(1, dim // 32), batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, rgba: torch.Tensor) -> torch.Tensor:
        x = rgba * 2 - 1
        f = self.convs(torch.cat([x, _coords(x)], dim=1))
        f = self.proj(torch.cat([f, _coords(f)], dim=1)).flatten(2).transpose(1, 2)  # (B, h·w, dim)
        q = self.queries[None].expand(f.shape[0], -1, -1)
        pooled, _ = self.pool(q, f, f, need_weights=False)
        return self.norm(pooled + q)


class ClipImageEncoder(nn.Module):
    """A frozen CLIP vision tower (transformers ``CLIPVisionModel``) on RGBA keyframes: the RGB
    composited over white, resized to the tower's input size and normalised with its mean/std;
    returns the penultimate hidden states (B, 1 + patches, hidden), as Wan's I2V uses them."""

    OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
    OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, vision: nn.Module, mean=OPENAI_MEAN, std=OPENAI_STD):
        super().__init__()
        self.vision = vision.eval().requires_grad_(False)
        self.size = int(vision.config.image_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return int(self.vision.config.hidden_size)

    @property
    def tokens(self) -> int:
        return (self.size // int(self.vision.config.patch_size)) ** 2 + 1

    @classmethod
    def load(cls, folder: str | Path) -> "ClipImageEncoder":
        """From a local folder holding a CLIPVisionModel (config.json + weights) and optionally
        preprocessor_config.json; a missing or unreadable folder is one WeightsError line."""
        from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise WeightsError(f"image encoder: {folder} has no config.json (expected a CLIP vision model folder, "
                               "e.g. Wan2.1-I2V-14B-480P-Diffusers/image_encoder)")
        try:
            cfg = json.loads((folder / "config.json").read_text())
            klass = CLIPVisionModelWithProjection if "WithProjection" in str(cfg.get("architectures")) else CLIPVisionModel
            model = klass.from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise WeightsError(f"cannot load image encoder from {folder}: {str(e).splitlines()[0]}") from None
        mean, std = cls.OPENAI_MEAN, cls.OPENAI_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            p = json.loads(pre.read_text())
            mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
        return cls(model, mean, std)

    def forward(self, rgba: torch.Tensor) -> torch.Tensor:
        rgb, a = rgba[:, :3], rgba[:, 3:4]
        x = rgb * a + (1 - a)  # over white
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        x = (x - self.mean) / self.std
        dtype = next(self.vision.parameters()).dtype
        out = self.vision(pixel_values=x.to(dtype), output_hidden_states=True)
        return out.hidden_states[-2].float()


# --------------------------------------------------------------------------- 2. the predictor


def interpolate_embeddings(k_start: torch.Tensor, k_end: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, L, D) × 2 → (B, frames, L, D): K_i = (1 − w_i)·K_s + w_i·K_e, w_i = i / (frames − 1)."""
    w = torch.linspace(0, 1, frames, device=k_start.device, dtype=k_start.dtype).view(1, frames, 1, 1)
    return (1 - w) * k_start[:, None] + w * k_end[:, None]


class SemanticMotionPredictor(nn.Module):
    """Image encoder (tiny) + transition transformer + one ExtraCrossAttention per DiT block.

    :meth:`embed` gives the per-latent-frame embeddings P (B, F, L, hidden) the sampler passes as
    ``cond[COND_KEY]``; :func:`attach_smp` puts ``self.cross[i]`` on block i's ``attn2``."""

    def __init__(self, config: SMPConfig, image_encoder: nn.Module | None = None):
        super().__init__()
        self.config = c = config
        if c.encoder == "tiny":
            self.encoder = TinyImageEncoder(c.encoder_dim, c.tokens, c.encoder_channels)
            self.external = None
        else:
            if image_encoder is None:
                raise WeightsError(f"the motion predictor uses a '{c.encoder}' image encoder; none was given")
            self.encoder = None
            self.external = [image_encoder]  # a list: the frozen tower is not part of this module's weights
        self.proj_in = nn.Linear(c.encoder_dim, c.hidden)
        self.frame_pos = nn.Parameter(torch.zeros(c.max_frames, c.hidden))
        self.token_pos = nn.Parameter(torch.zeros(max(c.tokens, 1), c.hidden))
        nn.init.normal_(self.frame_pos, std=0.02)
        nn.init.normal_(self.token_pos, std=0.02)
        layer = nn.TransformerEncoderLayer(c.hidden, c.heads, dim_feedforward=4 * c.hidden, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(c.hidden)
        self.cross = nn.ModuleList(ExtraCrossAttention(c.hidden, c.inner_dim, c.dit_heads, COND_KEY,
                                                       query_pos=c.query_pos) for _ in range(c.num_blocks))

    def encode_images(self, rgba: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W) keyframes → (B, L, encoder_dim)."""
        enc = self.encoder if self.encoder is not None else self.external[0]
        return enc(rgba.float())

    def predict(self, k_start: torch.Tensor, k_end: torch.Tensor, frames: int) -> torch.Tensor:
        """The transition: (B, L, D_e) × 2 → P (B, frames, L, hidden)."""
        c = self.config
        if frames > c.max_frames:
            raise ValueError(f"the motion predictor covers at most {c.max_frames} latent frames, not {frames}")
        k = self.proj_in(interpolate_embeddings(k_start, k_end, frames))  # (B, F, L, hidden)
        b, f, n, d = k.shape
        pos_t = self.token_pos if n == self.token_pos.shape[0] else self.token_pos[:1]
        k = k + self.frame_pos[:f].view(1, f, 1, d) + pos_t.view(1, 1, -1, d)
        out = self.transformer(k.reshape(b, f * n, d)).reshape(b, f, n, d)
        return self.norm_out(out)

    def embed(self, start: torch.Tensor, end: torch.Tensor, frames: int) -> torch.Tensor:
        """Keyframes A, B (B, 4, H, W) in [0, 1] → per-frame embeddings (B, frames, L, hidden)."""
        return self.predict(self.encode_images(start), self.encode_images(end), frames)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {k: p for k, p in self.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------- 3. weights file


def save_smp(smp: SemanticMotionPredictor, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Weights (the tiny encoder included; a CLIP tower never), stored as `dtype` (half by default:
    the shipped tiny file is 1.8 MB), + the config as JSON metadata. Loading casts to float32."""
    sd = {k: v.detach().cpu().to(dtype).contiguous() for k, v in smp.state_dict().items()}
    return save_safetensors(sd, path, metadata={"smp_config": smp.config.to_json()})


def load_smp(path: str | Path, image_encoder: nn.Module | None = None) -> SemanticMotionPredictor:
    """A predictor from :func:`save_smp`'s file, loaded strictly (one error line naming the key)."""
    meta = read_metadata(path)
    if "smp_config" not in meta:
        raise WeightsError(f"{path} is not a motion predictor file (no smp_config in its metadata)")
    config = SMPConfig(**json.loads(meta["smp_config"]))
    smp = SemanticMotionPredictor(config, image_encoder)
    load_strict(smp, {k: v.float() for k, v in load_state_dict(path).items()}, what=str(path))
    return smp.eval().requires_grad_(False)


# --------------------------------------------------------------------------- 4. attaching to a DiT


def dit_sizes(model: nn.Module) -> dict:
    """The SMPConfig fields a Wan DiT fixes: attention width, heads and block count."""
    base = unwrap(model)
    cfg = base.config
    return {"inner_dim": int(cfg.num_attention_heads * cfg.attention_head_dim),
            "dit_heads": int(cfg.num_attention_heads), "num_blocks": len(blocks_of(base))}


def attach_smp(model: nn.Module, smp: SemanticMotionPredictor) -> Attachment:
    """Put the predictor's extra cross-attention on every block's ``attn2`` (joining whatever staged
    behaviours are there); ``.remove()`` takes exactly these off again."""
    sizes = dit_sizes(model)
    c = smp.config
    if (c.inner_dim, c.dit_heads, c.num_blocks) != (sizes["inner_dim"], sizes["dit_heads"], sizes["num_blocks"]):
        raise WeightsError(f"motion predictor made for a DiT of width {c.inner_dim}, {c.dit_heads} heads, "
                           f"{c.num_blocks} blocks; this one has {sizes['inner_dim']}, {sizes['dit_heads']}, "
                           f"{sizes['num_blocks']}")
    return attach(model, lambda i: smp.cross[i], role="attn2")


def latent_frames_for(frames: int, temporal_factor: int) -> int:
    """Latent frames the causal VAE gives for ``frames`` pixel frames (decode ≥ frames, then trim)."""
    return 1 + math.ceil((frames - 1) / temporal_factor)
