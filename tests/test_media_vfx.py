"""VFX delivery: EXR and 16-bit sequences (read back by a second library), start numbers,
mattes, colour tags, deterministic bytes, strict folder inputs, odd-sized H.264, and writes
that fail (disk full, unwritable, SIGTERM) leaving nothing behind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import disk_full_after

from rgbacli.errors import MediaError, OutputExistsError, UsageError
from rgbacli.media import Clip, matte_path, open_frames, open_writer, read_clip, run_composite, write_clip, write_matte
from rgbacli.media.samples import varied_alpha_frames

OpenEXR = pytest.importorskip("OpenEXR")
png = pytest.importorskip("png")  # pypng: an independent 16-bit PNG reader
tifffile = pytest.importorskip("tifffile")

U8 = varied_alpha_frames(3, 12, 20)
RNG = np.random.default_rng(7)
F32 = RNG.random((3, 12, 20, 4)).astype(np.float32)
F32[0, 0, :4, 3] = [0.0, 1.0, 1e-3, 0.5]  # transparent, opaque, nearly transparent, half


def srgb_to_linear(c):
    """The test's own sRGB decoding curve (IEC 61966-2-1), to check what the EXR file holds."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def exr_pixels(path):
    """Channels of an EXR as the OpenEXR library reads them: {name: (H, W) array}."""
    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {k: v.pixels for k, v in f.channels().items()}


def pypng_read(path):
    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = info["planes"]
    return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, planes), info


# --- 1. OpenEXR ----------------------------------------------------------------------------


def test_exr_sequence_is_half_premultiplied_linear_and_round_trips(tmp_path):
    write_clip(Clip(F32, 24), tmp_path / "shot.%04d.exr", start_number=1001)
    assert sorted(os.listdir(tmp_path)) == ["shot.1001.exr", "shot.1002.exr", "shot.1003.exr"]
    # Read by OpenEXR (the writer is FFmpeg's encoder): R,G,B,A half, linear colour × alpha.
    ch = exr_pixels(tmp_path / "shot.1002.exr")
    assert sorted(ch) == ["A", "B", "G", "R"] and all(v.dtype == np.float16 for v in ch.values())
    a = F32[1, ..., 3].astype(np.float64)
    for i, c in enumerate("RGB"):
        want = (srgb_to_linear(F32[1, ..., i]) * a).astype(np.float16)
        np.testing.assert_array_equal(ch[c], want)  # rounded to nearest half, no further error
    np.testing.assert_array_equal(ch["A"], F32[1, ..., 3].astype(np.float16))
    # Our reader undoes both conventions: within half precision of the straight sRGB input.
    back = read_clip(tmp_path / "shot.%04d.exr", dtype="float32")
    assert back.frames.dtype == np.float32 and back.had_alpha
    err = np.abs(back.frames - F32)
    assert err[..., 3].max() <= 2.5e-4  # half step near 1 is 4.9e-4: nearest rounding halves it
    assert err[..., :3][F32[..., 3] >= 1e-3].max() < 1e-3
    assert (back.frames[0, 0, 0, :3] == 0).all()  # colour under alpha 0 is not kept (premultiplied)


