"""Story benchmark: identity consistency with consistent self-attention vs without, prompt adherence,
memory and time per panel, on the embedded tiny preset (17-frame clips unless --frames).

    python benchmarks/story.py --subjects 4 --seeds 2 --parts consistency   # the default settings
    python benchmarks/story.py --seeds 2 --parts adherence,timing
    python benchmarks/story.py --sweep --subjects 4 --seeds 2               # the variants of docs/story.md
    python benchmarks/story.py --memory                                      # peak memory, 4 vs 16 panels

Consistency: for characters whose description leaves colour and material open ("a jellyfish"),
the spread across a character's panels of its alpha-weighted colour (RMS distance to the mean
colour, RGB in [0, 1]) and of its alpha area (std of the share of pixels with alpha > 0.5), with
the method (default: CSA + the identity anchor) vs plain sampling (--no-csa --no-anchor) on the
same seeds, pooled over stories and seeds. Target: ≤ 0.5× plain.
Adherence: every panel's motion word and named colour judged as the quality benchmark judges
plain `generate` clips, against plain generate on the same prompts and seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SUBJECTS = ("jellyfish", "ghost", "star", "orb", "heart", "leaf")
MOTIONS = ("drifting up", "drifting left", "drifting right", "drifting down", "floating up", "sliding left",
           "moving right", "sinking down")


def story_text(subject: str, panels: int, offset: int = 0) -> str:
    """One character whose colour and material are left open, `panels` panels of motion."""
    lines = [f"[Kit] a {subject}"]
    for i in range(panels):
        lines.append(f"[Kit] {MOTIONS[(i + offset) % len(MOTIONS)]}")
    return "\n".join(lines)


def character_stats(frames: torch.Tensor) -> tuple[np.ndarray, float]:
    """(alpha-weighted mean RGB, share of pixels with alpha > 0.5) of a panel (T, H, W, 4)."""
    f = frames.numpy().astype(np.float64)
    a = f[..., 3:4]
    colour = (f[..., :3] * a).sum(axis=(0, 1, 2)) / max(a.sum(), 1e-6)
    return colour, float((f[..., 3] > 0.5).mean())


def spreads(results) -> tuple[float, float]:
    colours, areas = zip(*(character_stats(r.frames) for r in results))
    colours = np.stack(colours)
    return float(np.sqrt(((colours - colours.mean(0)) ** 2).sum(1).mean())), float(np.std(areas))


def run_story(engine, text: str, seed: int, method, frames: int, id_length: int, steps: int | None = None):
    """`method` = (CSAConfig or None, AnchorConfig or None); (None, None) is plain sampling."""
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.story import StoryPipeline
    from rgbacli.pipelines.story_text import parse_story

    story = parse_story(text, id_length)
    base = params_from_sampling(engine.preset.sampling, "", seed=seed, frames=frames, steps=steps)
    csa, anchor = method
    return StoryPipeline(engine)(story, base, csa, anchor=anchor)


_PLAIN: dict = {}  # spreads without CSA, by (subject, seed, frames, panels, id_length): the same for every variant


def consistency(engine, method, frames: int, seeds, subjects, panels: int, id_length: int) -> dict:
    """Pooled spreads with `method` (CSA, anchor) and without either, over subjects × seeds."""
    rows = []
    for subject in subjects:
        for seed in seeds:
            text = story_text(subject, panels, offset=seed)
            on = spreads(run_story(engine, text, seed, method, frames, id_length).panels)
            key = (subject, seed, frames, panels, id_length)
            if key not in _PLAIN:
                _PLAIN[key] = spreads(run_story(engine, text, seed, (None, None), frames, id_length).panels)
            off = _PLAIN[key]
            rows.append({"subject": subject, "seed": seed, "csa": on, "plain": off})
    mean = lambda k, i: float(np.mean([r[k][i] for r in rows]))  # noqa: E731
    return {"colour_csa": mean("csa", 0), "colour_plain": mean("plain", 0),
            "colour_ratio": mean("csa", 0) / max(mean("plain", 0), 1e-9),
            "area_csa": mean("csa", 1), "area_plain": mean("plain", 1),
            "area_ratio": mean("csa", 1) / max(mean("plain", 1), 1e-9), "stories": len(rows)}


def adherence(engine, method, frames: int, seeds) -> dict:
    """Motion direction and named colour of story panels (CSA) and of plain generate, same prompts and seeds."""
    from quality import moved_right_way, nearest_colour, object_hue  # the quality benchmark's judges

    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.t2v import TextToRGBAPipeline

    colours = ("red", "blue", "green", "yellow")
    directions = ("up", "left", "right", "down")
    words = {"up": "drifting up", "left": "drifting left", "right": "drifting right", "down": "drifting down"}
    story_hits, plain_hits, n = {"colour": 0, "motion": 0}, {"colour": 0, "motion": 0}, 0
    pipe = TextToRGBAPipeline(engine)
    for seed in seeds:
        colour = colours[seed % len(colours)]
        lines = [f"[Kit] a {colour} jellyfish"] + [f"[Kit] {words[d]}" for d in directions * 2]
        result = run_story(engine, "\n".join(lines), seed, method, frames, 2)
        for r in result.panels:
            direction = next(d for d, w in words.items() if w in r.params.prompt)
            plain = pipe(params_from_sampling(engine.preset.sampling, r.params.prompt, seed=r.params.seed,
                                              frames=frames)).frames
            for hits, f in ((story_hits, r.frames.numpy()), (plain_hits, plain.numpy())):
                hits["colour"] += nearest_colour(*object_hue(f)) == colour
                hits["motion"] += moved_right_way(f[..., 3], direction)[1]
            n += 1
    return {"panels": n, **{f"story_{k}": v / n for k, v in story_hits.items()},
            **{f"plain_{k}": v / n for k, v in plain_hits.items()}}


def peak_child(panels: int, frames: int) -> dict:
    """One story of `panels` panels in this fresh process: seconds and peak RSS."""
    from rgbacli.engine import Engine

    torch.set_num_threads(1)
    engine = Engine("tiny", device="cpu")
    engine.backend  # noqa: B018 - load before measuring
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    result = run_story(engine, story_text("jellyfish", panels), 0, default_method(), frames, 2)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bank = sum(b.numel() for b in result.banks.values()) * 4
    print(json.dumps({"panels": panels, "seconds": seconds, "peak_mb": peak / 1024, "loaded_mb": before / 1024,
                      "bank_mb": bank / 2**20}))


def memory(frames: int) -> dict:
    out = {}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)}
    for panels in (4, 16):
        cmd = [sys.executable, __file__, "--child", str(panels), "--frames", str(frames)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        out[panels] = json.loads(done.stdout.strip().splitlines()[-1])
    grow = lambda d: d["peak_mb"] - d["loaded_mb"]  # noqa: E731
    out["peak_ratio_16_vs_4"] = out[16]["peak_mb"] / out[4]["peak_mb"]
    out["working_set_ratio_16_vs_4"] = grow(out[16]) / max(grow(out[4]), 1e-6)
    return out


def seconds_per_panel(engine, frames: int) -> dict:
    """Seconds per panel of a 6-panel story (CSA) vs one plain generate, measured side by side."""
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.t2v import TextToRGBAPipeline

    pipe = TextToRGBAPipeline(engine)
    best_story, best_gen = float("inf"), float("inf")
    for _ in range(3):
        t = time.perf_counter()
        run_story(engine, story_text("jellyfish", 6), 0, default_method(), frames, 2)
        best_story = min(best_story, (time.perf_counter() - t) / 6)
        t = time.perf_counter()
        pipe(params_from_sampling(engine.preset.sampling, "a jellyfish drifting up", frames=frames))
        best_gen = min(best_gen, time.perf_counter() - t)
    return {"story_s_per_panel": best_story, "generate_s": best_gen, "ratio": best_story / best_gen}


def default_method():
    """The settings `rgba story` uses by default."""
    from rgbacli.models.consistent_attention import CSAConfig
    from rgbacli.pipelines.story import DEFAULT_ANCHOR, DEFAULT_CSA, AnchorConfig

    return CSAConfig(**DEFAULT_CSA), AnchorConfig(**DEFAULT_ANCHOR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--panels", type=int, default=6)
    ap.add_argument("--id-length", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="measure the CSA variants")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--parts", default="consistency,adherence,timing",
                    help="which of consistency, adherence, timing to measure (comma-separated)")
    ap.add_argument("--subjects", type=int, default=len(SUBJECTS), help="how many of the subjects")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.child:
        peak_child(args.child, args.frames)
        return
    torch.set_num_threads(args.threads)
    from rgbacli.engine import Engine
    from rgbacli.models.consistent_attention import CSAConfig
    from rgbacli.pipelines.story import AnchorConfig

    engine = Engine("tiny", device="cpu")
    seeds = list(range(args.seeds))
    csa, anchor = default_method()
    subjects = SUBJECTS[:args.subjects]
    report: dict = {"frames": args.frames, "seeds": seeds, "subjects": list(subjects), "csa": csa.to_json(),
                    "anchor": anchor.to_json()}
    if args.memory:
        report["memory"] = memory(args.frames)
    elif args.sweep:
        variants = {
            "CSA (reference: sa 0.5)": (CSAConfig(sa=0.5), None),
            "CSA sa 1.0": (CSAConfig(sa=1.0), None),
            "CSA foreground, weight 4": (CSAConfig(foreground=True, bank_weight=4.0), None),
            "anchor alone (clip-wide)": (None, AnchorConfig()),
            "anchor alone (per frame)": (None, AnchorConfig(per_frame=True)),
            "CSA + anchor (clip-wide)": (CSAConfig(), AnchorConfig()),
            "CSA + anchor (per frame): default": (CSAConfig(), AnchorConfig(per_frame=True)),
            "CSA foreground w4 + anchor from 0.1": (CSAConfig(foreground=True, bank_weight=4.0), AnchorConfig(start=0.1)),
        }
        report["sweep"] = {}
        for name, kw in variants.items():
            t = time.perf_counter()
            report["sweep"][name] = consistency(engine, kw, args.frames, seeds, subjects, args.panels, args.id_length)
            row = report["sweep"][name]
            print(f"{name:36s} colour {row['colour_ratio']:.2f} area {row['area_ratio']:.2f} "
                  f"({time.perf_counter() - t:.0f}s)", flush=True)
    else:
        parts = set(args.parts.split(","))
        if "consistency" in parts:
            report["consistency"] = consistency(engine, (csa, anchor), args.frames, seeds, subjects, args.panels,
                                                args.id_length)
        if "adherence" in parts:
            report["adherence"] = adherence(engine, (csa, anchor), max(args.frames, 17), seeds)
        if "timing" in parts:
            report["timing"] = seconds_per_panel(engine, args.frames)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
