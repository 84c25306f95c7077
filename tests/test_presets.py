"""Presets: parsing, validation errors, offline weight search, `rgba models` output."""

from __future__ import annotations

import json

import pytest

from rgbacli.errors import UsageError, WeightsError
from rgbacli.presets import default_preset, load_preset, require, resolve_files, shipped_presets


def test_shipped_presets_parse():
    names = set(shipped_presets())
    assert {"tiny", "wan-alpha-1.3b", "wan-alpha-14b", "transpixar-cogvideox-5b"} <= names
    p = load_preset("wan-alpha-14b")
    assert p.sampling == {"width": 832, "height": 480, "frames": 81, "fps": 16.0, "steps": 4,
                          "guidance": 1.0, "shift": 5.0, "solver": "unipc", "negative": ""}
    roles = [f.role for f in p.files()]
    assert "vae.decoder_lora" in roles and "transformer.dora[0]" in roles
    assert load_preset("transpixar-cogvideox-5b").backend == "alpha-tokens"


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(UsageError, match="unknown preset 'nope'"):
        load_preset("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[sampling]\nstepz = 3\n")
    with pytest.raises(UsageError, match="unknown sampling key 'stepz'"):
        load_preset(str(bad))
    bad.write_text("name = = 1")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_preset(str(bad))
    with pytest.raises(UsageError, match="does not exist"):
        load_preset(str(tmp_path / "missing.toml"))


def test_weight_search_order_and_hf_cache(tmp_path, monkeypatch):
    p = load_preset("wan-alpha-14b")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "decoder.bin").write_bytes(b"x")
    monkeypatch.setenv("RGBA_WEIGHTS", str(b))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert require(p, "vae.decoder_lora") == b / "decoder.bin"
    (a / "decoder.bin").write_bytes(b"y")
    assert require(p, "vae.decoder_lora", weights_dir=a) == a / "decoder.bin"  # --weights-dir wins
    # A diffusers folder inside a hub snapshot: "Repo/sub" in the preset is "sub" in the snapshot.
    snap = tmp_path / "hub" / "models--Wan-AI--Wan2.1-T2V-14B-Diffusers" / "snapshots" / "abc" / "vae"
    snap.mkdir(parents=True)
    assert require(p, "vae") == snap
    with pytest.raises(WeightsError, match=r"preset 'wan-alpha-14b' is missing 3 of 3 .*\n.*\n  transformer\.dora\[0\]: "
                       r"epoch-13-1500\.safetensors from htdong/Wan-Alpha"):
        require(p, "transformer.dora[0]")
    files = {f.role: f for f in resolve_files(p)}
    assert files["vae.encoder"].optional and files["vae.encoder"].found is None


def test_embedded_preset_weights_dir_overrides_package(tmp_path, monkeypatch):
    """`--weights-dir runs/mine` tries a trained run on the tiny preset; RGBA_WEIGHTS does not shadow
    the shipped files."""
    p = load_preset("tiny")
    shipped = require(p, "transformer")
    assert "weights" in shipped.parts and shipped.name == "transformer.safetensors"
    env, run = tmp_path / "env", tmp_path / "run"
    env.mkdir()
    run.mkdir()
    (env / "transformer.safetensors").write_bytes(b"env")
    monkeypatch.setenv("RGBA_WEIGHTS", str(env))
    assert require(p, "transformer") == shipped
    (run / "transformer.safetensors").write_bytes(b"run")
    assert require(p, "transformer", weights_dir=run) == run / "transformer.safetensors"
    assert require(p, "vae", weights_dir=run) == shipped.parent / "vae.safetensors"  # the rest from the package


def test_default_preset_is_tiny_without_real_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("RGBA_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert default_preset() == "tiny"


def test_models_cli(cli, tmp_path):
    r = cli("models", "wan-alpha-14b", "--json", env={"HF_HUB_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (entry,) = doc["presets"]
    assert entry["preset"] == "wan-alpha-14b" and entry["ready"] is False
    assert any(f["file"] == "decoder.bin" and f["found"] is None for f in entry["files"])
    r = cli("models", "nope")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "unknown preset 'nope'" in r.stderr
    assert "Traceback" not in r.stderr