def test_exr_keeps_every_8_bit_value_exactly(tmp_path):
    c, a = np.meshgrid(np.arange(256), np.arange(256))
    px = np.stack([c, 255 - c, c // 2, a], -1).astype(np.uint8)[None]
    write_clip(Clip(px), tmp_path / "all.exr")
    back = read_clip(tmp_path / "all.exr")
    visible = px[..., 3] > 0
    np.testing.assert_array_equal(back.frames[..., 3], px[..., 3])
    np.testing.assert_array_equal(back.frames[..., :3][visible], px[..., :3][visible])


def test_exr_float_and_non_linear_options(tmp_path):
    write_clip(Clip(F32[:1]), tmp_path / "f.exr", bit_depth=32, linear=False)
    ch = exr_pixels(tmp_path / "f.exr")
    assert ch["R"].dtype == np.float32
    np.testing.assert_allclose(ch["R"], F32[0, ..., 0] * F32[0, ..., 3], rtol=1e-6)  # as given, × alpha
    back = read_clip(tmp_path / "f.exr", dtype="float32", linear=False)
    ok = F32[0, ..., 3] > 1e-3
    assert np.abs(back.frames[0] - F32[0])[ok].max() < 1e-5
    with pytest.raises(UsageError, match="EXR is written at bit depth 16 or 32"):
        write_clip(Clip(F32[:1]), tmp_path / "g.exr", bit_depth=8)


def test_exr_from_another_writer_reads_straight_with_its_data_window(tmp_path):
    # OpenEXR writes a premultiplied linear 6x4 image whose data window is the 3x2 middle.
    straight = np.array([[0.8, 0.4, 0.2, 0.5], [0.1, 0.9, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]], np.float64)
    data = np.zeros((2, 3, 4))
    data[0] = straight
    data[1] = straight[::-1]
    pre = np.concatenate([srgb_to_linear(data[..., :3]) * data[..., 3:], data[..., 3:]], -1).astype(np.float16)
    header = {"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage,
              "dataWindow": (np.array([2, 1], np.int32), np.array([4, 2], np.int32)),
              "displayWindow": (np.array([0, 0], np.int32), np.array([5, 3], np.int32))}
    with OpenEXR.File(header, {c: np.ascontiguousarray(pre[..., i]) for i, c in enumerate("RGBA")}) as f:
        f.write(str(tmp_path / "nuke.exr"))
    clip = read_clip(tmp_path / "nuke.exr", dtype="float32")
    assert clip.size == (6, 4) and clip.n_frames == 1
    assert (clip.frames[0, 0] == 0).all() and (clip.frames[0, :, :2] == 0).all()  # outside: transparent
    got = clip.frames[0, 1:3, 2:5]
    vis = data[..., 3] > 0
    assert np.abs(got[..., 3] - data[..., 3]).max() < 5e-4
    assert np.abs(got[..., :3] - data[..., :3])[vis].max() < 2e-3


def test_unreadable_exr_is_one_line(tmp_path):
    (tmp_path / "bad.0001.exr").write_bytes(b"v/1\x01 not really an exr" * 20)
    with pytest.raises(MediaError, match=r"bad\.0001\.exr: unreadable or corrupt EXR"):
        read_clip(tmp_path / "bad.%04d.exr")


# --- 2. 16-bit PNG and TIFF, float end to end ---------------------------------------------------


def test_png16_sequence_round_trip_read_by_pypng(tmp_path):
    write_clip(Clip(F32), tmp_path / "s.%04d.png", bit_depth=16)
    raw, info = pypng_read(tmp_path / "s.0003.png")
    assert info["bitdepth"] == 16 and info["alpha"]
    np.testing.assert_array_equal(raw, np.rint(F32[2] * 65535).astype(np.uint16))
    back = read_clip(tmp_path / "s.%04d.png", dtype="float32")
    assert np.abs(back.frames - F32).max() <= 0.5 / 65535 + 1e-7
    # the default (uint8) read of a 16-bit file rounds, exactly like to_uint8 of the float
    np.testing.assert_array_equal(read_clip(tmp_path / "s.%04d.png").frames, np.rint(F32 * 255).astype(np.uint8))


@pytest.mark.parametrize("name,depth,dtype", [("t.%04d.tif", None, np.uint16), ("t.%04d.tiff", 8, np.uint8)])
def test_tiff_sequence_read_by_tifffile(tmp_path, name, depth, dtype):
    write_clip(Clip(F32), tmp_path / name, bit_depth=depth)
    first = tmp_path / (name % 1)
    raw = tifffile.imread(first)
    scale = 65535 if dtype == np.uint16 else 255
    assert raw.dtype == dtype and raw.shape == (12, 20, 4)
    np.testing.assert_array_equal(raw, np.rint(F32[0] * scale).astype(dtype))
    with tifffile.TiffFile(first) as t:
        assert t.pages[0].extrasamples == (2,)  # unassociated (straight) alpha
    back = read_clip(tmp_path / name, dtype="float32")
    assert np.abs(back.frames - F32).max() <= 0.5 / scale + 1e-7


def test_tiff_from_tifffile_reads_at_16_bits(tmp_path):
    x = RNG.integers(0, 65536, (9, 7, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", x, photometric="rgb", extrasamples=["unassalpha"], compression="zlib")
    src = open_frames(tmp_path / "in.tif", dtype="float32")
    assert src.bit_depth == 16 and src.had_alpha
    np.testing.assert_array_equal(np.rint(next(iter(src)) * 65535).astype(np.uint16), x)


def test_8_bit_outputs_of_float_frames_are_unchanged(tmp_path):
    write_clip(Clip(F32), tmp_path / "f.%04d.png")
    write_clip(Clip(np.rint(F32 * 255).astype(np.uint8)), tmp_path / "u.%04d.png")
    for i in (1, 2, 3):
        assert (tmp_path / f"f.{i:04d}.png").read_bytes() == (tmp_path / f"u.{i:04d}.png").read_bytes()
    back = read_clip(tmp_path / "f.%04d.png")
    assert back.frames.dtype == np.uint8  # today's consumers (compositing) still get uint8
    np.testing.assert_array_equal(read_clip(tmp_path / "f.%04d.png", dtype="float32").frames,
                                  back.frames.astype(np.float32) / 255)


def test_premultiplied_16_bit_and_bad_options(tmp_path):
    write_clip(Clip(F32[:1]), tmp_path / "p.tif", premultiplied=True)
    raw = tifffile.imread(tmp_path / "p.tif")
    np.testing.assert_array_equal(raw[..., 0], np.rint(F32[0, ..., 0] * F32[0, ..., 3] * 65535).astype(np.uint16))
    with pytest.raises(UsageError, match="bit depth 16 applies to PNG, TIFF and EXR"):
        write_clip(Clip(U8), tmp_path / "x.mov", bit_depth=16)
    with pytest.raises(UsageError, match="PNG is written at bit depth 8 or 16"):
        write_clip(Clip(U8), tmp_path / "x.%04d.png", bit_depth=12)
    with pytest.raises(UsageError, match="dtype must be one of"):
        read_clip(tmp_path / "p.tif", dtype="float16")
    assert sorted(os.listdir(tmp_path)) == ["p.tif"]


def test_prores_float_read_keeps_more_than_8_bits(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float32)
    frames = np.ones((1, 16, 64, 4), np.float32)
    frames[..., :3] = ramp[None, None, :, None]
    write_clip(Clip(frames), tmp_path / "r.mov")
    f = read_clip(tmp_path / "r.mov", dtype="float32").frames
    assert f.dtype == np.float32 and np.abs(f[..., :3] - frames[..., :3]).max() < 2 / 255
    assert len(np.unique(f[0, 0, :, 1])) == 64  # not quantised back to 8 bits on the way out


# --- 3. start numbers and input fps --------------------------------------------------------------


@pytest.mark.parametrize("ext", ["exr", "tif", "png"])
def test_start_numbers_and_fps_of_sequences(tmp_path, ext):
    write_clip(Clip(U8, 24), tmp_path / f"shot.%04d.{ext}", start_number=1001)
    assert sorted(os.listdir(tmp_path)) == [f"shot.{n}.{ext}" for n in (1001, 1002, 1003)]
    src = open_frames(tmp_path / f"shot.%04d.{ext}", fps=12)
    assert src.start_number == 1001 and src.n_frames == 3 and src.fps == 12
    assert read_clip(tmp_path, fps=30).fps == 30  # the folder reads too, any start number
    assert read_clip(tmp_path / f"shot.%04d.{ext}").fps == 24  # the default for sequences
    with pytest.raises(OutputExistsError, match="shot.1001"):
        write_clip(Clip(U8), tmp_path / f"shot.%04d.{ext}")
    with pytest.raises(UsageError, match="start number applies to image sequences"):
        write_clip(Clip(U8), tmp_path / "x.mkv", start_number=1001)
    with pytest.raises(UsageError, match="whole number"):
        write_clip(Clip(U8), tmp_path / "y.%04d.png", start_number=-1)


def test_run_composite_input_fps_and_trim(tmp_path):
    fg = np.zeros((4, 8, 8, 4), np.uint8)
    fg[..., 0] = (np.arange(4) * 60)[:, None, None]
    fg[..., 3] = 255
    write_clip(Clip(fg), tmp_path / "fg.%04d.png", start_number=101)
    full = run_composite([str(tmp_path / "fg.%04d.png")], "black", str(tmp_path / "a.mkv"), input_fps=12, fps=24)
    assert full["frames"] == 8  # 4 frames at 12 fps fill 8 frames at 24
    a = read_clip(tmp_path / "a.mkv").frames[..., 0, 0, 0].tolist()
    assert a == [0, 0, 60, 60, 120, 120, 180, 180]
    cut = run_composite([str(tmp_path / "fg.%04d.png")], "black", str(tmp_path / "b.mkv"), input_fps=12, fps=24,
                        trim_start=3, trim_frames=4)
    assert cut["frames"] == 4 and read_clip(tmp_path / "b.mkv").frames[..., 0, 0, 0].tolist() == a[3:7]
    with pytest.raises(UsageError, match="past the end"):
        run_composite([str(tmp_path / "fg.%04d.png")], "black", str(tmp_path / "c.mkv"), trim_start=50)
    with pytest.raises(UsageError, match="trim length"):
        run_composite([str(tmp_path / "fg.%04d.png")], "black", str(tmp_path / "c.mkv"), trim_frames=0)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("c.", ".c"))]


# --- 4. mattes -------------------------------------------------------------------------------


@pytest.mark.parametrize("out,matte", [("shot.mov", "shot.matte.mov"), ("shot.%04d.exr", "shot.matte.%04d.exr"),
                                       ("a/b.v2.%04d.png", "a/b.v2.matte.%04d.png"), ("s_%04d.tif", "s.matte_%04d.tif"),
                                       ("frames", "frames.matte")])
def test_matte_path(out, matte):
    assert matte_path(out) == Path(matte)


def test_write_matte_formats(tmp_path):
    clip = Clip(F32, 24)
    write_matte(clip, matte_path(tmp_path / "shot.%04d.exr"), start_number=1001)
    y = exr_pixels(tmp_path / "shot.matte.1002.exr")
    assert sorted(y) == ["Y"]  # one grey channel: coverage, not linearised
    np.testing.assert_array_equal(y["Y"], F32[1, ..., 3].astype(np.float16))
    write_matte(clip, tmp_path / "m.%04d.png", bit_depth=16)
    raw, info = pypng_read(tmp_path / "m.0001.png")
    assert info["greyscale"] and not info["alpha"]
    np.testing.assert_array_equal(raw[..., 0], np.rint(F32[0, ..., 3] * 65535).astype(np.uint16))
    write_matte(Clip(U8), tmp_path / "m.mov")
    mov = read_clip(tmp_path / "m.mov")
    assert (mov.frames[..., 3] == 255).all()
    for c in range(3):
        assert np.abs(mov.frames[..., c].astype(int) - U8[..., 3]).max() <= 1
    with pytest.raises(RuntimeError):  # atomic like every output
        with open_writer(tmp_path / "n.matte.%04d.exr", fps=24, matte=True) as w:
            w.write(F32[0])
            raise RuntimeError("boom")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("n.", ".n"))]


