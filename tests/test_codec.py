"""`rgba encode` / `rgba decode`: padding to 4k+1 and trimming back, metadata, shape and preset checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_test_preset

from rgbacli.engine import Engine
from rgbacli.errors import RgbaError, UsageError
from rgbacli.media import Clip, read_clip, write_clip
from rgbacli.pipelines.codec import check_latents, encode_clip, pad_frames


def _clip(t=7, h=16, w=16, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, h, w, 4), dtype=np.uint8)
    frames[:, :4, :, 3] = 0
    return Clip(frames, fps=12.0)


def test_pad_frames_repeats_last():
    f = np.arange(7)[:, None, None, None] * np.ones((7, 2, 2, 4))
    p = pad_frames(f)
    assert p.shape[0] == 9 and (p[7] == f[6]).all() and (p[8] == f[6]).all()
    assert pad_frames(f[:5]).shape[0] == 5 and pad_frames(f[:1]).shape[0] == 1


def test_encode_metadata_and_checks(tiny_preset):
    eng = Engine(str(tiny_preset), device="cpu")
    z, meta = encode_clip(eng, _clip())
    assert tuple(z.shape) == (1, 4, 5, 8, 8)  # 7 frames → padded 9 → 1 + 8/2 latent frames; 16/2 spatial
    assert meta["frames"] == 7 and meta["padded_frames"] == 9 and meta["fps"] == 12.0
    check_latents(eng, z, meta)
    with pytest.raises(RgbaError, match=r"expected \(1, 4, 5, 8, 8\)"):
        check_latents(eng, z[:, :, :3], meta)
    with pytest.raises(UsageError, match="multiple of 2"):
        encode_clip(eng, _clip(h=15))


def test_cli_encode_decode_roundtrip(cli, tmp_path, tiny_preset):
    src = tmp_path / "in.apng"
    write_clip(_clip(), src)
    lat = tmp_path / "z.safetensors"
    r = cli("encode", src, "-o", lat, "--preset", tiny_preset, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["latent_shape"] == [1, 4, 5, 8, 8] and doc["frames"] == 7 and doc["preset"] == "test-tiny"
    out = tmp_path / "out.mkv"
    r = cli("decode", lat, "-o", out, "--preset", tiny_preset, "--json")
    assert r.returncode == 0, r.stderr
    back = read_clip(out)
    assert back.frames.shape == (7, 16, 16, 4) and back.fps == pytest.approx(12.0)
    # the recorded preset is checked: latents from another preset are refused
    other = write_test_preset(tmp_path, "other")
    r = cli("decode", lat, "-o", tmp_path / "o2.mkv", "--preset", other)
    assert r.returncode == 2 and "made with preset 'test-tiny'" in r.stderr
    assert not (tmp_path / "o2.mkv").exists()
    # corrupt and foreign files: one line, non-zero, nothing written
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    r = cli("decode", bad, "-o", tmp_path / "o3.mkv", "--preset", tiny_preset)
    assert r.returncode == 1 and "is not a safetensors file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("encode", tmp_path / "missing.mov", "-o", tmp_path / "z2.safetensors", "--preset", tiny_preset)
    assert r.returncode != 0 and "missing.mov" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "z2.safetensors").exists()
