"""Quality figures of the embedded model on held-out procedural data (never seen in training).

    python benchmarks/quality.py [--preset tiny] [--clips 48] [--prompts 96] [--sheet docs/quality_sheet.png]

VAE: alpha IoU (α>0.5), alpha MAE and RGB PSNR on opaque pixels, encode→decode of held-out clips;
     colour and motion accuracy of held-out ground truth after the round trip (colour also on the
     last 5 frames alone).
Generation, on held-out single-object prompts:
  colour accuracy  — the hue of the alpha-weighted object is nearest to the prompt's colour
                     (white: low saturation) among the palette;
  motion accuracy  — the alpha centroid moves along the prompt's direction (up/down/left/right):
                     dominant axis and sign of the first→last displacement;
  alpha sanity     — coverage (α>0.5) between 1% and 80%; glass/smoky clips more semi-transparent
                     (share of 0.05<α<0.95 among visible pixels) than solid ones;
  short prompts    — the same coverage check on held-out prompts cut to the subject ("a bubble")
                     and on "a glass jellyfish" over 8 seeds.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIRS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


def object_hue(frames: np.ndarray) -> tuple[float, float]:
    """Alpha-weighted mean colour of the object → (hue in degrees, saturation)."""
    a = frames[..., 3:4]
    rgb = (frames[..., :3] * a).sum(axis=(0, 1, 2)) / max(a.sum(), 1e-6)
    h, _l, s = colorsys.rgb_to_hls(*np.clip(rgb, 0, 1))
    return h * 360, s


def nearest_colour(hue: float, sat: float) -> str:
    from rgbacli.data import COLOURS

    if sat < 0.25:
        return "white"
    best, dist = None, 1e9
    for name, c in COLOURS.items():
        if c.hue is None:
            continue
        d = min(abs(hue - c.hue), 360 - abs(hue - c.hue))
        if d < dist:
            best, dist = name, d
    return best


def centroid(alpha: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: alpha.shape[0], : alpha.shape[1]]
    w = alpha.sum()
    return np.array([(alpha * xs).sum() / w, (alpha * ys).sum() / w]) if w > 1e-6 else np.array([np.nan, np.nan])


def coverage(alpha) -> float:
    """Share of the clip's pixels with α > 0.5."""
    return float((alpha > 0.5).mean())


def coverage_ok(c: float) -> bool:
    """The alpha sanity range: something is there, and it is not an opaque frame."""
    return 0.01 <= c <= 0.80


def held_out_prompts(n: int):
    """Single-object held-out specs with their captions (seeded, disjoint from training seeds)."""
    from rgbacli.data import HELDOUT_SEED_BASE, caption_for, sample_spec

    out = []
    for i in range(n):
        rng = np.random.default_rng(HELDOUT_SEED_BASE + 500_000 + i)
        spec = sample_spec(rng, n_objects=1)
        out.append((caption_for(spec, rng), spec.objects[0]))
    return out


def moved_right_way(alpha: np.ndarray, motion: str) -> tuple[list, bool]:
    """First → last alpha-centroid displacement, and whether its dominant axis and sign match `motion`."""
    d = centroid(alpha[-1]) - centroid(alpha[0])
    want = np.array(DIRS[motion])
    axis = int(np.argmax(np.abs(want)))
    return d.tolist(), bool(np.isfinite(d).all() and abs(d[axis]) > abs(d[1 - axis]) and np.sign(d[axis]) == want[axis])


def vae_round_trip_figures(vae, colour_clips: int, motion_clips: int, last: int = 5) -> dict:
    """The generation metrics on held-out single-object ground truth after one RGBA VAE round trip
    per clip: colour over the whole clip and its last `last` frames (a causal VAE can drift late),
    and motion direction on truth and round trip (separates a DiT motion gap from the VAE's or the
    metric's). The first clips serve both checks, so each is encoded and decoded once."""
    from rgbacli.data import ProceduralDataset

    ds = ProceduralDataset(split="heldout", length=20 * max(colour_clips, motion_clips), size=64, frames=17)
    whole, late, truth, recon = [], [], [], []
    for i in range(len(ds)):
        need_colour, need_motion = len(whole) < colour_clips, len(truth) < motion_clips
        if not (need_colour or need_motion):
            break
        s = ds[i]
        if len(s.objects) != 1:
            continue
        obj = s.objects[0]
        drifting = need_motion and obj.motion in DIRS
        if not (need_colour or drifting):
            continue
        with torch.no_grad():
            rec = vae.decode(vae.encode(s.video_tensor()[None]))[0].permute(1, 2, 3, 0).numpy()
        if need_colour:
            whole.append(nearest_colour(*object_hue(rec)) == obj.colour)
            late.append(nearest_colour(*object_hue(rec[-last:])) == obj.colour)
        if drifting:
            truth.append(moved_right_way(s.rgba[..., 3], obj.motion)[1])
            recon.append(moved_right_way(rec[..., 3], obj.motion)[1])
    out = {}
    if whole:
        out.update({"colour_clips": len(whole), "colour_accuracy_vae": float(np.mean(whole)),
                    f"colour_accuracy_vae_last{last}": float(np.mean(late))})
    if truth:
        out.update({"motion_clips": len(truth), "motion_accuracy_truth": float(np.mean(truth)),
                    "motion_accuracy_vae": float(np.mean(recon))})
    return out