def test_run_composite_writes_the_matte(tmp_path):
    write_clip(Clip(U8), tmp_path / "fg.mkv")
    s = run_composite([str(tmp_path / "fg.mkv")], "transparent", str(tmp_path / "o.%04d.tif"),
                      matte=str(matte_path(tmp_path / "o.%04d.tif")), start_number=1001, size=(20, 12))
    assert s["matte"].endswith("o.matte.%04d.tif")
    m = tifffile.imread(tmp_path / "o.matte.1001.tif")
    assert m.dtype == np.uint16 and m.shape == (12, 20)
    np.testing.assert_array_equal(m, U8[0, ..., 3].astype(np.uint16) * 257)


# --- 5. colour tags ----------------------------------------------------------------------------

# expected (primaries, transfer, matrix, range) as FFmpeg numbers: 1 = BT.709, matrix 0 = RGB,
# range 1 = limited (tv), 2 = full (pc)
TAGS = {"mov": (1, 1, 1, 1), "webm": (1, 1, 1, 1), "mp4": (1, 1, 1, 1), "mkv": (1, 1, 0, 2)}
FFPROBE = {"mov": ("bt709", "tv"), "webm": ("bt709", "tv"), "mp4": ("bt709", "tv"), "mkv": ("gbr", "pc")}


