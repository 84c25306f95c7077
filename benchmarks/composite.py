"""Benchmark `rgba composite` against ffmpeg's overlay filter on the same job.

Job: a 120-frame 512×512 RGBA foreground (ProRes 4444 .mov, moving soft-edged shapes and an
alpha gradient) over a 512×512 H.264 background → H.264 .mp4. Inputs are generated first,
outside the timings. Both sides encode with libx264 preset/crf from rgbacli.media.write.H264_OPTIONS
and yuv420p. ffmpeg runs twice: overlay in RGB (format=gbrp, the same maths as ours) and its
default (format=yuv420, blends in YUV: cheaper, not the same result).

    python benchmarks/composite.py [--frames 120] [--size 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgbacli.media import Clip, run_composite, write_clip  # noqa: E402
from rgbacli.media.write import H264_OPTIONS  # noqa: E402


def make_inputs(d: Path, frames: int, size: int) -> tuple[Path, Path]:
    """FG: drifting discs with soft edges over a transparent→half-opaque ramp; BG: moving stripes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    fg = np.zeros((frames, size, size, 4), np.uint8)
    bg = np.zeros((frames, size, size, 4), np.uint8)
    for t in range(frames):
        cx, cy = size * (0.2 + 0.6 * t / frames), size * (0.5 + 0.3 * np.sin(t / 9))
        r = np.hypot(xx - cx, yy - cy)
        disc = np.clip((size * 0.18 - r) / 6, 0, 1)
        ramp = 0.5 * xx / size
        alpha = np.maximum(disc, ramp * (yy > size * 0.7))
        fg[t, ..., 0] = 255 * disc
        fg[t, ..., 1] = (xx + 3 * t) % 256
        fg[t, ..., 2] = 255 - (yy % 256)
        fg[t, ..., 3] = np.rint(alpha * 255)
        stripes = ((xx + yy + 4 * t) // 32) % 2
        bg[t, ..., 0] = 60 + 120 * stripes
        bg[t, ..., 1] = (yy * 0.4 + t) % 256
        bg[t, ..., 2] = 90
        bg[t, ..., 3] = 255
    fg_path, bg_path = d / "fg.mov", d / "bg.mp4"
    write_clip(Clip(fg, 24.0), fg_path)
    write_clip(Clip(bg, 24.0), bg_path)
    return fg_path, bg_path


def time_ours(fg: Path, bg: Path, out: Path) -> float:
    t = time.perf_counter()
    run_composite([str(fg)], str(bg), str(out), force=True)
    return time.perf_counter() - t


def time_cli(fg: Path, bg: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rgbacli", "composite", str(fg), "--over", str(bg), "-o", str(out),
                    "--force"], check=True, capture_output=True)
    return time.perf_counter() - t


def time_ffmpeg(fg: Path, bg: Path, out: Path, fmt: str) -> float:
    cmd = ["ffmpeg", "-y", "-v", "error", "-i", str(bg), "-i", str(fg), "-filter_complex",
           f"[0:v][1:v]overlay=0:0:format={fmt}", "-c:v", "libx264", "-preset", H264_OPTIONS["preset"],
           "-crf", H264_OPTIONS["crf"], "-pix_fmt", "yuv420p", "-an", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; the median is reported")
    ap.add_argument("--cli", action="store_true", help="also time the `rgba composite` subprocess")
    args = ap.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        fg, bg = make_inputs(d, args.frames, args.size)
        print(f"job: {args.frames} frames {args.size}x{args.size} ProRes 4444 FG over H.264 BG -> H.264 "
              f"(libx264 preset={H264_OPTIONS['preset']} crf={H264_OPTIONS['crf']}, yuv420p)")
        runs: dict[str, list[float]] = {"ours": []}
        if ffmpeg:
            runs["ffmpeg-rgb"], runs["ffmpeg-yuv"] = [], []
        if args.cli:
            runs["ours-cli"] = []
        for _ in range(args.repeat):  # interleaved so both sides see the same machine state
            runs["ours"].append(time_ours(fg, bg, d / "ours.mp4"))
            if ffmpeg:
                runs["ffmpeg-rgb"].append(time_ffmpeg(fg, bg, d / "ff_rgb.mp4", "gbrp"))
                runs["ffmpeg-yuv"].append(time_ffmpeg(fg, bg, d / "ff_yuv.mp4", "yuv420"))
            if args.cli:
                runs["ours-cli"].append(time_cli(fg, bg, d / "cli.mp4"))
        med = {k: statistics.median(v) for k, v in runs.items()}
        for k, v in med.items():
            print(f"{k:11s} {v:6.2f} s   ({args.frames / v:6.1f} frames/s; runs: {', '.join(f'{x:.2f}' for x in runs[k])})")
        if ffmpeg:
            version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
            print(f"ratio ours/ffmpeg-rgb = {med['ours'] / med['ffmpeg-rgb']:.2f}   "
                  f"ours/ffmpeg-yuv = {med['ours'] / med['ffmpeg-yuv']:.2f}   ({version})")
        else:
            print("ffmpeg not on PATH: no comparison (apt-get install ffmpeg)")


if __name__ == "__main__":
    main()
