"""Trajectory control on the tiny preset (#19): how closely the generated object follows a path.

  TrajError     mean L2 distance (pixels) between the requested path and the alpha-weighted centroid
                of the generated object, over every frame; held-out paths (lines, arcs, zig-zags at
                three speeds, from path seeds the training never draws) × seeds, for the methods
                tora (the trained adapter), noise (Wan-Alpha v2's noise-mean shift), tora+noise
                (both) and none (the same prompt and seed without a trajectory).
  two objects   two prompts' objects on two paths: each pixel counts for the object whose requested
                point is nearest, TrajError per object.
  adherence     colour accuracy (the hue of the alpha-weighted object nearest the prompt's colour)
                with and without a trajectory; prompts carry no motion words.
  cost          per-step time of the DiT with the fusers (motion latents in cond) over without.

Targets: tora ≤ 3 % of the frame diagonal and ≥ 5× better than none; noise ≥ 2× better than none.

    .venv/bin/python benchmarks/trajectory.py [--seeds 2] [--json out.json] [--figure docs/trajectory.png]
                                              [--weights-dir RUN]  # a run folder's adapter instead of the shipped one
                                              [--trajectory-guidance 1] [--guidance 3]  # instead of the preset's
    .venv/bin/python benchmarks/trajectory.py --calibrate   # the noise method's direction for a preset
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import nearest_colour, object_hue  # noqa: E402

from rgbacli.data.paths import KINDS, PATH_SEED_BASE, random_path  # noqa: E402
from rgbacli.engine import Engine  # noqa: E402
from rgbacli.media.preview import PATH_COLOUR, TRACK_COLOUR, centroid_tracks, draw_tracks, over_checkerboard  # noqa: E402
from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset  # noqa: E402
from rgbacli.pipelines.trajectory import TrajectoryPipeline  # noqa: E402

PROMPTS = ["a red orb", "a blue star", "a green heart", "a yellow orb", "a purple ghost", "an orange flame",
           "a cyan bubble", "a pink heart", "a white star"]
SPEEDS = ("slow", "normal", "fast")


def held_out_paths(size: int, frames: int) -> list[tuple[str, np.ndarray]]:
    """One path per kind × speed from held-out path seeds."""
    out = []
    for i, (kind, speed) in enumerate((k, s) for k in KINDS for s in SPEEDS):
        rng = np.random.default_rng(PATH_SEED_BASE + i)
        out.append((f"{kind}-{speed}", random_path(rng, size, frames, kind, speed)))
    return out


OVERRIDES: dict = {}  # --trajectory-guidance / --guidance: GenerateParams fields instead of the preset's


def generate(engine, prompt: str, seed: int, paths, method: str | None):
    p = params_from_preset(engine, prompt, seed=seed)
    for name, value in OVERRIDES.items():
        setattr(p, name, value)
    if method is None:
        return TextToRGBAPipeline(engine)(p).frames.numpy()
    p.trajectory, p.trajectory_method = [np.asarray(x).tolist() for x in paths], method
    return TrajectoryPipeline(engine)(p).frames.numpy()


def traj_error(frames: np.ndarray, paths) -> list[float]:
    paths = np.asarray(paths, np.float64)
    real = centroid_tracks(frames[..., 3], paths)
    return [float(np.linalg.norm(real[k] - paths[k], axis=-1).mean()) for k in range(len(paths))], real


def single_object(engine, seeds: int, methods, log) -> dict:
    size, frames = engine.preset.sampling["width"], engine.preset.sampling["frames"]
    rows = []
    for i, (name, path) in enumerate(held_out_paths(size, frames)):
        for seed in range(seeds):
            prompt = PROMPTS[(i + seed) % len(PROMPTS)]
            row = {"path": name, "seed": seed, "prompt": prompt}
            for method in methods:
                clip = generate(engine, prompt, seed, [path], None if method == "none" else method)
                row[method] = traj_error(clip, [path])[0][0]
                hue, sat = object_hue(clip)
                row[f"{method}_colour_ok"] = nearest_colour(hue, sat) == prompt.split()[1]
            rows.append(row)
            log(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}))
    return {"rows": rows}


def two_objects(engine, seeds: int, methods, log) -> dict:
    size, frames = engine.preset.sampling["width"], engine.preset.sampling["frames"]
    rng = np.random.default_rng(PATH_SEED_BASE + 100)
    rows = []
    for i in range(3):
        a = random_path(rng, size, frames, "line", "normal", margin=0.15)
        b = random_path(rng, size, frames, "line", "normal", margin=0.15)
        if np.linalg.norm(a - b, axis=1).min() < 0.25 * size:  # keep the two paths apart
            b = size - a  # the point reflection of a: always far from it except near the centre
        prompt = f"{PROMPTS[i]} and {PROMPTS[i + 3]}"
        for seed in range(seeds):
            row = {"pair": i, "seed": seed, "prompt": prompt}
            for method in methods:
                clip = generate(engine, prompt, seed, [a, b], None if method == "none" else method)
                errs, _ = traj_error(clip, [a, b])
                row[method] = errs
            rows.append(row)
            log(json.dumps(row))
    return {"rows": rows}


def step_cost(engine, reps: int = 20) -> dict:
    """DiT forward time per step with the fusers over without (batch 2 = the CFG passes)."""
    from rgbacli.models.attention import context_of

    pipe = TrajectoryPipeline(engine)
    p = params_from_preset(engine, "a red orb", seed=0)
    size, frames = p.width, p.frames
    path = held_out_paths(size, frames)[0][1]
    p.trajectory, p.trajectory_method = [path.tolist()], "tora"
    motion = pipe.motion_latents(p).repeat(2, 1, 1, 1, 1)
    backend = engine.backend
    x = torch.randn(2, *pipe.latent_shape(p))
    text = engine.component("text_encoder").encode(["a red orb"] * 2)[0]
    t = torch.full((2,), 500.0)
    times = {}
    with torch.no_grad():
        for name, cond in (("plain", {}), ("fusers", {"motion": motion}), ("plain2", {}), ("fusers2", {"motion": motion})):
            with context_of(backend.transformer).use(cond=cond):
                backend.predict(x, t, text)
                t0 = time.perf_counter()
                for _ in range(reps):
                    backend.predict(x, t, text)
                times[name] = (time.perf_counter() - t0) / reps
    plain, fused = min(times["plain"], times["plain2"]), min(times["fusers"], times["fusers2"])
    out = {"plain_ms": 1000 * plain, "fusers_ms": 1000 * fused, "ratio": fused / plain}
    # Whole clips as a user runs them: plain generate against --path with the preset's defaults
    # (tora + its trajectory guidance: the fusers and one more pass per step), interleaved, best of 3.
    clip = {"plain": [], "tora": []}
    for _ in range(3):
        for name, method in (("plain", None), ("tora", "tora")):
            t0 = time.perf_counter()
            generate(engine, "a red orb", 0, [path], method)
            clip[name].append(time.perf_counter() - t0)
    out["generate_plain_s"], out["generate_tora_s"] = min(clip["plain"]), min(clip["tora"])
    out["generate_ratio"] = out["generate_tora_s"] / out["generate_plain_s"]
    return out


def calibrate(engine, n: int = 32) -> list[float]:
    """The noise method's direction for a preset: mean latent of object cells minus background cells
    over n path clips (the object region of the noise is moved along it)."""
    from rgbacli.data.paths import path_clip
    from rgbacli.train.latents import latent_object_mask

    clips = [path_clip(2_950_000 + i) for i in range(n)]
    rgba = torch.from_numpy(np.stack([c.rgba for c in clips])).permute(0, 4, 1, 2, 3).float()
    with torch.no_grad():
        z = engine.backend.vae.encode(rgba)
    m = latent_object_mask(rgba[:, 3:], z.shape[2:]) > 0.5
    obj = (z * m).sum((0, 2, 3, 4)) / m.sum()
    bg = (z * ~m).sum((0, 2, 3, 4)) / (~m).sum()
    return [round(float(v), 4) for v in obj - bg]


def figure(engine, path: Path, methods, seed: int = 0) -> None:
    """One held-out arc: a row for none and for each method, 6 frames each, requested path (yellow) and
    realised centroid track (red) drawn."""
    from PIL import Image, ImageDraw

    size, frames = engine.preset.sampling["width"], engine.preset.sampling["frames"]
    name, track = held_out_paths(size, frames)[4]
    picks = np.linspace(0, frames - 1, 6).round().astype(int)
    rows = []
    for method in ("none", *methods):
        clip = generate(engine, "a red orb", seed, [track], None if method == "none" else method)
        _, real = traj_error(clip, [track])
        board = draw_tracks(over_checkerboard(clip, 8), [(track, PATH_COLOUR), (real[0], TRACK_COLOUR)])
        rows.append((method, board[picks, ..., :3]))
    scale, gap, label = 3, 4, 72
    h = w = size * scale
    sheet = Image.new("RGB", (label + len(picks) * (w + gap), len(rows) * (h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (method, tiles) in enumerate(rows):
        y = gap + r * (h + gap)
        draw.text((4, y + h // 2 - 6), method, fill="black")
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile).resize((w, h), Image.NEAREST), (label + c * (w + gap), y))
    sheet.save(path)


def summarise(single: dict, two: dict, cost: dict | None, size: int, methods) -> dict:
    diag = float(np.hypot(size, size))
    rows = single["rows"]
    out = {"frame_diagonal_px": round(diag, 2), "clips_per_method": len(rows)}
    for m in methods:
        e = float(np.mean([r[m] for r in rows]))
        out[m] = {"traj_error_px": round(e, 2), "traj_error_pct_diagonal": round(100 * e / diag, 2),
                  "colour_accuracy": round(float(np.mean([r[f"{m}_colour_ok"] for r in rows])), 3)}
        out[m]["by_kind"] = {k: round(float(np.mean([r[m] for r in rows if r["path"].startswith(k)])), 2) for k in KINDS}
        out[m]["by_speed"] = {s: round(float(np.mean([r[m] for r in rows if r["path"].endswith(s)])), 2) for s in SPEEDS}
    for m in methods:
        if m != "none":
            out[m]["x_better_than_none"] = round(out["none"]["traj_error_px"] / out[m]["traj_error_px"], 2)
    if two["rows"]:
        out["two_objects"] = {m: {"traj_error_px_per_object": [round(float(np.mean([r[m][k] for r in two["rows"]])), 2)
                                                               for k in range(2)]} for m in methods}
    if cost:
        out["step_cost"] = {k: round(v, 3) for k, v in cost.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--methods", default="none,noise,tora,tora+noise")
    ap.add_argument("--weights-dir", help="a run folder searched first (e.g. a fresh `rgba train trajectory`)")
    ap.add_argument("--two-seeds", type=int, default=1, help="seeds per pair of paths (0: skip two objects)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--calibrate", action="store_true", help="print the noise method's direction and stop")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trajectory-guidance", type=float, help="instead of the preset's (1: off)")
    ap.add_argument("--guidance", type=float, help="text CFG instead of the preset's")
    args = ap.parse_args()
    OVERRIDES.update({k: v for k, v in (("trajectory_guidance", args.trajectory_guidance),
                                        ("guidance", args.guidance)) if v is not None})
    torch.set_num_threads(args.threads)
    engine = Engine(args.preset, device="cpu", dtype="float32", weights_dir=args.weights_dir)
    if args.calibrate:
        print(json.dumps({"trajectory_direction": calibrate(engine)}))
        return
    methods = args.methods.split(",")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    single = single_object(engine, args.seeds, methods, log)
    two = two_objects(engine, args.two_seeds, methods, log) if args.two_seeds else {"rows": []}
    cost = step_cost(engine) if any(m.startswith("tora") for m in methods) else None
    out = summarise(single, two, cost, engine.preset.sampling["width"], methods)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.figure:
        figure(engine, args.figure, [m for m in methods if m != "none"])
    text = json.dumps({"summary": out, "single": single["rows"], "two": two["rows"]}, indent=1)
    if args.json:
        args.json.write_text(text)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