def _container_tags(data: bytes, ext: str):
    """The colour tags from the container bytes themselves (no FFmpeg involved)."""
    if ext in ("mov", "mp4"):  # QuickTime 'colr' atom: nclc/nclx + primaries, transfer, matrix (u16)
        i = data.index(b"colr")
        kind, p, t, m = data[i + 4 : i + 8], *(int.from_bytes(data[i + 8 + 2 * k : i + 10 + 2 * k], "big") for k in range(3))
        rng = (2 if data[i + 14] & 0x80 else 1) if kind == b"nclx" else None
        return p, t, m, rng
    # Matroska Colour: MatrixCoefficients 55B1, Range 55B9, TransferCharacteristics 55BA, Primaries 55BB
    def elem(eid):
        i = data.index(eid)
        assert data[i + 2] == 0x81  # one-byte size
        return data[i + 3]
    return elem(b"\x55\xbb"), elem(b"\x55\xba"), elem(b"\x55\xb1"), elem(b"\x55\xb9")


@pytest.mark.parametrize("ext", sorted(TAGS))
def test_colour_tags(tmp_path, ext):
    import av

    p = write_clip(Clip(U8), tmp_path / f"c.{ext}")
    with av.open(str(p)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range) == TAGS[ext]
    p_, t_, m_, r_ = _container_tags(p.read_bytes(), ext)
    assert (p_, t_, m_) == TAGS[ext][:3] and r_ in (None, TAGS[ext][3])
    if shutil.which("ffprobe"):
        out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(p)],
                             capture_output=True, text=True, check=True).stdout
        st = json.loads(out)["streams"][0]
        assert (st["color_primaries"], st["color_transfer"]) == ("bt709", "bt709")
        assert (st["color_space"], st["color_range"]) == FFPROBE[ext]


