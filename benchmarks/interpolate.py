"""Keyframe interpolation benchmark on held-out procedural clips whose in-between frames we know.

    python benchmarks/interpolate.py                    # 16 clips, tiny preset, the table + JSON
    python benchmarks/interpolate.py --clips 32 --picture docs/interpolate.png
    python benchmarks/interpolate.py --prompt empty     # no text at all (default: the caption without its motion)

Clips: held-out seeds (never drawn in training), one object drifting up/down/left/right (the
motions whose in-between frames the two keyframes determine). Keyframes: the clip's first and
last frames. Methods, side by side on the same keyframes, prompt and seed:

- ours         pinned keyframes + the semantic motion predictor (`rgba interpolate`), A and B as
               the ends exactly with the VAE's loss carried along the track (`carry_keyframes`)
- ours-decoded-ends  the same clip with the decoder's own ends (`--no-exact-keyframes`)
- no-smp       pinned keyframes only (`--no-smp`)
- latent-lerp  the two keyframe latents linearly interpolated over the latent frames, decoded
- crossfade    the two keyframes crossfaded in pixels (premultiplied)
- moving-crossfade  the motion guide alone: A sliding to B's alpha centroid while it crossfades
               into B sliding in from A's (pixels, no model; ours starts from it)
- vae-roundtrip  (reference, `--methods ...,vae-roundtrip`) the true clip encoded and decoded: the
               ceiling of every method that decodes latents

Metrics (inner frames = all but the first and last):
- per-frame alpha IoU (α > 0.5) to the ground truth, and centroid error in pixels (the centre of
  the largest blob of α > 0.25, so a crossfade's two ghosts do not average to the true path; a
  frame with nothing counts as half the frame size);
- endpoints: alpha IoU and mean RGB error (where the keyframe is opaque) of frames 0 and T−1 vs A, B;
- crossfade test: the middle frame holds one object (one blob of α > 0.25 holding ≥ 85 % of that
  area) whose centre is within max(6 px, ¼ of the travel) of the true path's middle;
- start jump: frame 0 → 1's change over the median inner step (~1: even; > 1: a pop at the start);
- the paper's transition table on our metrics: first-frame / whole-clip alpha IoU and RGB error.
Targets (issue #20): ours best on per-frame error; endpoint IoU ≥ 0.9; crossfade test ≥ 90 %.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("ours", "ours-decoded-ends", "no-smp", "latent-lerp", "crossfade", "moving-crossfade")
# Not a competitor: the true clip through the VAE and back, the ceiling of any method that decodes latents.
REFERENCE = "vae-roundtrip"
DRIFTS = ("up", "down", "left", "right")


# ----------------------------------------------------------------------------- metrics
def iou(a: np.ndarray, b: np.ndarray, th: float = 0.5) -> float:
    a, b = a > th, b > th
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def centroid(alpha: np.ndarray, th: float = 0.25) -> np.ndarray | None:
    """(x, y) alpha-weighted centre of the largest blob of α > th (two ghosts do not average to the
    path between them), None when nothing is there."""
    parts = blobs(alpha > th)
    if not parts:
        return None
    cells = max(parts, key=len)
    w = alpha[cells[:, 0], cells[:, 1]]
    return np.array([(cells[:, 1] * w).sum() / w.sum(), (cells[:, 0] * w).sum() / w.sum()])


def blobs(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an array of (y, x)."""
    seen = np.zeros_like(mask, bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, cells = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            cells.append((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                v, u = y + dy, x + dx
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    stack.append((v, u))
        out.append(np.array(cells))
    return out


def crossfade_test(alpha: np.ndarray, middle: np.ndarray, travel: float) -> bool:
    """One object near the path's middle, not two ghosts at the ends."""
    mask = alpha > 0.25
    parts = blobs(mask)
    if not parts:
        return False
    big = max(parts, key=len)
    if len(big) < 0.85 * mask.sum():
        return False
    centre = big[:, ::-1].mean(0)  # (x, y)
    return float(np.linalg.norm(centre - middle)) <= max(6.0, travel / 4)


def rgb_error(frame: np.ndarray, key: np.ndarray) -> float:
    m = key[..., 3] > 0.5
    return float(np.abs(frame[..., :3] - key[..., :3])[m].mean()) if m.any() else 0.0


def over_grey(f: np.ndarray) -> np.ndarray:
    return f[..., :3] * f[..., 3:] + 0.5 * (1 - f[..., 3:])


def score(frames: np.ndarray, truth: np.ndarray, track: np.ndarray) -> dict:
    t = len(truth)
    half = truth.shape[1] / 2
    inner = range(1, t - 1)
    ious = [iou(frames[i, ..., 3], truth[i, ..., 3]) for i in inner]
    errs = []
    for i in inner:
        c = centroid(frames[i, ..., 3])
        errs.append(half if c is None else float(np.linalg.norm(c - track[i])))
    mid = t // 2
    travel = float(np.linalg.norm(track[-1] - track[0]))
    return {
        "iou_frames": float(np.mean(ious)), "centroid_px": float(np.mean(errs)),
        "endpoint_iou": [iou(frames[0, ..., 3], truth[0, ..., 3]), iou(frames[-1, ..., 3], truth[-1, ..., 3])],
        "endpoint_rgb": [rgb_error(frames[0], truth[0]), rgb_error(frames[-1], truth[-1])],
        "crossfade_pass": crossfade_test(frames[mid, ..., 3], track[mid], travel),
        "first_iou": iou(frames[0, ..., 3], truth[0, ..., 3]),
        "clip_iou": float(np.mean([iou(frames[i, ..., 3], truth[i, ..., 3]) for i in range(t)])),
        "first_rgb_l1": float(np.abs(over_grey(frames[0]) - over_grey(truth[0])).mean()),
        "clip_rgb_l1": float(np.abs(over_grey(frames) - over_grey(truth)).mean()),
        "start_jump": start_jump(frames),
    }


def start_jump(frames: np.ndarray) -> float:
    """How much frame 0 → 1 changes against the median step between the inner frames (over grey,
    RGB and alpha): ~1 for an even motion; > 1 is a pop at the start (a sharp keyframe next to a
    blurred decode, say)."""
    g = np.concatenate([over_grey(frames), frames[..., 3:]], -1)
    steps = np.abs(np.diff(g, axis=0)).mean((1, 2, 3))
    return float(steps[0] / max(float(np.median(steps[1:-2])), 1e-9))


# ----------------------------------------------------------------------------- methods
def pixel_crossfade(a: np.ndarray, b: np.ndarray, frames: int) -> np.ndarray:
    w = np.linspace(0, 1, frames, dtype=np.float32)[:, None, None, None]
    alpha = (1 - w) * a[None, ..., 3:] + w * b[None, ..., 3:]
    pre = (1 - w) * a[None, ..., :3] * a[None, ..., 3:] + w * b[None, ..., :3] * b[None, ..., 3:]
    rgb = np.where(alpha > 1e-6, pre / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0, 1), alpha], -1).astype(np.float32)


@torch.no_grad()
def latent_lerp(pipe, p, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from rgbacli.pipelines.interpolate import as_keyframe_tensor

    backend = pipe.engine.backend
    _, t, _, _ = pipe.t2v.latent_shape(p)
    z0, z1 = pipe.encode_keyframes(as_keyframe_tensor(a), as_keyframe_tensor(b), 1 + backend.temporal_factor * (t - 1))
    w = torch.linspace(0, 1, t).view(1, 1, 1, t, 1, 1)
    z = ((1 - w) * z0[:, :, :, None] + w * z1[:, :, :, None]).flatten(2, 3)
    return pipe.t2v.decode(z, p)[0].numpy()


@torch.no_grad()
def vae_roundtrip(pipe, p, clip: np.ndarray) -> np.ndarray:
    backend = pipe.engine.backend
    z = backend.encode(torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)[None].float())
    return pipe.t2v.decode(z, p)[0].numpy()


def heldout_clips(n: int, frames: int, size: int):
    from rgbacli.data import ProceduralDataset

    ds = ProceduralDataset("heldout", size=size, frames=frames)
    out, i = [], 0
    while len(out) < n:
        s = ds[i]
        i += 1
        if len(s.objects) == 1 and s.objects[0].motion in DRIFTS:
            out.append(s)
    return out


def prompt_for(caption: str, mode: str) -> str:
    from rgbacli.data.captions import leave_out

    return {"empty": "", "full": caption, "nomotion": leave_out(caption, ["motion"])}[mode]


# ----------------------------------------------------------------------------- report
def summarise(rows: dict[str, list[dict]]) -> dict:
    out = {}
    for m, rs in rows.items():
        out[m] = {
            "iou_frames": float(np.mean([r["iou_frames"] for r in rs])),
            "centroid_px": float(np.mean([r["centroid_px"] for r in rs])),
            "endpoint_iou_first": float(np.mean([r["endpoint_iou"][0] for r in rs])),
            "endpoint_iou_last": float(np.mean([r["endpoint_iou"][1] for r in rs])),
            "endpoint_rgb_first": float(np.mean([r["endpoint_rgb"][0] for r in rs])),
            "endpoint_rgb_last": float(np.mean([r["endpoint_rgb"][1] for r in rs])),
            "crossfade_pass": float(np.mean([r["crossfade_pass"] for r in rs])),
            "first_iou": float(np.mean([r["first_iou"] for r in rs])),
            "clip_iou": float(np.mean([r["clip_iou"] for r in rs])),
            "first_rgb_l1": float(np.mean([r["first_rgb_l1"] for r in rs])),
            "clip_rgb_l1": float(np.mean([r["clip_rgb_l1"] for r in rs])),
            "start_jump": float(np.mean([r["start_jump"] for r in rs])),
        }
    return out


def paired(ours: list[dict], other: list[dict], name: str) -> str:
    """Ours against one method clip by clip (same keyframes, prompt and seed): the mean difference with
    its standard error and on how many clips ours is better, for the per-frame figures."""
    out = []
    for key, label, sign in (("centroid_px", "centroid error px", -1), ("iou_frames", "per-frame alpha IoU", 1)):
        d = np.array([o[key] - r[key] for o, r in zip(ours, other)])
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        out.append(f"ours − {name}, {label}: {d.mean():+.3f} ± {se:.3f} (s.e.); ours better on "
                   f"{int((sign * d > 0).sum())} of {len(d)} clips, worse on {int((sign * d < 0).sum())}")
    return "\n".join(out)


def table(summary: dict) -> str:
    lines = ["| method | per-frame alpha IoU ↑ | centroid error px ↓ | endpoint IoU A / B ↑ | endpoint RGB err A / B ↓ "
             "| crossfade test passed ↑ | start jump ×, ~1 |", "|---|---|---|---|---|---|---|"]
    for m, s in summary.items():
        lines.append(f"| {m} | {s['iou_frames']:.3f} | {s['centroid_px']:.2f} | {s['endpoint_iou_first']:.3f} / "
                     f"{s['endpoint_iou_last']:.3f} | {s['endpoint_rgb_first']:.3f} / {s['endpoint_rgb_last']:.3f} | "
                     f"{100 * s['crossfade_pass']:.0f} % | {s['start_jump']:.2f} |")
    lines += ["", "| method | first-frame alpha IoU ↑ | whole-clip alpha IoU ↑ | first-frame RGB L1 ↓ | whole-clip RGB L1 ↓ |",
              "|---|---|---|---|---|"]
    for m, s in summary.items():
        lines.append(f"| {m} | {s['first_iou']:.3f} | {s['clip_iou']:.3f} | {s['first_rgb_l1']:.4f} | "
                     f"{s['clip_rgb_l1']:.4f} |")
    return "\n".join(lines)


def picture(path: Path, examples: list[tuple[str, dict[str, np.ndarray]]], columns=(0, 4, 8, 12, 16), zoom=2) -> None:
    """Rows: ground truth and each method; columns: frames; over a checkerboard; one block per example."""
    from PIL import Image, ImageDraw

    from rgbacli.media.preview import checkerboard

    names = ["truth", *[m for m in METHODS if m in examples[0][1]]]
    size = next(iter(examples[0][1].values())).shape[1] * zoom
    label_w, pad = 84, 4
    block_h = len(names) * (size + pad) + 16
    canvas = Image.new("RGB", (label_w + len(columns) * (size + pad), block_h * len(examples)), "white")
    draw = ImageDraw.Draw(canvas)
    board = checkerboard(size, size, cell=8)[..., :3].astype(np.float32) / 255
    for e, (title, rows) in enumerate(examples):
        y0 = e * block_h
        draw.text((4, y0 + 2), title[:70], fill="black")
        for r, name in enumerate(names):
            y = y0 + 16 + r * (size + pad)
            draw.text((4, y + size // 2 - 6), name, fill="black")
            for c, f in enumerate(columns):
                frame = rows[name][min(f, len(rows[name]) - 1)]
                frame = np.repeat(np.repeat(frame, zoom, 0), zoom, 1)
                rgb = frame[..., :3] * frame[..., 3:] + board * (1 - frame[..., 3:])
                canvas.paste(Image.fromarray((rgb * 255 + 0.5).clip(0, 255).astype(np.uint8)),
                             (label_w + c * (size + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--weights-dir", default=None, help="folder searched first for weight files (e.g. a run)")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", choices=("nomotion", "empty", "full"), default="nomotion")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--guide", type=float, default=None, help="share of the steps held to the motion guide "
                    "(ours and no-smp; default: the pipeline's)")
    ap.add_argument("--smp-scale", type=float, default=1.0, help="scale of the predictor's attention output (ours)")
    ap.add_argument("--json", type=Path, default=None, help="write per-clip rows and the summary here")
    ap.add_argument("--picture", type=Path, default=None, help="a PNG of the first examples (truth and each method)")
    ap.add_argument("--examples", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from rgbacli.engine import Engine
    from rgbacli.pipelines.interpolate import InterpolatePipeline, as_keyframe_tensor, moving_crossfade
    from rgbacli.pipelines.params import params_from_sampling

    guide = {} if args.guide is None else {"guide": args.guide}

    engine = Engine(args.preset, device="cpu", weights_dir=args.weights_dir)
    pipe = InterpolatePipeline(engine)
    methods = [m for m in args.methods.split(",") if m]
    frames, size = int(engine.preset.sampling["frames"]), int(engine.preset.sampling["width"])
    clips = heldout_clips(args.clips, frames, size)
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    examples, t0 = [], time.perf_counter()
    for k, s in enumerate(clips):
        a, b = s.rgba[0], s.rgba[-1]
        p = params_from_sampling(engine.preset.sampling, prompt_for(s.caption, args.prompt), seed=args.seed + k,
                                 steps=args.steps, frames=frames, width=size, height=size)
        outs = {}
        for m in methods:
            if m == "ours":
                outs[m] = pipe(p, a, b, use_smp=True, smp_scale=args.smp_scale, **guide).frames.numpy()
            elif m == "ours-decoded-ends":
                outs[m] = pipe(p, a, b, use_smp=True, smp_scale=args.smp_scale, exact_keyframes=False,
                               **guide).frames.numpy()
            elif m == "no-smp":
                outs[m] = pipe(p, a, b, use_smp=False, **guide).frames.numpy()
            elif m == "moving-crossfade":
                outs[m] = moving_crossfade(as_keyframe_tensor(a), as_keyframe_tensor(b), frames)[0].permute(
                    1, 2, 3, 0).numpy()
            elif m == "latent-lerp":
                outs[m] = latent_lerp(pipe, p, a, b)
            elif m == "crossfade":
                outs[m] = pixel_crossfade(a, b, frames)
            elif m == REFERENCE:
                outs[m] = vae_roundtrip(pipe, p, s.rgba)
            r = score(outs[m], s.rgba, s.track[0])
            r.update(seed=s.seed, caption=s.caption, prompt=p.prompt)
            rows[m].append(r)
        if len(examples) < args.examples:
            examples.append((f"{s.caption}  (prompt: '{p.prompt}')", {"truth": s.rgba, **outs}))
        print(f"[{k + 1}/{len(clips)}] {s.caption[:40]:40s} " + "  ".join(
            f"{m} {rows[m][-1]['centroid_px']:.1f}px{'✓' if rows[m][-1]['crossfade_pass'] else '✗'}" for m in methods)
            + f"  ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    summary = summarise(rows)
    print(f"{len(clips)} held-out clips, preset {args.preset}, prompt: {args.prompt}, steps "
          f"{args.steps or engine.preset.sampling['steps']}")
    print(table(summary))
    if "ours" in summary:
        others = [m for m in summary if m not in ("ours", REFERENCE)]
        print("\nours vs the others (centroid error ratio, < 1 = ours better): " + ", ".join(
            f"{m} {summary['ours']['centroid_px'] / max(summary[m]['centroid_px'], 1e-9):.2f}×" for m in others))
    if "ours" in rows and "no-smp" in rows:
        print("\n" + paired(rows["ours"], rows["no-smp"], "no-smp"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                         "rows": rows}, indent=1))
    if args.picture and examples:
        picture(args.picture, examples)
        print(f"picture: {args.picture}")


if __name__ == "__main__":
    main()
