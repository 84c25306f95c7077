"""Unreadable inputs and refused outputs fail with one clear MediaError/UsageError, no partial files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rgbacli.errors import MediaError, OutputExistsError, RgbaError, UsageError
from rgbacli.media import Clip, read_clip, write_clip, write_contact_sheet, write_preview_mp4
from rgbacli.media.samples import varied_alpha_frames
from rgbacli.media.write import open_writer

FRAMES = varied_alpha_frames(3, 16, 24)


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        read_clip(tmp_path / "nope.mov")


@pytest.mark.parametrize("name", ["junk.webm", "junk.mov", "junk.png", "junk.webp", "junk.mkv"])
def test_garbage_bytes(tmp_path, name):
    (tmp_path / name).write_bytes(os.urandom(3000))
    with pytest.raises(MediaError, match="corrupt"):
        read_clip(tmp_path / name)


@pytest.mark.parametrize("name", ["t.mov", "t.webm", "t.mkv", "t.apng", "t.mp4", "t.gif", "t.webp", "t.png"])
def test_truncated_files(tmp_path, name):
    frames = FRAMES[:1] if name.endswith(".png") else np.concatenate([FRAMES] * 3)
    p = write_clip(Clip(frames), tmp_path / name)
    assert read_clip(p).n_frames == len(frames)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MediaError, match="corrupt|truncated"):
        read_clip(p)


def test_empty_and_zero_frames(tmp_path):
    (tmp_path / "empty.mkv").write_bytes(b"")
    with pytest.raises(MediaError):
        read_clip(tmp_path / "empty.mkv")
    (tmp_path / "d").mkdir()
    with pytest.raises(MediaError, match="no PNG, EXR or TIFF frames"):
        read_clip(tmp_path / "d")
    with pytest.raises(MediaError, match="no PNG frames"):
        read_clip(tmp_path / "none.%04d.png")
    with pytest.raises(MediaError, match="zero frames"):
        write_clip(Clip(np.zeros((0, 4, 4, 4), np.uint8)), tmp_path / "z.mkv")
    assert not (tmp_path / "z.mkv").exists()


def test_unknown_extension(tmp_path):
    (tmp_path / "x.avi").write_bytes(b"data")
    with pytest.raises(UsageError, match="unknown input extension"):
        read_clip(tmp_path / "x.avi")
    with pytest.raises(UsageError, match="unknown output extension"):
        write_clip(Clip(FRAMES), tmp_path / "y.xyz")


def test_sequence_size_mismatch(tmp_path):
    write_clip(Clip(FRAMES), tmp_path / "s.%04d.png")
    write_clip(Clip(varied_alpha_frames(1, 8, 8)), tmp_path / "s.0004.png")
    with pytest.raises(MediaError, match="size changes"):
        read_clip(tmp_path / "s.%04d.png")


def test_refuses_to_overwrite_and_force(tmp_path):
    p = tmp_path / "o.mkv"
    p.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        write_clip(Clip(FRAMES), p)
    assert p.read_bytes() == b"keep me"
    write_clip(Clip(FRAMES), p, force=True)
    assert read_clip(p).n_frames == 3


def test_sequence_overwrite_is_all_or_nothing(tmp_path):
    pat = tmp_path / "f.%04d.png"
    (tmp_path / "f.0002.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        write_clip(Clip(FRAMES), pat)
    assert sorted(os.listdir(tmp_path)) == ["f.0002.png"]  # nothing added, no temp dir left
    write_clip(Clip(np.concatenate([FRAMES, FRAMES])), pat, force=True)
    write_clip(Clip(FRAMES), pat, force=True)  # shorter: stale f.0004..6 are removed
    assert sorted(os.listdir(tmp_path)) == ["f.0001.png", "f.0002.png", "f.0003.png"]


def test_failure_mid_write_leaves_nothing(tmp_path):
    for name in ["a.mov", "b.%04d.png", "c.webp", "dir_out"]:
        with pytest.raises(RuntimeError):
            with open_writer(tmp_path / name, fps=24) as w:
                w.write(FRAMES[0])
                raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_missing_output_dir_and_multi_frame_png(tmp_path):
    with pytest.raises(RgbaError, match="does not exist"):
        write_clip(Clip(FRAMES), tmp_path / "nodir" / "x.mov")
    with pytest.raises(UsageError, match="one image"):
        write_clip(Clip(FRAMES), tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_previews(tmp_path):
    clip = Clip(FRAMES, 12)
    mp4 = write_preview_mp4(clip, tmp_path / "p.mp4")
    back = read_clip(mp4)
    assert back.n_frames == 3 and back.fps == 12 and not back.had_alpha
    # fully transparent pixels show the checkerboard (light 204 / dark 153 grey)
    grey = back.frames[0, :8, :4, :3].astype(int)
    assert abs(grey.mean() - 204) < 6
    sheet = write_contact_sheet(clip, tmp_path / "s.png", columns=2)
    img = read_clip(sheet)
    assert img.frames.shape[1:3] == (2 * 16 + 3 * 4, 2 * 24 + 3 * 4)
    with pytest.raises(OutputExistsError):
        write_contact_sheet(clip, sheet)