def test_yuv_conversion_uses_the_bt709_matrix(tmp_path):
    import av

    red = np.zeros((1, 16, 16, 4), np.uint8)
    red[..., 0] = red[..., 3] = 255
    write_clip(Clip(red), tmp_path / "red.mp4")
    with av.open(str(tmp_path / "red.mp4")) as c:
        plane = next(c.decode(video=0)).planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:16, :16]
    # limited-range luma of pure red: 16 + 219 · 0.2126 = 62.6 (BT.601 would give 81.5)
    assert np.abs(y.astype(int) - 63).max() <= 1
    assert np.abs(read_clip(tmp_path / "red.mp4").frames[0, ..., :3].astype(int) - [255, 0, 0]).max() <= 3


# --- 6. deterministic bytes --------------------------------------------------------------------

ALL_OUTPUTS = ["o.mov", "o.webm", "o.mkv", "o.mp4", "o.apng", "o.webp", "o.gif", "o.%04d.png", "o.%04d.exr",
               "o.%04d.tif", "one.png", "one.exr", "one.tif", "one.jpg", "folder"]


@pytest.mark.parametrize("name", ALL_OUTPUTS)
def test_same_frames_give_the_same_bytes(tmp_path, name):
    frames = U8[:1] if name.startswith("one") else U8
    dumps = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        write_clip(Clip(frames, 24), tmp_path / run / name)
        files = sorted(f for f in (tmp_path / run).rglob("*") if f.is_file())
        dumps.append([(f.relative_to(tmp_path / run), f.read_bytes()) for f in files])
        time.sleep(1.05 if run == "a" and name == "o.mov" else 0)  # a clock in the file would show
    assert dumps[0] == dumps[1] and dumps[0]
    assert all(b"creation_time" not in data for _, data in dumps[0])


# --- 7. folder inputs --------------------------------------------------------------------------


