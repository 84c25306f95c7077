"""Benchmark `rgba compare` against `ffmpeg -lavfi ssim` on the same pair of clips.

Pair: two 120-frame 512×512 RGBA ProRes 4444 .mov clips (our default output): A is the
bundled sample's soft moving disc with a translucent shadow, B is A with colour noise and its
alpha shifted by one pixel. They are generated first, outside the timings. Timed, alternating
so both sides see the same machine state, best of --repeat runs each:

- `rgba compare A B --json` as a subprocess (CLI start-up, decoding both clips, alpha IoU/MAE,
  premultiplied PSNR and SSIM through kornia);
- the same in process (`compare_files`), and with `--metric psnr` only (what SSIM costs);
- `ffmpeg -i A -i B -lavfi ssim -f null -` (decodes both and computes SSIM on its 8x8 blocks of
  the YUV planes: not the same figure, the same job).

    python benchmarks/compare.py [--frames 120] [--size 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgbacli.media import Clip, write_clip  # noqa: E402
from rgbacli.media.compare import compare_files  # noqa: E402
from rgbacli.media.samples import moving_disc_frames  # noqa: E402


def make_pair(d: Path, frames: int, size: int) -> tuple[Path, Path]:
    """A: soft disc clip; B: A plus ±6 colour noise, alpha shifted one pixel to the right."""
    a = moving_disc_frames(frames, size, size)
    rng = np.random.default_rng(0)
    b = a.copy()
    b[..., :3] = np.clip(a[..., :3].astype(np.int16) + rng.integers(-6, 7, a[..., :3].shape), 0, 255)
    b[:, :, 1:, 3] = a[:, :, :-1, 3]
    pa, pb = d / "a.mov", d / "b.mov"
    write_clip(Clip(a, 24.0), pa)
    write_clip(Clip(b, 24.0), pb)
    return pa, pb


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its children): on a shared machine the CPU
    figure says what the job costs when other work takes cores away from the wall clock."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    t, c = time.perf_counter(), time.process_time()
    fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - kids.ru_utime) + (after.ru_stime - kids.ru_stime)
    return time.perf_counter() - t, time.process_time() - c + child_cpu


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; the best is reported")
    args = ap.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        sys.exit("ffmpeg not on PATH: no comparison (apt-get install ffmpeg)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        a, b = make_pair(Path(tmp), args.frames, args.size)
        sides = {
            "rgba compare (CLI)": lambda: subprocess.run([sys.executable, "-m", "rgbacli", "compare", str(a), str(b),
                                                          "--json"], check=True, capture_output=True, env=env),
            "compare_files (in process)": lambda: compare_files(a, b),
            "compare_files --metric psnr": lambda: compare_files(a, b, metrics=["psnr"]),
            "ffmpeg -lavfi ssim": lambda: run([ffmpeg, "-v", "error", "-i", str(a), "-i", str(b), "-lavfi", "ssim",
                                               "-f", "null", "-"]),
        }
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
        load = [os.getloadavg()[0]]
        for _ in range(args.repeat):  # alternate the sides
            for name, fn in sides.items():
                runs[name].append(timed(fn))
            load.append(os.getloadavg()[0])
        print(f"pair: {args.frames} frames {args.size}x{args.size} ProRes 4444 RGBA .mov, best of {args.repeat} "
              f"(os.cpu_count() = {os.cpu_count()}, 1-min load during the runs {min(load):.1f}-{max(load):.1f})")
        wall = {k: min(w for w, _ in v) for k, v in runs.items()}
        cpu = {k: min(c for _, c in v) for k, v in runs.items()}
        for k in sides:
            print(f"{k:28s} wall {wall[k]:6.2f} s ({args.frames / wall[k]:5.1f} frames/s)  CPU {cpu[k]:6.2f} s   "
                  f"runs: {', '.join(f'{w:.2f}' for w, _ in runs[k])}")
        version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
        ff, ffc = wall["ffmpeg -lavfi ssim"], cpu["ffmpeg -lavfi ssim"]
        print(f"ratio rgba compare (CLI) / ffmpeg ssim: wall {wall['rgba compare (CLI)'] / ff:.2f}, "
              f"CPU {cpu['rgba compare (CLI)'] / ffc:.2f}; in process / ffmpeg: wall "
              f"{wall['compare_files (in process)'] / ff:.2f}   ({version})")


if __name__ == "__main__":
    main()
