"""Regenerate rgbacli/assets/sample.webp: a small procedural RGBA clip (lossless animated WebP).

    python scripts/make_sample.py

24 frames, 128×96, 12 fps: a soft-edged disc drifting over a transparent canvas with a
translucent shadow (rgbacli.media.samples.moving_disc_frames). Deterministic; no inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rgbacli.media import Clip, read_clip, write_clip  # noqa: E402
from rgbacli.media.samples import moving_disc_frames  # noqa: E402

OUT = ROOT / "rgbacli" / "assets" / "sample.webp"


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    clip = Clip(moving_disc_frames(24, 96, 128), fps=12.0)
    write_clip(clip, OUT, force=True)
    back = read_clip(OUT)
    assert back.frames.shape == clip.frames.shape and back.fps == clip.fps
    size = OUT.stat().st_size
    assert size < 300_000, size
    print(f"wrote {OUT.relative_to(ROOT)}: {back.n_frames} frames {back.width}x{back.height} @ {back.fps:g} fps, {size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
