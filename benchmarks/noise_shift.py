"""Noise shift (Wan-Alpha v2.0): does the object appear where the mask says, on the tiny model?

    python benchmarks/noise_shift.py [--seeds 3] [--means 0.05,0.25,0.5,1.0] [--threads 1]

For each prompt and seed, one clip without a shift and, for each mean, clips with a static
ellipse at x = 0.25 and at x = 0.75 (y 0.5, size 0.4) and a moving one (0.2 → 0.8). Measured on
the decoded alpha: its centroid (alpha-weighted, fractions of the frame) against the ellipse
centre. Same prompts, seeds and settings for "off" and "on", so the difference is the shift's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ("a red orb", "a glowing blue star", "a green heart", "a yellow leaf", "a white ghost", "a pink bubble")
LEFT, RIGHT, SIZE = (0.25, 0.5), (0.75, 0.5), (0.4, 0.4)


def centroids(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 4) → (T, 2) alpha-weighted centre (x, y) in fractions; NaN where alpha is empty."""
    a = frames[..., 3].float()
    t, h, w = a.shape
    xs = (torch.arange(w) + 0.5) / w
    ys = (torch.arange(h) + 0.5) / h
    mass = a.sum(dim=(1, 2)).clamp(min=1e-6)
    cx = (a.sum(dim=1) * xs).sum(dim=1) / mass
    cy = (a.sum(dim=2) * ys).sum(dim=1) / mass
    return torch.stack([cx, cy], dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--means", default="0.05,0.25,0.5,1.0")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the prompts")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from rgbacli.engine import Engine
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    eng = Engine(args.preset, device="cpu")
    pipe = TextToRGBAPipeline(eng)
    means = [float(m) for m in args.means.split(",")]
    t0 = time.perf_counter()

    def run(prompt, seed, **shift):
        p = params_from_preset(eng, prompt, seed=seed, **shift)
        return centroids(pipe(p).frames)

    rows = {"off": {"left_err": [], "right_err": [], "start_x": [], "end_x": []}}
    for m in means:
        rows[m] = {"left_err": [], "right_err": [], "start_x": [], "end_x": [], "side_ok": []}
    for prompt in PROMPTS[: args.prompts]:
        for seed in range(args.seeds):
            print(f"{prompt!r} seed {seed} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
            off = run(prompt, seed)
            cx = float(off[:, 0].mean())
            rows["off"]["left_err"].append(abs(cx - LEFT[0]))
            rows["off"]["right_err"].append(abs(cx - RIGHT[0]))
            rows["off"]["start_x"].append(float(off[:4, 0].mean()))
            rows["off"]["end_x"].append(float(off[-4:, 0].mean()))
            for m in means:
                left = float(run(prompt, seed, alpha_shift=m, alpha_center=[list(LEFT)], alpha_size=list(SIZE))[:, 0].mean())
                right = float(run(prompt, seed, alpha_shift=m, alpha_center=[list(RIGHT)], alpha_size=list(SIZE))[:, 0].mean())
                move = run(prompt, seed, alpha_shift=m, alpha_center=[[0.2, 0.5], [0.8, 0.5]], alpha_size=list(SIZE))
                r = rows[m]
                r["left_err"].append(abs(left - LEFT[0]))
                r["right_err"].append(abs(right - RIGHT[0]))
                r["side_ok"].append(float(left < right))
                r["start_x"].append(float(move[:4, 0].mean()))
                r["end_x"].append(float(move[-4:, 0].mean()))

    def avg(v):
        return sum(v) / len(v) if v else float("nan")

    report = {"preset": args.preset, "clips_per_setting": args.prompts * args.seeds,
              "seconds": round(time.perf_counter() - t0, 1), "settings": {}}
    for key, r in rows.items():
        report["settings"][str(key)] = {k: round(avg(v), 4) for k, v in r.items()}
    print(json.dumps(report, indent=2))
    off = report["settings"]["off"]
    print(f"{'mean':>6} | |x−0.25| (left) | |x−0.75| (right) | left<right | moving 0.2→0.8: x first→last 4 frames")
    print(f"{'off':>6} | {off['left_err']:.3f} | {off['right_err']:.3f} | - | {off['start_x']:.3f} → {off['end_x']:.3f}")
    for m in means:
        s = report["settings"][str(m)]
        print(f"{m:>6} | {s['left_err']:.3f} | {s['right_err']:.3f} | {s['side_ok']:.2f} | "
              f"{s['start_x']:.3f} → {s['end_x']:.3f}")


if __name__ == "__main__":
    main()
