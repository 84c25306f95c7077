"""Adapters know their base (issue #16): the files we write carry the base's shape and weight
fingerprints, checked at load; released files without one are checked by shape; a misfit is one
clear error naming the file and the preset."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from rgbacli import components
from rgbacli.errors import WeightsError
from rgbacli.models import dora
from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights
from rgbacli.presets import load_preset
from rgbacli.weights.io import BASE_KEY, base_fingerprint, read_metadata

from conftest import write_test_preset


def wan(seed=0, heads=2):
    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
                                 rope_max_seq_len=32).eval()


def apply(kind, base, path, spec=None):
    """Through the preset path: the section's adapters on `base`, fingerprinted before the first."""
    ctx = components.BuildContext(load_preset("tiny"))
    section = {"adapters": [{"kind": kind, "path": str(path), **(spec or {})}]}
    ctx.path = lambda role: path  # the file given, wherever it is
    return components.apply_adapters(base, "transformer", section, ctx)


def alpha_file(base, path):
    model = AlphaTokenTransformer(base, rank=2, lora_alpha=2.0)
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.normal_(std=0.1)
    save_alpha_token_weights(model, path)
    model.remove()
    return path


def dora_file(base, path):
    fp = base_fingerprint(base)  # before peft injects the adapter
    dora.add_dora_adapter(base, rank=2)
    with torch.no_grad():
        for n, p in base.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    dora.save_adapter(dora.export_dora_state_dict(base), path, fp)
    return path


def test_written_files_carry_the_base_fingerprint(tmp_path):
    base = wan()
    fp = base_fingerprint(base)
    import json

    assert json.loads(read_metadata(alpha_file(base, tmp_path / "a.safetensors"))[BASE_KEY]) == fp
    assert json.loads(read_metadata(dora_file(wan(), tmp_path / "d.safetensors"))[BASE_KEY]) == fp


@pytest.mark.parametrize("kind", ["alpha-tokens", "dora"])
def test_own_files_check_base_shapes_and_weights(tmp_path, kind):
    make = alpha_file if kind == "alpha-tokens" else dora_file
    spec = {"rank": 2, "alpha": 2.0} if kind == "alpha-tokens" else {}
    path = make(wan(0), tmp_path / f"{kind}.safetensors")
    apply(kind, wan(0), path, spec)  # its own base: loads
    with pytest.raises(WeightsError, match=r"was trained on other base weights \(fingerprint [0-9a-f]{16}, this base "):
        apply(kind, wan(1), path, spec)  # same shapes, other weights
    with pytest.raises(WeightsError, match="was made for another base model"):
        apply(kind, wan(0, heads=4), path, spec)  # another model


def test_released_files_without_fingerprint_are_checked_by_shape(tmp_path):
    from safetensors.torch import save_file

    small = {f"diffusion_model.blocks.{i}.self_attn.q.{k}": v for i in range(2) for k, v in
             (("lora_A.default.weight", torch.zeros(2, 16)), ("lora_B.default.weight", torch.zeros(16, 2)),
              ("lora_magnitude_vector.default.weight", torch.ones(16)))}
    save_file(small, str(tmp_path / "released.safetensors"))
    apply("dora", wan(0), tmp_path / "released.safetensors")  # fits: no fingerprint needed
    with pytest.raises(WeightsError) as e:
        apply("dora", wan(0, heads=4), tmp_path / "released.safetensors")
    msg = str(e.value)
    assert "released.safetensors does not fit this base model" in msg and "\n" not in msg
    base = wan(0, heads=4)
    alpha = AlphaTokenTransformer(wan(0), rank=2, lora_alpha=2.0)
    from rgbacli.models.alpha_tokens import alpha_token_state_dict

    save_file(alpha_token_state_dict(alpha), str(tmp_path / "released_alpha.safetensors"))  # no metadata
    with pytest.raises(WeightsError, match="released_alpha.safetensors does not fit this base model"):
        apply("alpha-tokens", base, tmp_path / "released_alpha.safetensors", {"rank": 2, "alpha": 2.0})


def test_cli_refuses_an_adapter_made_for_another_base(cli, tmp_path):
    from rgbacli.engine import Engine

    plain = write_test_preset(tmp_path, "plain")
    other = Engine(str(plain), device="cpu").component("transformer")  # the preset's random base (seed 0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)  # another training of the same model
    alpha_file(other, tmp_path / "at.safetensors")
    preset = write_test_preset(tmp_path, "at", backend="alpha-tokens",
                               adapters='adapters = [{ kind = "alpha-tokens", path = "at.safetensors", rank = 2, alpha = 2.0 }]')
    r = cli("generate", "a red orb", "--preset", str(preset), "-o", str(tmp_path / "o.apng"))
    assert r.returncode == 1, r.stderr
    assert "trained on other base weights" in r.stderr and "preset 'at' [transformer]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.apng").exists()


def test_shipped_tiny_adapters_load():
    """The embedded presets still load (their files carry the shipped base's fingerprint)."""
    from rgbacli.engine import Engine
    from rgbacli.presets import resolve_files
    from rgbacli.weights.io import stored_base

    for name, role in (("tiny", "transformer.dora[0]"), ("tiny-alpha-tokens", "transformer.alpha-tokens[0]")):
        path = {f.role: f.found for f in resolve_files(load_preset(name))}[role]
        assert stored_base(path) is not None
        Engine(name, device="cpu").component("transformer")
