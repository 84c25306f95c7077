"""`rgba composite` through a real subprocess: outputs, exit codes, one-line errors, no leftovers.

Option checks that need no process boundary run in process (run_composite) to keep this fast.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rgbacli.media import Clip, read_clip, write_clip
from rgbacli.errors import UsageError
from rgbacli.media.composite import over, run_composite
from rgbacli.media.samples import varied_alpha_frames

FG = varied_alpha_frames(4, 16, 24)


@pytest.fixture
def media(tmp_path):
    write_clip(Clip(FG, 24), tmp_path / "fg.mkv")
    bg = np.random.default_rng(0).integers(0, 256, (6, 20, 30, 4), dtype=np.uint8)
    bg[..., 3] = 255
    write_clip(Clip(bg, 24), tmp_path / "bg.mkv")
    return tmp_path, bg


def one_line_error(r, code):
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if "warning" not in ln]
    assert len(lines) == 1 and lines[0].startswith("rgba") and "error" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_composite_over_video_exact_with_json(cli, media):
    d, bg = media
    r = cli("composite", d / "fg.mkv", "--over", d / "bg.mkv", "-o", d / "out.mkv", "--position", "3,-2",
            "--fit", "hold", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frames"] == 6 and summary["size"] == [30, 20] and summary["fps"] == 24
    assert summary["output"].endswith("out.mkv") and summary["seconds"] >= 0
    out = read_clip(d / "out.mkv").frames
    expected = bg.copy()
    for t in range(6):
        f = FG[min(t, 3), 2:, :]  # y = -2 cuts two rows off the top
        expected[t, 0:14, 3:27] = over(f, bg[t, 0:14, 3:27])
    np.testing.assert_array_equal(out, expected)


def test_composite_two_layers_over_colour_to_png_sequence(cli, media):
    d, _ = media
    r = cli("composite", d / "fg.mkv", d / "fg.mkv", "--over", "#336699", "-o", d / "o.%04d.png", "--size", "40x30",
            "--position", "0,0", "--position", "20,10", "--scale", "0.5")
    assert r.returncode == 0, r.stderr
    clip = read_clip(d / "o.%04d.png")
    assert clip.frames.shape == (4, 30, 40, 4)
    assert tuple(clip.frames[0, 29, 0]) == (0x33, 0x66, 0x99, 255)


@pytest.mark.parametrize("name", ["o.mp4", "o.webm", "o.gif", "o.mov"])
def test_run_composite_writes_every_kind_of_output(media, name):
    d, _ = media
    summary = run_composite([str(d / "fg.mkv")], str(d / "bg.mkv"), str(d / name), positions=[(-5, 4)])
    assert summary["frames"] == 6 and read_clip(d / name).n_frames == 6


def test_fg_without_alpha_warns(cli, media):
    d, _ = media
    write_clip(Clip(np.full((2, 8, 8, 4), 200, np.uint8)), d / "opaque.mp4")
    r = cli("composite", d / "opaque.mp4", "--over", "black", "-o", d / "x.apng")
    assert r.returncode == 0 and "no alpha channel" in r.stderr


def test_missing_input(cli, media):
    d, _ = media
    line = one_line_error(cli("composite", d / "nope.mov", "--over", "black", "-o", d / "o.mov"), 1)
    assert "nope.mov" in line and "no such file" in line
    assert not (d / "o.mov").exists()


@pytest.mark.parametrize("name,content", [("bad.webm", b"\x1aE\xdf\xa3 not really webm" * 50), ("bad.mov", None)])
def test_corrupt_input(cli, media, name, content):
    d, _ = media
    if content is None:  # a real .mov cut in half
        good = write_clip(Clip(FG), d / "good.mov").read_bytes()
        content = good[: len(good) // 2]
    (d / name).write_bytes(content)
    line = one_line_error(cli("composite", d / name, "--over", "black", "-o", d / "o.mkv"), 1)
    assert name in line and ("corrupt" in line or "truncated" in line)
    assert sorted(os.listdir(d)) == sorted(["fg.mkv", "bg.mkv", name] + (["good.mov"] if name == "bad.mov" else []))


def test_unknown_colour(cli, media):
    d, _ = media
    line = one_line_error(cli("composite", d / "fg.mkv", "--over", "blurple", "-o", d / "o.mkv"), 2)
    assert "unknown colour 'blurple'" in line


def test_output_exists_without_force_is_untouched(cli, media):
    d, _ = media
    (d / "o.mkv").write_bytes(b"precious")
    line = one_line_error(cli("composite", d / "fg.mkv", "--over", d / "bg.mkv", "-o", d / "o.mkv"), 1)
    assert "already exists" in line and "--force" in line
    assert (d / "o.mkv").read_bytes() == b"precious"
    r = cli("composite", d / "fg.mkv", "--over", d / "bg.mkv", "-o", d / "o.mkv", "--force")
    assert r.returncode == 0 and read_clip(d / "o.mkv").n_frames == 6


def test_missing_and_unwritable_output_dir(cli, media):
    d, _ = media
    line = one_line_error(cli("composite", d / "fg.mkv", "--over", "black", "-o", d / "no" / "o.mkv"), 1)
    assert "does not exist" in line
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        line = one_line_error(cli("composite", d / "fg.mkv", "--over", "black", "-o", ro / "o.mkv"), 1)
        assert "not writable" in line
    finally:
        ro.chmod(0o700)


def test_failure_midway_leaves_no_partial_output(cli, media):
    d, _ = media
    # the background's 4th frame is corrupt: compositing starts, then fails
    write_clip(Clip(np.full((5, 20, 30, 4), 255, np.uint8)), d / "seq.%04d.png")
    (d / "seq.0004.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    line = one_line_error(cli("composite", d / "fg.mkv", "--over", d / "seq.%04d.png", "-o", d / "o.mov"), 1)
    assert "seq.0004.png" in line
    leftovers = [n for n in os.listdir(d) if n.startswith((".o", "o."))]
    assert leftovers == []


def test_usage_errors_exit_2(cli, media):
    d, _ = media
    line = one_line_error(cli("composite", d / "fg.mkv", "--over", "black", "-o", d / "o.mkv", "--position", "3"), 2)
    assert "--position" in line
    line = one_line_error(cli("composite", d / "fg.mkv", "--over", d / "bg.mkv", "-o", d / "o.mkv", "--size", "8x8"), 2)
    assert "does not match" in line
    assert not [n for n in os.listdir(d) if n.startswith(("o.", ".o"))]


@pytest.mark.parametrize("kw,out,match", [
    ({"fit": "stretch"}, "o.mkv", "--fit"),
    ({}, "o.xyz", "unknown output extension"),
    ({"scales": [0.0]}, "o.mkv", "--scale"),
    ({}, "o.png", "one image"),  # 4 frames cannot go to a single image
    ({"positions": [(0, 0)] * 3}, "o.mkv", "given 3 times"),
])
def test_usage_errors_in_process(media, kw, out, match):
    d, _ = media
    with pytest.raises(UsageError, match=match):
        run_composite([str(d / "fg.mkv")], "black", str(d / out), **kw)
    assert not [n for n in os.listdir(d) if n.startswith(("o.", ".o"))]


def test_help_documents_fit_default(cli):
    r = cli("composite", "--help")
    assert r.returncode == 0 and "loop" in r.stdout and "hold" in r.stdout and "--premultiplied" in r.stdout
