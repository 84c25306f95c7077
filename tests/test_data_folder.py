"""FolderDataset: user clips with same-stem captions, resized/cropped to the training size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rgbacli.data import FolderDataset
from rgbacli.errors import RgbaError


def _frames(t=10, h=48, w=80):
    f = np.zeros((t, h, w, 4), np.uint8)
    f[..., :3] = (0, 255, 0)  # transparent pixels carry green: a straight-alpha resize would bleed it
    for i in range(t):
        f[i, 10:30, 5 + 4 * i : 25 + 4 * i] = (200, 40, 40, 255)  # a red box moving right
    return f


def _write_sequence(dirpath, stem, frames):
    for i, fr in enumerate(frames, start=1):
        Image.fromarray(fr, "RGBA").save(dirpath / f"{stem}.{i:04d}.png")


def _write_apng(path, frames, fps=8):
    ims = [Image.fromarray(f, "RGBA") for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0, format="PNG")


def test_missing_caption_names_the_clip(tmp_path):
    _write_sequence(tmp_path, "walk", _frames(3))
    with pytest.raises(RgbaError, match=r"walk\.%04d\.png: no caption \(expected .*walk\.txt"):
        FolderDataset(tmp_path)


def test_empty_folder_and_empty_caption(tmp_path):
    with pytest.raises(RgbaError, match="no clips found"):
        FolderDataset(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a.txt").write_text("   \n")
    with pytest.raises(RgbaError, match="caption file is empty"):
        FolderDataset(tmp_path)


def test_discovers_sequences_dirs_and_files(tmp_path):
    _write_sequence(tmp_path, "seq", _frames(3))
    (tmp_path / "seq.txt").write_text("a red box moving right\n")
    (tmp_path / "frames").mkdir()
    _write_sequence(tmp_path / "frames", "f", _frames(3))
    (tmp_path / "frames.txt").write_text("another box")
    _write_apng(tmp_path / "anim.png", _frames(4))
    (tmp_path / "anim.txt").write_text("animated")
    (tmp_path / "notes.md").write_text("ignored")
    ds = FolderDataset(tmp_path)
    names = [p.name for p, _ in ds.entries]
    assert names == ["anim.png", "frames", "seq.%04d.png"]
    assert ds.captions == ["animated", "another box", "a red box moving right"]


def test_reads_resizes_and_windows_a_clip(tmp_path):
    _write_apng(tmp_path / "box.png", _frames(10), fps=8)
    (tmp_path / "box.txt").write_text("a red box")
    _write_sequence(tmp_path, "short", _frames(3))
    (tmp_path / "short.txt").write_text("short clip")
    ds = FolderDataset(tmp_path, size=32, frames=6, fps=8, seed=1)
    s = ds[0]
    assert s.caption == "a red box" and s.source.endswith("box.png")
    assert s.rgba.shape == (6, 32, 32, 4) and s.rgba.dtype == np.float32
    assert 0.0 <= s.rgba.min() and s.rgba.max() <= 1.0
    a = s.rgba[..., 3]
    assert a.max() > 0.99 and (a == 0).any()
    red = s.rgba[..., :3][a > 0.5].mean(axis=0)
    assert red[0] > 0.7 and red[1] < 0.25, "premultiplied resize must not darken/bleed colour"
    assert s.objects == [] and s.track.shape == (0, 6, 2)
    # a 3-frame clip is padded by repeating the last frame
    short = ds[1]
    assert short.rgba.shape[0] == 6 and np.array_equal(short.rgba[2], short.rgba[5])
    batch = FolderDataset.collate([s, short])
    assert tuple(batch["video"].shape) == (2, 4, 6, 32, 32)


def test_training_visits_see_different_windows_of_a_long_clip(tmp_path):
    """Indexing is stable (caches, evaluation); `sample` with the loop's generator moves the window, so
    a long clip is not the same few frames on every visit."""
    _write_apng(tmp_path / "box.png", _frames(16), fps=8)
    (tmp_path / "box.txt").write_text("a red box")
    ds = FolderDataset(tmp_path, size=16, frames=4, fps=8, seed=0)
    assert np.array_equal(ds[0].rgba, ds[0].rgba)
    rng = np.random.default_rng(0)

    def box_left(rgba):  # the box moves 4 px right per source frame: its left edge dates the window
        return int(np.argmax(rgba[0, ..., 3].max(axis=0) > 0.5))

    starts = {box_left(ds.sample(0, rng).rgba) for _ in range(12)}
    assert len(starts) >= 4, starts

    from rgbacli.train.clips import ClipSource

    source = ClipSource(16, 4, str(tmp_path), seed=0)
    firsts = {int(np.argmax(source.batch(1)[0][0, 3, 0].amax(0).numpy() > 0.5)) for _ in range(12)}
    assert len(firsts) >= 4, firsts
