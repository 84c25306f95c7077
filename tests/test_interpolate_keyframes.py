"""Keyframe reading for `rgba interpolate`: images, clips (A = last frame, B = first), opaque
inputs, resizing, and every error (one line, raised before any model work)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rgbacli.errors import MediaError, UsageError
from rgbacli.media import Clip, write_clip
from rgbacli.pipelines.keyframes import check_frames, read_keyframe, read_keyframes, resize_rgba


def disc(x: int, size: int = 32, colour=(255, 0, 0)) -> np.ndarray:
    """(size, size, 4) uint8: an opaque disc of radius 5 centred at (x, size/2) on transparency."""
    yy, xx = np.mgrid[:size, :size]
    inside = (xx - x) ** 2 + (yy - size // 2) ** 2 <= 25
    img = np.zeros((size, size, 4), np.uint8)
    img[inside] = (*colour, 255)
    return img


def test_png_keyframe_is_straight_float_rgba(tmp_path):
    write_clip(Clip(disc(10)[None]), tmp_path / "a.png")
    k = read_keyframe(str(tmp_path / "a.png"), "a")
    assert k.rgba.shape == (32, 32, 4) and k.rgba.dtype == np.float32
    assert k.rgba[16, 10].tolist() == [1.0, 0.0, 0.0, 1.0] and k.rgba[0, 0, 3] == 0.0
    assert not k.opaque and k.frame == "image"


def test_clip_gives_last_frame_as_a_and_first_as_b(tmp_path):
    frames = np.stack([disc(x) for x in (6, 12, 18, 24)])
    write_clip(Clip(frames, fps=8), tmp_path / "shot.mkv")  # FFV1: lossless
    a, b = read_keyframe(str(tmp_path / "shot.mkv"), "a"), read_keyframe(str(tmp_path / "shot.mkv"), "b")
    np.testing.assert_array_equal((a.rgba * 255).round().astype(np.uint8), frames[-1])
    np.testing.assert_array_equal((b.rgba * 255).round().astype(np.uint8), frames[0])
    assert a.frame == "last frame of 4" and b.frame == "first frame"


def test_apng_and_webp_give_their_first_frame(tmp_path):
    frames = np.stack([disc(8), disc(20)])
    for name in ("k.apng", "k.webp"):
        write_clip(Clip(frames, fps=8), tmp_path / name)
        for role in ("a", "b"):
            k = read_keyframe(str(tmp_path / name), role)
            np.testing.assert_array_equal((k.rgba * 255).round().astype(np.uint8), frames[0])


def test_opaque_image_is_accepted_with_a_warning(tmp_path):
    Image.fromarray(disc(10)[..., :3]).save(tmp_path / "rgb.png")
    write_clip(Clip(disc(20)[None]), tmp_path / "b.png")
    pair = read_keyframes(str(tmp_path / "rgb.png"), str(tmp_path / "b.png"), 16, "tiny")
    assert pair.start.opaque and (pair.start.rgba[..., 3] == 1.0).all()
    assert pair.warnings == [f"keyframe A ({tmp_path / 'rgb.png'}) has no transparency: treated as opaque (alpha = 1)"]


def test_other_size_is_resized_to_a_with_a_note(tmp_path):
    write_clip(Clip(disc(10)[None]), tmp_path / "a.png")
    big = np.asarray(Image.fromarray(disc(20)).resize((64, 64), Image.Resampling.NEAREST))
    write_clip(Clip(big[None]), tmp_path / "b.png")
    pair = read_keyframes(str(tmp_path / "a.png"), str(tmp_path / "b.png"), 16, "tiny")
    assert (pair.width, pair.height) == (32, 32) and pair.end.rgba.shape == (32, 32, 4)
    assert pair.notes == [f"keyframe B ({tmp_path / 'b.png'}) is 64x64: resized to 32x32"]
    # the disc is still where it was, red, with no dark fringe (premultiplied resize)
    a = pair.end.rgba[..., 3]
    ys, xs = np.nonzero(a > 0.5)
    assert abs(xs.mean() - 20) < 1 and abs(ys.mean() - 16) < 1
    edge = (a > 0.05) & (a < 0.95)
    assert edge.any() and pair.end.rgba[edge, 0].min() > 0.9


def test_size_option_resizes_both(tmp_path):
    write_clip(Clip(disc(10)[None]), tmp_path / "a.png")
    write_clip(Clip(disc(20)[None]), tmp_path / "b.png")
    pair = read_keyframes(str(tmp_path / "a.png"), str(tmp_path / "b.png"), 16, "tiny", size=(64, 48))
    assert pair.start.rgba.shape == (48, 64, 4) and len(pair.notes) == 2


def test_resize_keeps_a_uniform_image_exactly():
    img = np.zeros((20, 20, 4), np.float32)
    img[...] = (0.2, 0.4, 0.6, 0.5)
    np.testing.assert_allclose(resize_rgba(img, 16, 16), np.broadcast_to(img[:1, :1], (16, 16, 4)), atol=1e-5)


@pytest.mark.parametrize("size, message", [
    ((40, 32), "keyframe A ({a}) is 40x32: preset 'tiny' needs width and height that are positive multiples of 16 "
               "(e.g. 48x32; pass --size or resize it)"),
    ((8, 8), "keyframe A ({a}) is 8x8: preset 'tiny' needs width and height that are positive multiples of 16 "
             "(e.g. 16x16; pass --size or resize it)"),
])
def test_size_that_cannot_fit_the_preset_is_one_line(tmp_path, size, message):
    Image.fromarray(np.zeros((size[1], size[0], 4), np.uint8)).save(tmp_path / "a.png")
    write_clip(Clip(disc(20)[None]), tmp_path / "b.png")
    with pytest.raises(UsageError) as e:
        read_keyframes(str(tmp_path / "a.png"), str(tmp_path / "b.png"), 16, "tiny")
    assert str(e.value) == message.format(a=tmp_path / "a.png")


def test_bad_size_option(tmp_path):
    write_clip(Clip(disc(10)[None]), tmp_path / "a.png")
    with pytest.raises(UsageError, match=r"^--size is 50x64: preset 'tiny' needs"):
        read_keyframes(str(tmp_path / "a.png"), str(tmp_path / "a.png"), 16, "tiny", size=(50, 64))


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    write_clip(Clip(disc(10)[None]), tmp_path / "a.png")
    with pytest.raises(MediaError, match=r"bad\.png: unreadable or corrupt image"):
        read_keyframes(str(tmp_path / "a.png"), str(tmp_path / "bad.png"), 16, "tiny")
    with pytest.raises(MediaError, match=r"missing\.png: no such file or directory"):
        read_keyframes(str(tmp_path / "missing.png"), str(tmp_path / "a.png"), 16, "tiny")
    with pytest.raises(UsageError, match="unknown input extension '.xyz'"):
        read_keyframe(str(tmp_path / "a.xyz"), "a")
    for e in (MediaError, UsageError):
        assert "\n" not in str(e)


@pytest.mark.parametrize("frames", [0, 1, 2])
def test_too_few_frames(frames):
    with pytest.raises(UsageError, match=rf"^--frames must be at least 3 \(the two keyframes and one in-between\), "
                                         rf"not {frames}$"):
        check_frames(frames)
    check_frames(3)
