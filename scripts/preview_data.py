#!/usr/bin/env python
"""Contact sheet of procedural clips (frames 0, mid, last over a checkerboard) for eyeballing.

    python scripts/preview_data.py --out /tmp/data_samples.png [--count 12] [--seed 0]
    python scripts/preview_data.py --out /tmp/subjects.png --subjects   # one row per subject
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgbacli.data import SUBJECTS, ClipSpec, ObjectSpec, make_clip  # noqa: E402
from rgbacli.data.procedural import SUBJECT_MATERIALS  # noqa: E402


def checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    board = ((yy // cell + xx // cell) % 2).astype(np.float32)
    return (0.55 + 0.25 * board)[..., None].repeat(3, axis=-1)


def over_checker(rgba: np.ndarray, scale: int) -> Image.Image:
    rgba = rgba.repeat(scale, axis=0).repeat(scale, axis=1)
    a = rgba[..., 3:]
    img = rgba[..., :3] * a + checker(*rgba.shape[:2], cell=4 * scale) * (1 - a)
    return Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))


def subject_samples(seed: int) -> list:
    out = []
    for i, subject in enumerate(SUBJECTS):
        for j, material in enumerate(SUBJECT_MATERIALS[subject][:2]):
            colour = ["red", "cyan", "yellow", "purple", "green", "orange", "pink", "blue", "white"][(i + 3 * j) % 9]
            obj = ObjectSpec(subject, material, colour, "spin" if subject in ("star", "leaf") else "right",
                             radius=0.17, pos=(0.5, 0.5), variant=(seed + i) % 8)
            out.append(make_clip(seed + i, spec=ClipSpec((obj,))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--subjects", action="store_true", help="one clip per subject and material")
    args = ap.parse_args()

    samples = subject_samples(args.seed) if args.subjects else [make_clip(args.seed + i) for i in range(args.count)]
    t = samples[0].rgba.shape[0]
    picks = [0, t // 2, t - 1]
    s = samples[0].rgba.shape[1] * args.scale
    cols = 2
    cell_w, cell_h = 3 * s + 2 * 4, s + 30
    sheet = Image.new("RGB", (cols * (cell_w + 16) + 16, ((len(samples) + cols - 1) // cols) * (cell_h + 10) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    for k, sample in enumerate(samples):
        x0 = 16 + (k % cols) * (cell_w + 16)
        y0 = 10 + (k // cols) * (cell_h + 10)
        for j, f in enumerate(picks):
            sheet.paste(over_checker(sample.rgba[f], args.scale), (x0 + j * (s + 4), y0))
        draw.text((x0, y0 + s + 4), sample.caption[:70], fill="black")
        objs = ", ".join(f"{o.subject}/{o.material}/{o.motion}" for o in sample.objects)
        draw.text((x0, y0 + s + 16), objs[:70], fill=(90, 90, 90))
    sheet.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
