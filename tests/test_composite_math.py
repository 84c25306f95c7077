"""Compositing is bit-exact against the formula; layering, placement, timing behave as documented."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from rgbacli.media import Clip, Layer, composite_clip, over
from rgbacli.media.composite import resize_frames
from rgbacli.media.timeline import length_in_output, source_index

RNG = np.random.default_rng(1234)


def rand(shape, opaque=False):
    x = RNG.integers(0, 256, shape, dtype=np.uint8)
    if opaque:
        x[..., 3] = 255
    return x


def ref_over_opaque(fg, bg):
    """round(f·a + b·(1−a)), a = α/255, in exact rational arithmetic (no float ties)."""
    a = fg[..., 3:4].astype(np.int64)
    n = fg[..., :3].astype(np.int64) * a + bg[..., :3].astype(np.int64) * (255 - a)
    return (2 * n + 255) // 510  # round-half-up of n/255; n/255 is never a tie anyway


def ref_over_alpha(fg, bg):
    out = np.zeros(fg.shape, np.uint8)
    for idx in np.ndindex(fg.shape[:-1]):
        af, ab = Fraction(int(fg[idx][3]), 255), Fraction(int(bg[idx][3]), 255)
        ao = af + ab * (1 - af)
        out[idx + (3,)] = round(ao * 255)
        if ao > 0:
            for c in range(3):
                v = (int(fg[idx][c]) * af + int(bg[idx][c]) * ab * (1 - af)) / ao
                out[idx + (c,)] = int(v + Fraction(1, 2))  # round half up
    return out


def test_over_opaque_bit_exact_all_pairs():
    # every (colour, alpha) pair against random backgrounds: 65536 pixels
    c, a = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    fg = np.stack([c, c[::-1], c.T, a], -1)
    bg = rand(fg.shape, opaque=True)
    out = over(fg, bg)
    np.testing.assert_array_equal(out[..., :3], ref_over_opaque(fg, bg))
    assert (out[..., 3] == 255).all()


def test_over_opaque_random_frames_and_float_reference():
    fg, bg = rand((5, 32, 48, 4)), rand((5, 32, 48, 4), opaque=True)
    out = over(fg, bg)
    a = fg[..., 3:4] / 255.0
    np.testing.assert_array_equal(out[..., :3], np.rint(fg[..., :3] * a + bg[..., :3] * (1 - a)))


def test_over_translucent_background_is_porter_duff():
    fg, bg = rand((12, 16, 4)), rand((12, 16, 4))
    bg[0, :, 3] = 0  # fully transparent background row: result is fg itself
    fg[1, :, 3] = 0  # fully transparent fg row: result is bg itself
    out = over(fg, bg)
    np.testing.assert_array_equal(out, ref_over_alpha(fg, bg))
    np.testing.assert_array_equal(out[0][fg[0, :, 3] > 0], fg[0][fg[0, :, 3] > 0])
    np.testing.assert_array_equal(out[1], bg[1])


def test_layers_stack_in_order_first_lowest():
    bg = Clip(rand((3, 20, 30, 4), opaque=True))
    l1, l2 = rand((3, 20, 30, 4)), rand((3, 20, 30, 4))
    out = composite_clip([Layer(Clip(l1)), Layer(Clip(l2))], bg)
    np.testing.assert_array_equal(out.frames, over(l2, over(l1, bg.frames)))
    swapped = composite_clip([Layer(Clip(l2)), Layer(Clip(l1))], bg)
    assert not np.array_equal(out.frames, swapped.frames)


@pytest.mark.parametrize("pos", [(5, 3), (-7, -4), (25, 15), (-40, 0), (0, 30), (-3, 12)])
def test_position_clips_at_every_edge(pos):
    bg = rand((1, 20, 30, 4), opaque=True)
    fg = rand((1, 10, 12, 4))
    out = composite_clip([Layer(Clip(fg), position=pos)], Clip(bg)).frames
    # reference: paint onto a padded canvas, then crop
    pad = 50
    big = np.zeros((1, 20 + 2 * pad, 30 + 2 * pad, 4), np.uint8)
    big[:, pad : pad + 20, pad : pad + 30] = bg
    x, y = pos
    region = big[:, pad + y : pad + y + 10, pad + x : pad + x + 12]
    region[...] = np.where(region[..., 3:4] == 255, over(fg, np.maximum(region, [0, 0, 0, 255]).astype(np.uint8)), region)
    np.testing.assert_array_equal(out, big[:, pad : pad + 20, pad : pad + 30])


def test_colour_background_and_size():
    fg = np.zeros((2, 8, 10, 4), np.uint8)
    fg[:, 2:4, 2:4] = (10, 20, 30, 255)
    out = composite_clip([Layer(Clip(fg))], (255, 0, 0, 255))
    assert out.frames.shape == (2, 8, 10, 4)
    assert tuple(out.frames[0, 0, 0]) == (255, 0, 0, 255) and tuple(out.frames[1, 3, 3]) == (10, 20, 30, 255)
    big = composite_clip([Layer(Clip(fg), position=(5, 5))], (0, 0, 0, 0), size=(20, 12))
    assert big.frames.shape == (2, 12, 20, 4) and big.had_alpha
    assert big.frames[0, 0, 0, 3] == 0 and tuple(big.frames[0, 7, 7]) == (10, 20, 30, 255)


def marked(n, h=4, w=4, fps=24.0):
    """Opaque frames whose red channel is the frame index, to read the timeline back."""
    f = np.zeros((n, h, w, 4), np.uint8)
    f[..., 0] = np.arange(n)[:, None, None]
    f[..., 3] = 255
    return Clip(f, fps)


def shown(clip):
    return clip.frames[:, 0, 0, 0].tolist()


def test_shorter_fg_loops_or_holds():
    bg = marked(7)
    fg = marked(3)
    fg.frames[..., 0] += 100
    assert shown(composite_clip([Layer(fg)], bg, fit="loop")) == [100, 101, 102, 100, 101, 102, 100]
    assert shown(composite_clip([Layer(fg)], bg, fit="hold")) == [100, 101, 102, 102, 102, 102, 102]


def test_shorter_background_loops_or_holds():
    bg, fg = marked(3), marked(6)
    fg.frames[..., 3] = 0  # invisible: we read the background through it
    assert shown(composite_clip([Layer(fg)], bg, fit="loop")) == [0, 1, 2, 0, 1, 2]
    assert shown(composite_clip([Layer(fg)], bg, fit="hold")) == [0, 1, 2, 2, 2, 2]


def test_start_offset_extends_output():
    bg = marked(4)
    fg = marked(3)
    fg.frames[..., 0] += 100
    fg.frames[:, :, 2:, 3] = 0  # right half transparent: shows the background underneath
    for fit, bg_last in (("hold", 3), ("loop", 0)):
        out = composite_clip([Layer(fg, start=2)], bg, fit=fit)
        assert shown(out) == [0, 1, 100, 101, 102]  # 2 + 3 frames: longer than the background
        assert out.frames[:, 0, 3, 0].tolist() == [0, 1, 2, 3, bg_last]


def test_fps_resample_picks_frame_on_screen():
    bg = marked(8, fps=24)
    fg = marked(4, fps=12)
    fg.frames[..., 0] += 100
    assert shown(composite_clip([Layer(fg)], bg)) == [100, 100, 101, 101, 102, 102, 103, 103]
    fast = marked(8, fps=48)
    fast.frames[..., 0] += 100
    out = composite_clip([Layer(fast)], marked(4, fps=24))
    assert out.fps == 24 and shown(out) == [100, 102, 104, 106]
    out = composite_clip([Layer(fg)], bg, fps=6)  # output rate given: both resampled
    assert out.fps == 6 and shown(out) == [100, 102]


def test_timeline_helpers():
    assert source_index(0, 5, 24, 24, start=1) is None
    assert [source_index(t, 3, 24, 24, fit="loop") for t in range(5)] == [0, 1, 2, 0, 1]
    assert [source_index(t, 3, 24, 24, fit="hold") for t in range(5)] == [0, 1, 2, 2, 2]
    assert [source_index(t, 3, 30000 / 1001, 30, fit="hold") for t in range(3)] == [0, 0, 1]
    assert length_in_output(10, 12, 24) == 20 and length_in_output(1, 12, 24) == 1


def test_scale_resizes_in_premultiplied_space():
    # white opaque square on a transparent canvas whose hidden colour is black:
    # a straight-alpha resize would darken the edge; premultiplied keeps it white.
    fg = np.zeros((1, 16, 16, 4), np.uint8)
    fg[0, 4:12, 4:12] = (255, 255, 255, 255)
    small = resize_frames(fg, (7, 7))
    edge = small[0][(small[0, ..., 3] > 0) & (small[0, ..., 3] < 255)]
    assert len(edge) and (edge[:, :3] >= 250).all()
    out = composite_clip([Layer(Clip(fg), scale=0.5)], (0, 0, 255, 255), size=(16, 16))
    assert out.frames.shape == (1, 16, 16, 4)
    assert tuple(out.frames[0, 4, 4]) == (255, 255, 255, 255) and tuple(out.frames[0, 12, 12]) == (0, 0, 255, 255)
