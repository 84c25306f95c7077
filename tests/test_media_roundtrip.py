"""Every writable format reads back within its stated error (lossless ones exactly)."""

from __future__ import annotations

import numpy as np
import pytest

from rgbacli.media import Clip, read_clip, write_clip
from rgbacli.media.samples import varied_alpha_frames

FRAMES = varied_alpha_frames(5, 32, 48)
VISIBLE = FRAMES[..., 3] > 0  # colour under alpha 0 is not meaningful for lossy codecs


def roundtrip(tmp_path, name: str, frames=FRAMES, fps: float = 24.0, **kw) -> Clip:
    out = write_clip(Clip(frames, fps), tmp_path / name, **kw)
    return read_clip(out, **kw)


@pytest.mark.parametrize("name", ["seq.%04d.png", "framesdir", "clip.mkv", "clip.apng"])
def test_lossless_formats_are_exact(tmp_path, name):
    back = roundtrip(tmp_path, name)
    assert back.had_alpha and back.fps == 24.0
    np.testing.assert_array_equal(back.frames, FRAMES)


def test_png_sequence_names_are_one_based_and_padded(tmp_path):
    write_clip(Clip(FRAMES), tmp_path / "shot.%04d.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"shot.000{i}.png" for i in range(1, 6)]
    assert read_clip(tmp_path, fps=12).fps == 12  # a directory of PNGs reads too, fps as given


def test_webp_is_lossless_where_visible_and_keeps_fps(tmp_path):
    back = roundtrip(tmp_path, "clip.webp", fps=23.976)
    np.testing.assert_array_equal(back.frames[..., 3], FRAMES[..., 3])
    np.testing.assert_array_equal(back.frames[..., :3][VISIBLE], FRAMES[..., :3][VISIBLE])
    assert abs(back.fps - 24000 / 1001) < 1e-6


@pytest.mark.parametrize("name", ["one.png", "one.webp"])
def test_single_images_are_one_frame_clips(tmp_path, name):
    back = roundtrip(tmp_path, name, frames=FRAMES[:1])
    assert back.n_frames == 1
    np.testing.assert_array_equal(back.frames[..., 3], FRAMES[:1, ..., 3])
    np.testing.assert_array_equal(back.frames[..., :3][VISIBLE[:1]], FRAMES[:1, ..., :3][VISIBLE[:1]])


def test_prores_4444_within_two_levels(tmp_path):
    back = roundtrip(tmp_path, "clip.mov", fps=30)
    err = np.abs(back.frames.astype(int) - FRAMES)
    assert back.had_alpha and back.fps == 30
    assert err[..., 3].max() <= 2
    assert err[..., :3][VISIBLE].max() <= 2


def test_vp9_webm_keeps_alpha(tmp_path):
    back = roundtrip(tmp_path, "clip.webm")
    assert back.had_alpha
    a_in, a_out = FRAMES[..., 3].astype(int), back.frames[..., 3].astype(int)
    band = FRAMES[..., 3] == 128
    # the half-transparent band must come back half-transparent (the native vp9 decoder gives 255)
    assert abs(a_out[band].mean() - 128) < 4 and a_out[band].max() < 200
    assert np.abs(a_out - a_in).mean() < 3
    assert np.corrcoef(a_out.ravel(), a_in.ravel())[0, 1] > 0.99
    solid = FRAMES[..., 3] == 255
    assert np.abs(back.frames[..., :3].astype(int) - FRAMES[..., :3])[solid].mean() < 6


def test_gif_alpha_is_one_bit_and_warns(tmp_path, capsys):
    back = roundtrip(tmp_path, "clip.gif")
    assert "1-bit" in capsys.readouterr().err
    assert set(np.unique(back.frames[..., 3])) <= {0, 255}
    np.testing.assert_array_equal(back.frames[..., 3] == 255, FRAMES[..., 3] >= 128)
    assert back.fps == 24.0


def test_mp4_is_opaque_and_warns(tmp_path, capsys):
    back = roundtrip(tmp_path, "clip.mp4")
    assert "no alpha" in capsys.readouterr().err
    assert not back.had_alpha and (back.frames[..., 3] == 255).all()
    solid = FRAMES[..., 3] == 255
    assert np.abs(back.frames[..., :3].astype(int) - FRAMES[..., :3])[solid].mean() < 8


def test_float_frames_are_written_as_uint8(tmp_path):
    back = roundtrip(tmp_path, "f.mkv", frames=FRAMES.astype(np.float32) / 255)
    np.testing.assert_array_equal(back.frames, FRAMES)


def test_premultiplied_write_and_read_round_trip(tmp_path):
    # written premultiplied: the file holds colour × alpha …
    write_clip(Clip(FRAMES), tmp_path / "p.mkv", premultiplied=True)
    raw = read_clip(tmp_path / "p.mkv")
    expected = np.rint(FRAMES[..., :3] * (FRAMES[..., 3:4] / 255.0))
    np.testing.assert_array_equal(raw.frames[..., :3], expected)
    # … and reading it as premultiplied gives straight alpha back (within rounding of 255/α)
    back = read_clip(tmp_path / "p.mkv", premultiplied=True)
    a = FRAMES[..., 3]
    err = np.abs(back.frames[..., :3].astype(int) - FRAMES[..., :3])
    assert (back.frames[..., :3][a == 0] == 0).all()
    assert (err[a > 0] <= np.ceil(255 / a[a > 0] / 2)[:, None]).all()
    np.testing.assert_array_equal(back.frames[..., 3], a)


def test_video_without_alpha_reads_opaque(tmp_path):
    opaque = FRAMES.copy()
    opaque[..., 3] = 255
    back = roundtrip(tmp_path, "o.mp4", frames=opaque)
    assert back.had_alpha is False and (back.frames[..., 3] == 255).all()


def test_bundled_sample_reads_with_alpha():
    from rgbacli.media.samples import sample_path

    p = sample_path()
    assert p.stat().st_size < 300_000
    clip = read_clip(p)
    assert clip.had_alpha and clip.n_frames == 24 and clip.size == (128, 96) and clip.fps == 12
    a = clip.frames[..., 3]
    assert (a == 0).any() and (a == 255).any() and ((a > 0) & (a < 255)).any()


def test_odd_sizes(tmp_path):
    odd = varied_alpha_frames(2, 33, 47)
    for name in ["odd.webm", "odd.mov", "odd.mkv"]:
        assert roundtrip(tmp_path, name, frames=odd).frames.shape == odd.shape
    # x264 4:2:0 needs even sizes: the edge row/column is repeated
    assert roundtrip(tmp_path, "odd.mp4", frames=odd).frames.shape == (2, 34, 48, 4)
