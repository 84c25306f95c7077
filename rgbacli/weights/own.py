"""Our single-file format for diffusers models: safetensors weights + the model config as JSON metadata.

Used for the embedded model's base VAE and DiT; a DiT file may also carry `abs_pos` (the size of
the absolute position table, rgbacli/models/position_embedding.py) and `text_mask` (cross-attention
skips padded text, rgbacli/models/text_mask.py), both re-attached on load.
"""

from __future__ import annotations

import json
from pathlib import Path

from rgbacli.errors import WeightsError
from rgbacli.models.position_embedding import attach_position_embedding
from rgbacli.models.text_mask import enable_text_mask
from rgbacli.weights.io import load_state_dict, load_strict, read_metadata, save_safetensors


def save_model(model, path: Path, **extra) -> None:
    """Write weights and `model.config` (plus any extra JSON-able metadata) to one file, atomically."""
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    meta = {"config": json.dumps(config), **{k: json.dumps(v) for k, v in extra.items()}}
    save_safetensors(model.state_dict(), path, metadata=meta)


def load_model(cls, path: Path, config: dict | None = None):
    """Rebuild `cls` from the stored config (or `config`) and load the weights strictly."""
    meta = read_metadata(path)
    cfg = json.loads(meta["config"]) if "config" in meta else config
    if not cfg:
        raise WeightsError(f"{path} has no model config in its metadata and the preset gives none")
    model = cls(**cfg)
    if "abs_pos" in meta:
        attach_position_embedding(model, **json.loads(meta["abs_pos"]))
    if json.loads(meta.get("text_mask", "false")):
        enable_text_mask(model)
    load_strict(model, load_state_dict(path), what=str(path))
    return model.eval().requires_grad_(False)