def test_folder_with_a_stray_image_is_refused(tmp_path):
    write_clip(Clip(np.concatenate([U8, U8[:2]])), tmp_path / "shot.%04d.png")
    (tmp_path / "notes.txt").write_text("not media: ignored")
    assert read_clip(tmp_path).n_frames == 5
    write_clip(Clip(U8[:1]), tmp_path / "notes.png")
    with pytest.raises(MediaError) as e:
        read_clip(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "notes.png" in msg and "shot.%04d.png" in msg and "5 frames" in msg


def test_folder_with_two_sequences_is_refused(tmp_path):
    write_clip(Clip(U8), tmp_path / "a.%04d.png")
    write_clip(Clip(U8), tmp_path / "b.%04d.exr")
    with pytest.raises(MediaError, match=r"2 numbered sequences \(a\.%04d\.png, b\.%04d\.exr\)"):
        read_clip(tmp_path)
    write_clip(Clip(U8[:2]), tmp_path / "c.%04d.png")  # a smaller third: still not joined
    (tmp_path / "b.0001.exr").unlink()
    with pytest.raises(MediaError, match=r"not frames of a\.%04d\.png.*b\.0002\.exr"):
        read_clip(tmp_path)


@pytest.mark.parametrize("ext", ["exr", "tif"])
def test_folder_of_one_sequence_reads(tmp_path, ext):
    write_clip(Clip(U8), tmp_path / f"f_%03d.{ext}", start_number=7)
    clip = read_clip(tmp_path)
    assert clip.n_frames == 3 and clip.size == (20, 12)
    assert np.abs(clip.frames.astype(int) - U8)[..., 3].max() == 0


# --- 8. odd-sized H.264 -----------------------------------------------------------------------


def test_odd_mp4_reports_the_size_it_wrote(tmp_path, capsys):
    fg = np.full((2, 211, 333, 4), 200, np.uint8)
    write_clip(Clip(fg), tmp_path / "fg.mkv")
    s = run_composite([str(tmp_path / "fg.mkv")], "black", str(tmp_path / "o.mp4"))
    assert s["size"] == [334, 212]
    assert read_clip(tmp_path / "o.mp4").size == (334, 212)
    err = capsys.readouterr().err
    assert err.count("333x211 is written as 334x212") == 1
    with open_writer(tmp_path / "w.mp4", fps=24) as w:
        assert w.size is None
        w.write(fg[0, :5, :7])
        assert w.size == (8, 6)


# --- 9. disk full, unwritable, signals -----------------------------------------------------------

SINGLE_FILES = ["o.mov", "o.webm", "o.mkv", "o.mp4", "o.apng", "o.webp", "o.gif", "one.png", "one.exr", "one.tif"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("name", SINGLE_FILES)
def test_disk_full_single_file(tmp_path, monkeypatch, name):
    # The temporary output is a link to /dev/full: every write really fails with ENOSPC.
    real = tempfile.mkstemp

    def full_mkstemp(*a, **kw):
        fd, path = real(*a, **kw)
        os.close(fd)
        os.unlink(path)
        os.symlink("/dev/full", path)
        return os.open("/dev/null", os.O_RDONLY), path

    monkeypatch.setattr(tempfile, "mkstemp", full_mkstemp)
    frames = U8[:1] if name.startswith("one") else U8
    with pytest.raises(MediaError) as e:
        write_clip(Clip(frames), tmp_path / name)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / name)) and "No space left on device" in msg and ".tmp-" not in msg
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["o.%04d.png", "o.%04d.exr", "o.%04d.tif", "folder"])
def test_disk_full_sequence(tmp_path, monkeypatch, name):
    disk_full_after(monkeypatch, 2)
    with pytest.raises(MediaError, match="writing failed \\(No space left on device\\)"):
        write_clip(Clip(U8), tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_unwritable_folder(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:  # a real read-only folder (root writes anywhere)
        ro.chmod(0o500)
        try:
            with pytest.raises(MediaError, match="not writable"):
                write_clip(Clip(U8), ro / "x.%04d.exr")
        finally:
            ro.chmod(0o700)

    def refused(*a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    for name in ["x.mov", "x.%04d.exr", "frames"]:
        with pytest.raises(MediaError, match=r"cannot create a temporary file in .*\(Permission denied\)"):
            write_clip(Clip(U8), ro / name)
    assert os.listdir(ro) == []


SIGNAL_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from rgbacli.fsutil import install_signal_cleanup
    from rgbacli.media import Clip, write_clip
    install_signal_cleanup()
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 4), dtype=np.uint8)
    long = np.broadcast_to(frame, (100000,) + frame.shape)  # far longer than the test waits
    write_clip(Clip(long, 24), sys.argv[1])
""")


@pytest.mark.parametrize("name,sig,code", [("out.mov", signal.SIGTERM, 143), ("out.%04d.exr", signal.SIGTERM, 143),
                                           ("out.mp4", signal.SIGINT, 130)])
def test_signal_removes_temporary_outputs(tmp_path, name, sig, code):
    script = tmp_path / "job.py"
    script.write_text(SIGNAL_SCRIPT)
    out = tmp_path / "o"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, str(script), str(out / name)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(".tmp-" in n for n in os.listdir(out)):  # writing has begun
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == code, proc.stderr.read().decode()
    assert os.listdir(out) == []
