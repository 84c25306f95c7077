"""The engine: one place that turns a preset into loaded components on a device.

Every command asks the engine for what it needs (`engine.vae`, `engine.transformer`,
`engine.text_encoder`); each component is built once, in the preset's format, with its adapters
merged, then moved to the chosen device/dtype. With `offload=True` components wait on the CPU
and visit the GPU only while they run (`with engine.on_device(module):`).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import torch

from rgbacli.device import resolve_device, resolve_dtype
from rgbacli.errors import UsageError, WeightsError
from rgbacli.presets import Preset, load_preset, require
from rgbacli.weights.io import load_state_dict


class Engine:
    """Loaded components of one preset on one device; lazily built, cached for the process."""

    def __init__(self, preset: Preset | str, device: str = "auto", dtype: str = "auto",
                 offload: bool = False, weights_dir: str | None = None):
        self.preset = load_preset(preset) if isinstance(preset, str) else preset
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.offload = offload and self.device.type == "cuda"
        self.weights_dir = weights_dir

    # ----------------------------------------------------------------- placement
    @property
    def home(self) -> torch.device:
        """Where components live between uses: the CPU when offloading, else the run device."""
        return torch.device("cpu") if self.offload else self.device

    def _place(self, module: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
        module.requires_grad_(False).eval()
        dtype = dtype or self.dtype
        current = next(module.parameters()).dtype
        return module.to(device=self.home) if current == dtype else module.to(device=self.home, dtype=dtype)

    @contextmanager
    def on_device(self, module: torch.nn.Module):
        """Move a component to the run device for the duration of the block (no-op without offload)."""
        if not self.offload:
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _path(self, role: str) -> Path | None:
        return require(self.preset, role, self.weights_dir)

    def _component(self, name: str) -> dict:
        comp = self.preset.components.get(name)
        if not comp:
            raise UsageError(f"preset '{self.preset.name}' has no [{name}] section")
        return comp

    # ----------------------------------------------------------------- components
    @cached_property
    def text_encoder(self):
        """The preset's text encoder: `encode(prompts) -> (B, L, D)` hidden states, padding zeroed."""
        comp = self._component("text_encoder")
        kind = comp.get("kind", "tiny")
        if kind == "tiny":
            from rgbacli.models.text_encoder import TinyTextEncoder

            if comp.get("format") == "random":
                enc = TinyTextEncoder(**comp.get("config", {}))
            else:
                enc = TinyTextEncoder.load(self._path("text_encoder"))
            return self._place(enc, torch.float32)
        if kind in ("umt5", "t5"):
            from rgbacli.models.hf_text_encoder import HFTextEncoder

            enc = HFTextEncoder.load(kind, self._path("text_encoder"), self._path("text_encoder.tokenizer"),
                                     max_length=int(comp.get("config", {}).get("max_length", 512 if kind == "umt5" else 226)))
            return self._place(enc)
        raise UsageError(f"preset '{self.preset.name}': unknown text encoder kind '{kind}'")

    @cached_property
    def transformer(self):
        """The DiT with the preset's adapters merged (DoRA, distill LoRA) or attached (alpha tokens)."""
        comp = self._component("transformer")
        fmt = comp.get("format", "diffusers")
        cls = _transformer_class(self.preset.family)
        if fmt == "diffusers":
            path = self._path("transformer")
            try:
                model = cls.from_pretrained(str(path), local_files_only=True, torch_dtype=torch.float32)
            except (OSError, ValueError) as e:
                raise WeightsError(f"cannot load transformer from {path}: {str(e).splitlines()[0]}") from None
        elif fmt == "random":
            with seeded(int(comp.get("seed", 0))):
                model = cls(**comp.get("config", {}))
        elif fmt == "rgbacli":
            from rgbacli.weights.own import load_model

            model = load_model(cls, self._path("transformer"), comp.get("config"))
        else:
            raise UsageError(f"preset '{self.preset.name}': unknown transformer format '{fmt}'")
        model = self._apply_adapters(model, comp)
        return self._place(model)

    def _apply_adapters(self, model, comp: dict):
        """Merge DoRA / LoRA files into the base weights; wrap for alpha tokens (TransPixar)."""
        from rgbacli.models import dora

        for i, ad in enumerate(comp.get("adapters", [])):
            kind = ad.get("kind")
            path = self._path(f"transformer.{kind}[{i}]")
            if path is None:  # optional and absent
                continue
            scale = float(ad.get("scale", 1.0))
            if kind == "dora":
                dora.merge_dora(model, load_state_dict(path), scale=scale)
            elif kind == "lora":
                dora.merge_lora(model, load_state_dict(path), scale=scale)
            elif kind == "alpha-tokens":
                from rgbacli.models.alpha_tokens import AlphaTokenTransformer, load_alpha_token_weights

                model = AlphaTokenTransformer(model, rank=int(ad.get("rank", 128)),
                                              lora_alpha=float(ad.get("alpha", 1.0)))
                load_alpha_token_weights(model, path)
            else:
                raise UsageError(f"preset '{self.preset.name}': unknown adapter kind '{kind}'")
        if self.preset.backend == "alpha-tokens" and not hasattr(model, "alpha_lora"):
            raise UsageError(f"preset '{self.preset.name}' uses the alpha-tokens backend but names no "
                             "alpha-tokens adapter file")
        return model

    @cached_property
    def vae(self):
        """The RGBA VAE (wan-alpha backend) or the plain video VAE (alpha-tokens backend)."""
        from rgbacli.vae_loading import load_vae

        return self._place(load_vae(self))

    def describe(self) -> dict:
        """A JSON-friendly summary of what runs where."""
        return {"preset": self.preset.name, "backend": self.preset.backend, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "offload": self.offload}


@contextmanager
def seeded(seed: int):
    """Random initialisation that is the same in every process, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _transformer_class(family: str):
    if family == "wan":
        from diffusers import WanTransformer3DModel

        return WanTransformer3DModel
    if family == "cogvideox":
        from diffusers import CogVideoXTransformer3DModel

        return CogVideoXTransformer3DModel
    raise UsageError(f"unknown model family '{family}' (use wan or cogvideox)")
