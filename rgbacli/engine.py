"""The engine: one place that turns a preset into loaded components on a device.

Every command asks the engine for what it needs: `engine.component("vae")`, any section the
preset has (rgbacli/components.py says what each section builds), and `engine.backend`, the
object the samplers call (rgbacli/backends.py). Each component is built once, in the preset's
format, with its adapters applied, then moved to the chosen device/dtype. With `offload=True`
components wait on the CPU and visit the GPU only while they run (`with engine.on_device(m):`).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property

import torch
from torch import nn

from rgbacli import components
from rgbacli.backends import BACKENDS, Backend
from rgbacli.device import resolve_device, resolve_dtype
from rgbacli.errors import UsageError
from rgbacli.presets import Preset, check_files, load_preset, resolve_files


class Engine:
    """Loaded components of one preset on one device; lazily built, cached for the process."""

    def __init__(self, preset: Preset | str, device: str = "auto", dtype: str = "auto",
                 offload: bool = False, weights_dir: str | None = None):
        self.preset = load_preset(preset) if isinstance(preset, str) else preset
        components.validate(self.preset)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.offload = offload and self.device.type == "cuda"
        self.weights_dir = weights_dir
        self._build = components.BuildContext(self.preset, weights_dir)
        self._built: dict[str, nn.Module] = {}

    # ----------------------------------------------------------------- placement
    @property
    def home(self) -> torch.device:
        """Where components live between uses: the CPU when offloading, else the run device."""
        return torch.device("cpu") if self.offload else self.device

    def _place(self, module: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
        module.requires_grad_(False).eval()
        dtype = dtype or self.dtype
        current = next(module.parameters()).dtype
        return module.to(device=self.home) if current == dtype else module.to(device=self.home, dtype=dtype)

    @contextmanager
    def on_device(self, module: nn.Module):
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

    # ----------------------------------------------------------------- components
    def check_weights(self, sections: list[str] | None = None) -> None:
        """Before any work: every required weight file of these sections (default: all) is here,
        else one WeightsError naming each missing file, its repository, its folder and the download
        command per repository."""
        files = resolve_files(self.preset, self.weights_dir)
        if sections is not None:
            files = [f for f in files if f.role.split(".")[0] in sections]
        check_files(self.preset, self.weights_dir, files)

    def has(self, name: str) -> bool:
        """Whether the preset has a `[name]` section."""
        return name in self.preset.components

    def component(self, name: str) -> nn.Module:
        """The preset's `[name]` component, built with its adapters on first use."""
        if name not in self._built:
            section = self.preset.components.get(name)
            if section is None:
                raise UsageError(f"preset '{self.preset.name}' has no [{name}] section")
            built = components.COMPONENTS.get(name, self._build.where())(self._build, section)
            module = components.apply_adapters(built.module, name, section, self._build)
            if name == "transformer":
                self.backend_class.check_transformer(module, self._build.where())
            self._built[name] = self._place(module, built.dtype)
        return self._built[name]

    @property
    def backend_class(self) -> type[Backend]:
        return BACKENDS.get(self.preset.backend, self._build.where())

    @cached_property
    def backend(self) -> Backend:
        """The preset's backend around the loaded DiT and VAE (both built here if not yet)."""
        return self.backend_class(self.component("transformer"), self.component("vae"))

    def describe(self) -> dict:
        """A JSON-friendly summary of what runs where."""
        return {"preset": self.preset.name, "backend": self.preset.backend, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "offload": self.offload}
