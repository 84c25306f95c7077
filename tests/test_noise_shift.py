"""Wan-Alpha v2.0's noise-mean shift (rgbacli/models/noise_shift.py) and the wan-alpha-v2-14b preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rgbacli.errors import UsageError
from rgbacli.models.noise_shift import (NoiseShift, ellipse_path, gaussian_ellipse, load_mask, parse_points,
                                        resize_mask, shift_noise)


def reference_ellipse(shape, mean, axes, angle, clip_exp=-50):
    """The reference's create_gaussian_mask_from_ellipse (gen_gaussian_mask.py), in pixels."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    t = np.deg2rad(angle)
    xs, ys = x - mean[0], y - mean[1]
    xr, yr = xs * np.cos(t) + ys * np.sin(t), -xs * np.sin(t) + ys * np.cos(t)
    sx, sy = max(axes[0] / 2.0, 1e-2), max(axes[1] / 2.0, 1e-2)
    g = np.exp(np.clip(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2), clip_exp, 0))
    return ((g - g.min()) / (g.max() - g.min())).astype(np.float32)


def test_ellipse_matches_the_reference_formula():
    h, w = 12, 20
    got = gaussian_ellipse(h, w, [(0.25, 0.5), (0.75, 0.3)], (0.4, 0.5), angle=30.0)
    assert got.shape == (2, h, w)
    for i, (fx, fy) in enumerate([(0.25, 0.5), (0.75, 0.3)]):
        ref = reference_ellipse((h, w), (fx * w - 0.5, fy * h - 0.5), (0.4 * w, 0.5 * h), 30.0)
        np.testing.assert_allclose(got[i].numpy(), ref, atol=1e-6)
    assert float(got.amax()) == 1.0 and float(got.amin()) == 0.0


def test_shift_adds_bf16_mean_outside_the_mask():
    noise = torch.randn(2, 3, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    g = gaussian_ellipse(6, 8, ellipse_path((0.2, 0.5), (0.8, 0.5), 4), (0.3, 0.3))
    out = shift_noise(noise, g, 0.05)
    delta = out - noise
    torch.testing.assert_close(delta, (1 - g)[None, None].expand_as(noise) * 0.050048828125)  # bf16(0.05)
    assert float(delta.amin()) == 0.0  # the ellipse centre keeps its noise
    # the moving ellipse: the unshifted spot travels from left to right over the latent frames
    cols = [int(g[t].sum(0).argmax()) for t in range(4)]
    assert cols == sorted(cols) and cols[0] < cols[-1]


def test_resize_and_load_mask_file(tmp_path):
    mask = torch.rand(3, 10, 16, generator=torch.Generator().manual_seed(1))
    same_t = resize_mask(mask, 3, 5, 8)
    torch.testing.assert_close(same_t, F.interpolate(mask[:, None], size=(5, 8), mode="bilinear",
                                                     align_corners=False)[:, 0])
    assert resize_mask(mask[0], 4, 5, 8).shape == (4, 5, 8)  # one frame: static
    more = resize_mask(mask, 5, 5, 8)
    assert more.shape == (5, 5, 8) and float(more.min()) >= 0 and float(more.max()) <= 1
    torch.save(mask, tmp_path / "gauss_mask")  # the reference ships a torch.save'd tensor, no extension
    torch.testing.assert_close(load_mask(tmp_path / "gauss_mask"), mask)
    np.save(tmp_path / "m.npy", mask.numpy())
    torch.testing.assert_close(load_mask(tmp_path / "m.npy"), mask)
    (tmp_path / "bad").write_bytes(b"not a tensor")
    with pytest.raises(UsageError, match="cannot read noise-shift mask"):
        load_mask(tmp_path / "bad")


def test_options():
    assert parse_points("0.3,0.5:0.7,0.5") == [(0.3, 0.5), (0.7, 0.5)]
    with pytest.raises(UsageError, match="bad point"):
        parse_points("0.3;0.5")
    assert NoiseShift.from_options(0.05, None, None, None) is None
    with pytest.raises(UsageError, match="not both"):
        NoiseShift.from_options(0.05, "m.pt", [[0.5, 0.5]], None)
    shift = NoiseShift.from_options(None, None, [[0.5, 0.5]], [0.2, 0.2])
    assert shift.mean == 0.05 and shift.mask(2, 4, 4).shape == (2, 4, 4)
    per_frame = NoiseShift.from_options(0.1, None, [[0.1, 0.5], [0.5, 0.5], [0.9, 0.5]], None)
    assert per_frame.mask(3, 4, 8).shape == (3, 4, 8)  # one centre per latent frame (trajectories)
    with pytest.raises(UsageError, match="3 ellipse centres for 5 latent frames"):
        per_frame.mask(5, 4, 8)


def test_pipeline_shifts_the_initial_noise(tiny_preset):
    from rgbacli.engine import Engine
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    pipe = TextToRGBAPipeline(Engine(str(tiny_preset), device="cpu"))
    plain = params_from_preset(pipe.engine, "a red orb")
    shifted = params_from_preset(pipe.engine, "a red orb", alpha_shift=0.5, alpha_center=[[0.25, 0.5]],
                                 alpha_size=[0.3, 0.3])
    a, b = pipe.prepare_latents(plain, [3]), pipe.prepare_latents(shifted, [3])
    g = gaussian_ellipse(a.shape[3], a.shape[4], [(0.25, 0.5)] * a.shape[2], (0.3, 0.3))
    torch.testing.assert_close(b - a, (1 - g)[None, None].expand_as(a) * 0.5)
    assert plain.sampling_key() != shifted.sampling_key()
    out = pipe(shifted)
    assert out.frames.shape[-1] == 4


def test_cli_errors(cli, tiny_preset, tmp_path):
    for args, msg in [(["--alpha-shift", "0.1"], "--alpha-shift needs --alpha-mask"),
                      (["--alpha-center", "0.5"], "bad point '0.5'"),
                      (["--alpha-mask", str(tmp_path / "none.pt")], "no such file"),
                      (["--alpha-size", "0.2,0.2"], "--alpha-size needs --alpha-center")]:
        r = cli("generate", "a red orb", "--preset", str(tiny_preset), "-o", str(tmp_path / "o.apng"), *args)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o.apng").exists()


def test_v2_preset_names_the_v2_files():
    from rgbacli.presets import load_preset

    p = load_preset("wan-alpha-v2-14b")
    files = {f.role: (f.path, f.repo, f.optional) for f in p.files()}
    assert files["transformer.dora[0]"] == ("Wan-Alpha-v2.0/t2v.safetensors", "htdong/Wan-Alpha-v2.0", False)
    assert files["vae.decoder_lora"] == ("Wan-Alpha-v2.0/decoder.bin", "htdong/Wan-Alpha-v2.0", False)
    assert files["vae.encoder"] == ("Wan-Alpha-v2-VAE.bin", "htdong/Wan-Alpha-VAE", True)
    assert p.sampling["alpha_shift"] == 0.05 and p.backend == "wan-alpha"