def generation_figures(engine, n: int, steps: int | None, guidance: float | None, log,
                       motion_guidance: float | None = None) -> tuple[dict, list]:
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    pipe = TextToRGBAPipeline(engine)
    rows, clips = [], []
    for i, (prompt, obj) in enumerate(held_out_prompts(n)):
        p = params_from_preset(engine, prompt, seed=i, steps=steps, guidance=guidance,
                               motion_guidance=motion_guidance)
        frames = pipe(p).frames.numpy()
        alpha = frames[..., 3]
        hue, sat = object_hue(frames)
        visible = alpha > 0.05
        semi = float(((alpha > 0.05) & (alpha < 0.95)).sum() / max(visible.sum(), 1))
        row = {"prompt": prompt, "colour": obj.colour, "motion": obj.motion, "material": obj.material,
               "pred_colour": nearest_colour(hue, sat), "pred_colour_last5": nearest_colour(*object_hue(frames[-5:])),
               "coverage": coverage(alpha), "semi": semi}
        if obj.motion in DIRS:
            row["displacement"], row["motion_ok"] = moved_right_way(alpha, obj.motion)
        rows.append(row)
        clips.append((prompt, frames))
        log(i + 1, n)
    moving = [r for r in rows if "motion_ok" in r]
    translucent = [r["semi"] for r in rows if r["material"] in ("glass", "smoky")]
    solid = [r["semi"] for r in rows if r["material"] == "solid"]
    figures = {
        "prompts": n,
        "colour_accuracy": float(np.mean([r["pred_colour"] == r["colour"] for r in rows])),
        "colour_accuracy_last5": float(np.mean([r["pred_colour_last5"] == r["colour"] for r in rows])),
        "colour_misses": colour_misses(rows),
        "motion_accuracy": float(np.mean([r["motion_ok"] for r in moving])) if moving else None,
        "motion_prompts": len(moving),
        "coverage_ok": float(np.mean([coverage_ok(r["coverage"]) for r in rows])),
        "semi_transparent_share_glass_smoky": float(np.mean(translucent)) if translucent else None,
        "semi_transparent_share_solid": float(np.mean(solid)) if solid else None,
    }
    return figures, clips


def colour_misses(rows: list[dict]) -> dict[str, int]:
    """Wrong colours as "asked->got" counts, most frequent first: says which hues the model confuses."""
    from collections import Counter

    misses = Counter(f"{r['colour']}->{r['pred_colour']}" for r in rows if r["pred_colour"] != r["colour"])
    return dict(misses.most_common())


def short_prompt_figures(engine, n: int, seeds: int = 8, steps: int | None = None,
                         guidance: float | None = None) -> dict:
    """Prompts as people type them. First the held-out prompts with colour, material and motion words
    all left out ("a bubble"), then the README's "a glass jellyfish" over several seeds. A model that
    only knows full captions draws nothing for these."""
    from rgbacli.data.captions import leave_out
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    pipe = TextToRGBAPipeline(engine)

    def alpha(prompt: str, seed: int) -> np.ndarray:
        return pipe(params_from_preset(engine, prompt, seed=seed, steps=steps, guidance=guidance)).frames[..., 3].numpy()

    bare = [coverage_ok(coverage(alpha(leave_out(prompt, ("colour", "material", "motion")), i)))
            for i, (prompt, _) in enumerate(held_out_prompts(n))]
    headline = [alpha("a glass jellyfish", seed) for seed in range(seeds)]
    # Glass is mostly below alpha 0.5 by design, so also say how much of the frame it shows at all
    # (alpha > 0.05), next to the same two shares for held-out glass jellyfish clips.
    truth = glass_jellyfish_truth()

    def share(alphas, threshold: float) -> float:
        return float(np.mean([(a > threshold).mean() for a in alphas]))

    return {"bare_prompts": n, "bare_coverage_ok": float(np.mean(bare)),
            "glass_jellyfish_seeds": seeds,
            "glass_jellyfish_coverage_ok": float(np.mean([coverage_ok(coverage(a)) for a in headline])),
            **{f"glass_jellyfish{kind}_share_alpha_{thr}": share(alphas, thr)
               for kind, alphas in (("", headline), ("_truth", truth)) for thr in (0.5, 0.05)}}


