"""Alpha helpers, exact division by 255, colours, format detection."""

from __future__ import annotations

import numpy as np
import pytest

from rgbacli.errors import UsageError
from rgbacli.media import parse_color, premultiply, to_float, to_uint8, unpremultiply
from rgbacli.media.clip import div255
from rgbacli.media.formats import detect, expand_pattern


def test_div255_is_exact_for_every_16_bit_value():
    n = np.arange(65536, dtype=np.uint32)
    np.testing.assert_array_equal(div255(n), (n + 127) // 255)
    n16 = np.arange(255 * 255 + 1, dtype=np.uint16)  # the uint16 range used by compositing
    np.testing.assert_array_equal(div255(n16), (n16.astype(np.uint32) + 127) // 255)


def test_premultiply_unpremultiply_uint8():
    rgb = np.arange(256, dtype=np.uint8)
    a = np.arange(256, dtype=np.uint8)
    c, al = np.meshgrid(rgb, a)
    px = np.stack([c, c, c, al], -1)
    pre = premultiply(px)
    np.testing.assert_array_equal(pre[..., 0], np.rint(c * (al / 255.0)).astype(np.uint8))
    np.testing.assert_array_equal(pre[..., 3], al)
    back = unpremultiply(pre)
    assert (back[..., :3][al == 0] == 0).all()
    err = np.abs(back[..., 0].astype(int) - c)
    ok = al > 0
    assert (err[ok] <= np.ceil(127.5 / al[ok])).all()  # straight colour is only as precise as α allows
    np.testing.assert_array_equal(unpremultiply(premultiply(px[al == 255])), px[al == 255])


def test_premultiply_float_and_dtype_helpers():
    f = np.array([[[0.5, 1.0, 0.2, 0.5]]], np.float32)
    np.testing.assert_allclose(premultiply(f), [[[0.25, 0.5, 0.1, 0.5]]])
    np.testing.assert_allclose(unpremultiply(premultiply(f)), f, atol=1e-6)
    u = to_uint8(f)
    assert u.dtype == np.uint8 and u.tolist() == [[[128, 255, 51, 128]]]
    assert to_float(u).dtype == np.float32 and to_uint8(to_float(u)).tolist() == u.tolist()


@pytest.mark.parametrize("text,rgba", [("#ff8000", (255, 128, 0, 255)), ("#F80", (255, 136, 0, 255)),
                                       ("#00000080", (0, 0, 0, 128)), ("White", (255, 255, 255, 255)),
                                       ("grey", (128, 128, 128, 255)), ("transparent", (0, 0, 0, 0))])
def test_parse_color(text, rgba):
    assert parse_color(text) == rgba


@pytest.mark.parametrize("bad", ["#12345", "#gggggg", "chartreuse-ish", ""])
def test_parse_color_rejects(bad):
    with pytest.raises(UsageError, match="unknown colour"):
        parse_color(bad)


def test_detect_formats(tmp_path):
    assert detect("a/b.%04d.png").name == "png-seq"
    assert expand_pattern("a/b.%04d.png", 7).name == "b.0007.png"
    assert detect(tmp_path).name == "png-seq"
    assert detect("x.MOV").name == "mov" and detect("x.webm").alpha == "full"
    assert detect("x.mp4").alpha == "none" and detect("x.gif").alpha == "1-bit"
    with pytest.raises(UsageError, match="unknown output extension"):
        detect("x.avi", for_write=True)
    with pytest.raises(UsageError, match="must end in .png"):
        detect("x.%04d.jpg")
