"""Engine seams: components by name from any preset section, adapter kinds and backends from
registries, one clear line for an unknown name."""

from __future__ import annotations

import pytest
import torch
from conftest import write_test_preset

from rgbacli.backends import AlphaTokenBackend, WanAlphaBackend
from rgbacli.components import ADAPTERS, COMPONENTS, Built
from rgbacli.engine import Engine
from rgbacli.errors import UsageError


def test_unknown_section_names_the_preset_and_the_section(tmp_path, cli):
    preset = write_test_preset(tmp_path, "typo")
    preset.write_text(preset.read_text() + '\n[image_encodr]\nformat = "random"\n')
    with pytest.raises(UsageError, match=r"preset 'typo': unknown section 'image_encodr' \(known: text_encoder, "
                                         r"transformer, vae"):
        Engine(str(preset), device="cpu")
    r = cli("generate", "a red orb", "--preset", preset, "-o", tmp_path / "o.apng")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown section 'image_encodr'" in r.stderr
    assert not (tmp_path / "o.apng").exists()


def test_unknown_adapter_kind_names_the_section(tmp_path):
    preset = write_test_preset(tmp_path, "k", adapters='adapters = [{ kind = "dorra", path = "x.safetensors" }]')
    with pytest.raises(UsageError, match=r"preset 'k' \[transformer\]: unknown adapter kind 'dorra' "
                                         r"\(known: dora, lora, alpha-tokens"):
        Engine(str(preset), device="cpu")


def test_a_new_section_and_adapter_kind_are_registrations_only(tmp_path):
    """A new section (`[depth_encoder]`) and a new adapter kind need a registry entry, no parser or engine edit."""
    def build(ctx, section):
        return Built(torch.nn.Linear(int(section["config"]["width"]), 2))

    def double(module, spec, path, ctx):
        with torch.no_grad():
            module.weight.mul_(float(spec["scale"]))
        return module

    (tmp_path / "unused.safetensors").write_bytes(b"")
    preset = write_test_preset(tmp_path, "extra")
    preset.write_text(preset.read_text() + '\n[depth_encoder]\nconfig = { width = 3 }\n'
                      'adapters = [{ kind = "test-double", path = "unused.safetensors", scale = 2.0 }]\n')
    COMPONENTS.add("depth_encoder", build)
    ADAPTERS.add("test-double", double)
    try:
        eng = Engine(str(preset), device="cpu")
        enc = eng.component("depth_encoder")
        assert isinstance(enc, torch.nn.Linear) and enc.in_features == 3 and not enc.weight.requires_grad
        assert eng.component("depth_encoder") is enc  # built once
        roles = [f.role for f in eng.preset.files()]
        assert "depth_encoder.test-double[0]" in roles  # its files are listed like any other section's
    finally:
        COMPONENTS.remove("depth_encoder")
        ADAPTERS.remove("test-double")


def test_missing_section_and_backend_objects(tmp_path):
    eng = Engine(str(write_test_preset(tmp_path, "w")), device="cpu")
    assert type(eng.backend) is WanAlphaBackend and eng.backend.transformer is eng.component("transformer")
    with pytest.raises(UsageError, match=r"preset 'w' has no \[motion_predictor\] section"):
        eng.component("motion_predictor")
    from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights

    save_alpha_token_weights(AlphaTokenTransformer(Engine(str(write_test_preset(tmp_path, "b")), device="cpu")
                                                   .component("transformer"), rank=2, lora_alpha=2.0),
                             tmp_path / "at.safetensors")
    at = Engine(str(write_test_preset(tmp_path, "at", backend="alpha-tokens", adapters='adapters = [{ kind = '
                                      '"alpha-tokens", path = "at.safetensors", rank = 2, alpha = 2.0 }]')), device="cpu")
    assert type(at.backend) is AlphaTokenBackend and at.backend.copies == 2
    none = Engine(str(write_test_preset(tmp_path, "none", backend="alpha-tokens")), device="cpu")
    with pytest.raises(UsageError, match="alpha-tokens backend but names no alpha-tokens adapter file"):
        none.component("transformer")
    bad = write_test_preset(tmp_path, "bad", backend="alpha-tokenz")
    with pytest.raises(UsageError, match=r"preset 'bad': unknown backend 'alpha-tokenz' \(known: wan-alpha, alpha-tokens\)"):
        Engine(str(bad), device="cpu")