def glass_jellyfish_truth(n: int = 8) -> list[np.ndarray]:
    """Alpha of n held-out single glass jellyfish clips (any colour and motion)."""
    from rgbacli.data import HELDOUT_SEED_BASE, render, sample_spec

    out, i = [], 0
    while len(out) < n:
        rng = np.random.default_rng(HELDOUT_SEED_BASE + 700_000 + i)
        spec = sample_spec(rng, n_objects=1)
        i += 1
        if spec.objects[0].subject == "jellyfish" and spec.objects[0].material == "glass":
            out.append(render(spec, size=64, frames=17)[0][..., 3])
    return out


def contact_sheet(clips, path: Path, frames=(0, 8, 16), cell: int = 64) -> None:
    """One row per prompt: three frames over a checkerboard, the prompt underneath."""
    from PIL import Image, ImageDraw

    from rgbacli.media.preview import over_checkerboard

    rows = len(clips)
    label_h = 14
    sheet = Image.new("RGB", (cell * len(frames) * 2, (cell * 2 + label_h) * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (prompt, clip) in enumerate(clips):
        idx = [min(f, clip.shape[0] - 1) for f in frames]
        composited = over_checkerboard((clip[idx] * 255).round().astype(np.uint8), cell=8)
        y = r * (cell * 2 + label_h)
        for c, frame in enumerate(composited):
            img = Image.fromarray(frame[..., :3]).resize((cell * 2, cell * 2), Image.NEAREST)
            sheet.paste(img, (c * cell * 2, y))
        draw.text((2, y + cell * 2), prompt[:60], fill="black")
    sheet.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--weights-dir", default=None, help="a run folder to measure instead of the installed weights")
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--motion-guidance", type=float, default=None, help="GenTron motion-free guidance scale")
    ap.add_argument("--motion-clips", type=int, default=30, help="clips for the VAE motion check (0: skip)")
    ap.add_argument("--colour-clips", type=int, default=48, help="clips for the VAE colour check (0: skip)")
    ap.add_argument("--short-prompts", type=int, default=24, help="held-out prompts reduced to the subject (0: skip)")
    ap.add_argument("--sheet", default=None, help="write a contact sheet of the first 12 prompts here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from rgbacli.engine import Engine
    from rgbacli.evaluation import vae_reconstruction

    engine = Engine(args.preset, device="cpu", weights_dir=args.weights_dir)
    t0 = time.perf_counter()
    report = {"preset": args.preset, "weights_dir": args.weights_dir}
    if hasattr(engine.component("vae"), "decode"):  # an RGBA VAE (Wan-Alpha backend)
        report["vae"] = vae_reconstruction(engine.component("vae"), args.clips)
        report["vae"].update(vae_round_trip_figures(engine.component("vae"), args.colour_clips, args.motion_clips))
    else:  # alpha tokens: RGB and alpha each go through the plain RGB VAE; there is no RGBA VAE to measure
        report["vae"] = {"skipped": f"{type(engine.component('vae')).__name__} is not an RGBA VAE"}
    gen, clips = generation_figures(engine, args.prompts, args.steps, args.guidance,
                                    lambda i, n: print(f"\r{i}/{n}", end="", file=sys.stderr),
                                    args.motion_guidance)
    print(file=sys.stderr)
    report["generation"] = gen
    if args.short_prompts:
        report["short_prompts"] = short_prompt_figures(engine, args.short_prompts, steps=args.steps,
                                                       guidance=args.guidance)
    report["seconds"] = time.perf_counter() - t0
    if args.sheet:
        contact_sheet(clips[:12], Path(args.sheet))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
