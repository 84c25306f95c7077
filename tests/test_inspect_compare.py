"""`rgba inspect` and `rgba compare`: figures against numpy, thresholds, exit codes, one-line errors.

Clips are tiny (16x24, a few frames) and lossless (FFV1 .mkv) unless a codec is the point of the
test, so every figure can be computed by hand. CLI behaviour runs in real subprocesses; figures
that need no process boundary are checked in process (faster).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rgbacli.errors import MediaError
from rgbacli.media import Clip, read_clip, write_clip
from rgbacli.media.compare import DIFF_GAIN, DIFF_GAP, alpha_iou, compare_files
from rgbacli.media.inspect import inspect_file
from rgbacli.media.samples import varied_alpha_frames

T, H, W = 4, 16, 24


def square_frames(shift_frames=(), t=T) -> np.ndarray:
    """An opaque 8x8 square at rows/cols 4..11 over transparency, shifted 1 px right in `shift_frames`."""
    f = np.zeros((t, H, W, 4), np.uint8)
    f[..., 0], f[..., 1], f[..., 2] = 200, 100, 50
    for i in range(t):
        x = 5 if i in shift_frames else 4
        f[i, 4:12, x : x + 8, 3] = 255
    return f


def write(tmp_path, name, frames, **kw):
    path = tmp_path / name
    write_clip(Clip(frames, 24.0), path, **kw)
    return path


def one_line_error(r, code):
    """Exit `code`, exactly one `rgba…error…` line on stderr, never a traceback or an internal error."""
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if "warning" not in ln]
    assert len(lines) == 1 and lines[0].startswith("rgba") and "error" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    return lines[0]


def check_lines(r):
    return [ln for ln in r.stderr.splitlines() if ln.startswith("rgba: check failed:")]


# --- hand-computed references -----------------------------------------------------------------


def premultiplied(frames: np.ndarray) -> np.ndarray:
    """round(C·α/255) in integers (no ties: 255 is odd), independent of the library's helper."""
    f = frames.astype(np.int64)
    return (f[..., :3] * f[..., 3:4] + 127) // 255


def ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of (H, W, C) floats in [0, 1]: 11-tap Gaussian (σ 1.5), reflect padding, c1/c2 of Wang et al."""
    r = 5
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * 1.5**2))
    k /= k.sum()

    def blur(img):
        p = np.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")
        rows = sum(k[i] * p[i : i + img.shape[0]] for i in range(2 * r + 1))
        return sum(k[j] * rows[:, j : j + img.shape[1]] for j in range(2 * r + 1))

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean())


# --- compare: figures ---------------------------------------------------------------------------


def test_per_frame_figures_match_numpy(tmp_path):
    a = varied_alpha_frames(T, H, W)
    rng = np.random.default_rng(1)
    b = a.copy()
    b[..., :3] = np.clip(a[..., :3].astype(int) + rng.integers(-20, 21, a[..., :3].shape), 0, 255)
    b[:, 2:6, 10:20, 3] = 255 - a[:, 2:6, 10:20, 3]  # alpha changes too, across the 0.5 line
    pa_path, pb_path = write(tmp_path, "a.mkv", a), write(tmp_path, "b.mkv", b)
    res = compare_files(pa_path, pb_path)
    assert res.frames == T and res.metrics == ["alpha-iou", "alpha-mae", "psnr", "ssim"]
    pa, pb = premultiplied(a), premultiplied(b)
    mses = []
    for i, row in enumerate(res.per_frame):
        ma, mb = a[i, ..., 3] >= 128, b[i, ..., 3] >= 128
        assert row["frame"] == i
        assert row["alpha-iou"] == pytest.approx((ma & mb).sum() / (ma | mb).sum(), abs=1e-12)
        assert row["alpha-mae"] == pytest.approx(np.abs(a[i, ..., 3].astype(int) - b[i, ..., 3]).mean() / 255, abs=1e-12)
        mse = ((pa[i] - pb[i]) ** 2).mean() / 255**2
        mses.append(mse)
        assert row["psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-9)
        assert row["ssim"] == pytest.approx(ssim_reference(pa[i] / 255, pb[i] / 255), abs=2e-5)
    s = res.summary
    assert s["psnr"]["mean"] == pytest.approx(10 * np.log10(1 / np.mean(mses)), abs=1e-9)
    worst = int(np.argmin([r["ssim"] for r in res.per_frame]))
    assert s["ssim"]["worst_frame"] == worst and s["ssim"]["worst"] == res.per_frame[worst]["ssim"]
    assert s["alpha-mae"]["mean"] == pytest.approx(np.mean([r["alpha-mae"] for r in res.per_frame]))


def test_empty_alpha_on_both_sides_is_iou_1():
    empty = np.zeros((H, W), np.uint8)
    assert alpha_iou(empty, empty) == 1.0
    assert alpha_iou(empty, np.full((H, W), 128, np.uint8)) == 0.0


def test_identical_files_psnr_inf_iou_1_exit_0(cli, tmp_path):
    a = write(tmp_path, "a.mkv", varied_alpha_frames(T, H, W))
    r = cli("compare", a, a, "--json", "--min-alpha-iou", "1", "--max-alpha-mae", "0", "--min-psnr", "inf",
            "--min-ssim", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] is True and out["failures"] == [] and out["frames"] == T
    for row in out["per_frame"]:
        assert row == {"frame": row["frame"], "alpha-iou": 1.0, "alpha-mae": 0.0, "psnr": "inf", "ssim": 1.0}
    assert out["summary"]["psnr"] == {"mean": "inf", "worst": "inf", "worst_frame": 0}
    assert out["thresholds"]["psnr"] == {"option": "--min-psnr", "value": "inf"}


def test_alpha_shifted_by_one_pixel_fails_iou_with_frames_listed(cli, tmp_path):
    a = write(tmp_path, "a.mkv", square_frames())
    b = write(tmp_path, "b.mkv", square_frames(shift_frames=(1, 2)))
    r = cli("compare", a, b, "--metric", "alpha-iou,alpha-mae", "--min-alpha-iou", "0.9", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    iou, mae = 56 / 72, 16 / (H * W)  # 8x8 squares one column apart: 8x7 overlap, 8x9 union; 2 columns of 8 differ
    assert [row["alpha-iou"] for row in out["per_frame"]] == pytest.approx([1, iou, iou, 1])
    assert [row["alpha-mae"] for row in out["per_frame"]] == pytest.approx([0, mae, mae, 0])
    assert out["failures"] == [{"metric": "alpha-iou", "option": "--min-alpha-iou", "threshold": 0.9,
                                "frames": [1, 2], "values": pytest.approx([iou, iou])}]
    (line,) = check_lines(r)
    assert f"{b} vs {a}: alpha-iou below --min-alpha-iou 0.9 in 2 of 4 frames: 1 (0.7778), 2 (0.7778)" in line
    assert "ssim" not in out["per_frame"][0] and "Traceback" not in r.stderr


def test_colour_under_zero_alpha_does_not_count_colour_under_opaque_does(cli, tmp_path):
    a_frames = varied_alpha_frames(T, H, W)
    hidden, shown = a_frames.copy(), a_frames.copy()
    clear, opaque = a_frames[..., 3] == 0, a_frames[..., 3] == 255
    assert clear.any() and opaque.any()
    hidden[..., :3][clear] = 255 - hidden[..., :3][clear]
    shown[..., :3][opaque] = 255 - shown[..., :3][opaque]
    a = write(tmp_path, "a.mkv", a_frames)
    same = compare_files(a, a)
    under_clear = compare_files(a, write(tmp_path, "hidden.mkv", hidden))
    assert under_clear.per_frame == same.per_frame and under_clear.summary == same.summary
    r = cli("compare", a, write(tmp_path, "shown.mkv", shown), "--min-psnr", "40", "--min-ssim", "0.99")
    assert r.returncode == 1, r.stderr
    lines = check_lines(r)
    assert len(lines) == 2 and "psnr below --min-psnr 40 in 4 of 4 frames: 0 (" in lines[0]
    assert "ssim below --min-ssim 0.99 in 4 of 4 frames" in lines[1]
    assert "│ psnr" in r.stderr and "FAIL" in r.stderr  # the human table


def test_different_sizes_exit_2_and_resize_compares(cli, tmp_path):
    a = write(tmp_path, "a.mkv", square_frames())
    big = np.repeat(np.repeat(square_frames(), 2, axis=1), 2, axis=2)  # 32x48, same picture
    b = write(tmp_path, "b.mkv", big)
    line = one_line_error(cli("compare", a, b), 2)
    assert line == f"rgba: error: {a} is 24x16 but {b} is 48x32 (pass --resize to resize B to A)"
    r = cli("compare", a, b, "--resize", "--json", "--metric", "alpha-iou,psnr", "--min-alpha-iou", "0.99")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["resized"] is True and out["size"] == [24, 16] and out["b_size"] == [48, 32]
    assert all(row["alpha-iou"] == 1.0 for row in out["per_frame"])


def test_diff_picture_and_diff_clip(cli, tmp_path):
    a_frames = square_frames()
    b_frames = square_frames(shift_frames=(2,))
    b_frames[3, 6, 6, :3] = (100, 100, 50)  # a colour change inside the square in frame 3 (α = 255)
    a, b = write(tmp_path, "a.mkv", a_frames), write(tmp_path, "b.mkv", b_frames)
    r = cli("compare", a, b, "--diff", tmp_path / "d.png", "--metric", "alpha-mae")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "(frame 2)" in r.stderr  # the frame that differs most
    pic = np.asarray(Image.open(tmp_path / "d.png"))
    assert pic.shape == (H, 2 * W + DIFF_GAP, 4)
    assert pic[5, 4, 0] == 255 and pic[5, 12, 0] == 255 and pic[5, 8, 0] == 0  # alpha difference at both edges
    assert (pic[:, W : W + DIFF_GAP, :3] == 128).all()
    r = cli("compare", a, b, "--diff", tmp_path / "d.mkv", "--metric", "psnr")
    assert r.returncode == 0, r.stderr
    clip = read_clip(tmp_path / "d.mkv")
    assert clip.frames.shape == (T, H, 2 * W + DIFF_GAP, 4)
    right = clip.frames[3, :, W + DIFF_GAP :, :3].astype(int)
    assert tuple(right[6, 6]) == (min(255, 100 * DIFF_GAIN), 0, 0) and right.sum() == 255  # |200-100|·4 clipped
    assert not clip.frames[0, :, :W, :3].any() and not clip.frames[0, :, W + DIFF_GAP :, :3].any()  # same: black
    one_line_error(cli("compare", a, b, "--diff", tmp_path / "d.png"), 1)  # exists, no --force
    r = cli("compare", a, b, "--diff", tmp_path / "d.png", "--force", "--metric", "alpha-iou")
    assert r.returncode == 0, r.stderr


# --- inspect ------------------------------------------------------------------------------------


def test_inspect_per_frame_coverage_against_numpy(tmp_path):
    f = varied_alpha_frames(T, H, W)
    f[1, ..., 3] = 0  # an empty frame
    f[2, :8, :, 3] = 255
    f[3, 0, 0, 3] = 127  # just below the 0.5 line
    rep = inspect_file(write(tmp_path, "a.mkv", f))
    a = f[..., 3]
    assert rep.coverage_per_frame == pytest.approx(list((a >= 128).mean(axis=(1, 2))))
    assert rep.semi_transparent_per_frame == pytest.approx(list(((a > 0) & (a < 255)).mean(axis=(1, 2))))
    assert rep.coverage == pytest.approx((a >= 128).mean()) and rep.semi_transparent == pytest.approx(((a > 0) & (a < 255)).mean())
    assert (rep.coverage_min, rep.coverage_min_frame) == (0.0, 1)
    assert rep.coverage_max_frame == 2 and rep.coverage_max == pytest.approx((a[2] >= 128).mean())
    assert (rep.frames, rep.width, rep.height, rep.fps, rep.duration) == (T, W, H, 24.0, T / 24)
    assert (rep.format, rep.codec, rep.pix_fmt, rep.alpha_plane, rep.alpha_used) == ("mkv", "ffv1", "bgra", True, True)
    assert set(rep.color) == {"primaries", "transfer", "matrix", "range"}


@pytest.mark.parametrize("name,container", [("seq.%04d.exr", "exr sequence"), ("seq.%04d.tif", "tiff sequence"),
                                            ("folder", "png sequence")])
def test_inspect_image_sequences(tmp_path, name, container):
    """EXR and TIFF sequences (the VFX delivery formats) and a folder of frames are inspected too."""
    f = square_frames()
    rep = inspect_file(write(tmp_path, name, f))
    assert rep.container == container and rep.frames == T and (rep.width, rep.height) == (W, H)
    assert rep.alpha_used and rep.coverage == pytest.approx((f[..., 3] >= 128).mean())


def test_inspect_coverage_thresholds(cli, tmp_path):
    f = square_frames()
    f[2, ..., 3] = 0
    path = write(tmp_path, "sq.mkv", f)
    cov = 64 / (H * W)
    r = cli("inspect", path, "--min-coverage", "0.1")
    assert r.returncode == 1
    assert check_lines(r) == [f"rgba: check failed: {path}: alpha coverage 0.0000 in frame 2 < --min-coverage 0.1 "
                              f"(1 of 4 frames below)"]
    r = cli("inspect", path, "--max-coverage", "0.15", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["passed"] is False and out["files"][0]["coverage_per_frame"] == pytest.approx([cov, cov, 0, cov])
    assert out["failures"] == [f"{path}: alpha coverage 0.1667 in frame 0 > --max-coverage 0.15 (3 of 4 frames above)"]
    r = cli("inspect", path, "--min-coverage", "0", "--max-coverage", "0.17", "--require-alpha")
    assert r.returncode == 0 and "coverage (a > 0.5)" in r.stderr and check_lines(r) == []


def test_opaque_mp4_fails_require_alpha(cli, tmp_path):
    f = varied_alpha_frames(2, H, W)
    f[..., 3] = 255
    mp4 = write(tmp_path, "o.mp4", f)
    mkv = write(tmp_path, "o.mkv", f)  # an alpha plane, unused
    r = cli("inspect", mp4, mkv, "--require-alpha", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert [x["alpha_plane"] for x in out["files"]] == [False, True]
    assert [x["alpha_used"] for x in out["files"]] == [False, False]
    assert check_lines(r) == [f"rgba: check failed: {mp4}: no alpha channel (h264, yuv420p) but --require-alpha",
                              f"rgba: check failed: {mkv}: alpha is 255 in every pixel of all 2 frames "
                              f"(alpha plane unused) but --require-alpha"]


def test_vp9_webm_alpha_is_read_through_libvpx(cli, tmp_path):
    f = square_frames()
    path = write(tmp_path, "a.webm", f)
    r = cli("inspect", path, "--require-alpha", "--json")
    assert r.returncode == 0, r.stderr
    (rep,) = json.loads(r.stdout)["files"]
    assert (rep["codec"], rep["decoder"], rep["alpha_plane"], rep["alpha_used"]) == ("vp9", "libvpx-vp9", True, True)
    assert rep["alpha_source"] == "VPx alpha side data, alpha_mode=1"
    assert rep["alpha_min"] <= 2 and rep["coverage"] == pytest.approx(64 / (H * W), abs=0.02)


def test_premultiplied_estimate(tmp_path):
    f = varied_alpha_frames(T, H, W)
    straight = inspect_file(write(tmp_path, "s.mkv", f)).premultiplied
    pre = inspect_file(write(tmp_path, "p.mkv", f, premultiplied=True)).premultiplied
    rgb_max = f[..., :3].max(axis=-1).astype(int)
    non_opaque = f[..., 3] < 255
    expected = ((rgb_max - f[..., 3] > 2) & non_opaque).sum() / non_opaque.sum()
    assert straight["verdict"] == "straight" and straight["violating_share"] == pytest.approx(expected)
    assert pre["verdict"] == "likely premultiplied" and pre["violating_pixels"] == 0
    opaque = f.copy()
    opaque[..., 3] = 255
    assert inspect_file(write(tmp_path, "o.mkv", opaque)).premultiplied["verdict"] == "unknown"


def test_paths_with_brackets_print_as_they_are(cli, tmp_path):
    """Rich markup never eats a file name: '[draft]' stays in the tables and messages."""
    path = write(tmp_path, "[draft] a.mkv", square_frames())
    r = cli("inspect", path)
    assert r.returncode == 0 and f"{path}\n" in r.stderr, r.stderr
    r = cli("compare", path, path, "--metric", "alpha-iou", "--diff", tmp_path / "[d].png")
    assert r.returncode == 0 and f"{path} vs {path}: 4 frames 24x16\n" in r.stderr, r.stderr
    assert f"wrote {tmp_path / '[d].png'} (frame 0)" in r.stderr


# --- bad input: one line, the right exit code ----------------------------------------------------


@pytest.fixture
def clips(tmp_path):
    write(tmp_path, "a.mkv", square_frames())
    write(tmp_path, "short.mkv", square_frames(t=3))
    (tmp_path / "corrupt.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + bytes(range(256)) * 4)
    (tmp_path / "x.xyz").write_bytes(b"hello")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize("args, code, needle", [
    (["inspect", "missing.mov"], 1, "missing.mov: no such file or directory"),
    (["inspect", "corrupt.mov"], 1, "corrupt.mov: unreadable or corrupt media"),
    (["inspect", "x.xyz"], 2, "unknown input extension '.xyz'"),
    (["inspect", "empty"], 1, "empty: no PNG, EXR or TIFF frames found"),
    (["inspect", "a.mkv", "--min-coverage", "abc"], 2, "Invalid value for '--min-coverage'"),
    (["inspect", "a.mkv", "--max-coverage", "1.5"], 2, "--max-coverage must be a share between 0 and 1, got 1.5"),
    (["inspect", "a.mkv", "--min-coverage", "nan"], 2, "--min-coverage must be a share between 0 and 1, got nan"),
    (["inspect", "a.mkv", "--min-coverage", "0.6", "--max-coverage", "0.2"], 2, "is above --max-coverage"),
    (["inspect"], 2, "Missing argument"),
    (["compare", "a.mkv", "missing.mkv"], 1, "missing.mkv: no such file or directory"),
    (["compare", "a.mkv", "corrupt.mov"], 1, "corrupt.mov: unreadable or corrupt media"),
    (["compare", "a.mkv", "x.xyz"], 2, "unknown input extension '.xyz'"),
    (["compare", "a.mkv", "short.mkv"], 2, "a.mkv has 4 frames but short.mkv has 3"),
    (["compare", "a.mkv", "a.mkv", "--metric", "alpha-iou,sharpness"], 2, "unknown metric 'sharpness' in --metric"),
    (["compare", "a.mkv", "a.mkv", "--metric", ","], 2, "--metric needs at least one of"),
    (["compare", "a.mkv", "a.mkv", "--min-psnr", "high"], 2, "Invalid value for '--min-psnr'"),
    (["compare", "a.mkv", "a.mkv", "--min-psnr", "-3"], 2, "--min-psnr must be a number of dB ≥ 0 (or inf), got -3"),
    (["compare", "a.mkv", "a.mkv", "--min-alpha-iou", "2"], 2, "--min-alpha-iou must be between 0 and 1, got 2"),
    (["compare", "a.mkv", "a.mkv", "--max-alpha-mae", "nan"], 2, "--max-alpha-mae must be between 0 and 1, got nan"),
    (["compare", "a.mkv", "a.mkv", "--min-ssim", "-2"], 2, "--min-ssim must be between -1 and 1, got -2"),
    (["compare", "a.mkv", "a.mkv", "--diff", "d.xyz"], 2, "unknown output extension '.xyz'"),
    (["compare", "a.mkv", "a.mkv", "--diff", "nodir/d.png"], 1, "output directory nodir does not exist"),
    (["compare", "a.mkv"], 2, "Missing argument"),
])
def test_bad_input_is_one_line(cli, clips, args, code, needle):
    r = cli(*args, cwd=clips)
    line = one_line_error(r, code)
    assert needle in line, line
    assert r.stdout == ""
    if args[0] == "compare":
        assert not list(clips.glob("d.*")) and not list(clips.glob(".d*"))  # no diff output, no temp left


def test_os_error_while_writing_the_diff_is_one_media_error(tmp_path, monkeypatch):
    """A folder that refuses temporary files (e.g. /proc, as root) is a MediaError, not exit 3."""
    import tempfile

    a = write(tmp_path, "a.mkv", square_frames())

    def refuse(*args, **kw):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".d.tmp-x.mkv"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(MediaError, match=r"d\.mkv: cannot create a temporary file in .* \(Permission denied\)$"):
        compare_files(a, a, metrics=["alpha-iou"], diff=tmp_path / "d.mkv")


def test_ssim_without_kornia_is_one_line(tmp_path, monkeypatch):
    import sys

    from rgbacli.errors import RgbaError

    a = write(tmp_path, "a.mkv", square_frames())
    monkeypatch.setitem(sys.modules, "kornia.metrics", None)  # what an install without kornia looks like
    with pytest.raises(RgbaError, match="SSIM needs the kornia package"):
        compare_files(a, a, metrics=["ssim"])
    assert compare_files(a, a, metrics=["psnr"]).summary["psnr"]["worst"] == float("inf")


def test_commands_import_nothing_heavy_until_run():
    """`rgba --help` stays fast: registering the commands imports neither torch nor kornia nor PyAV."""
    import subprocess
    import sys

    code = "import sys, rgbacli.cli; print(sorted(m for m in ('torch', 'kornia', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
