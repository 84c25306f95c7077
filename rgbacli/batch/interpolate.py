"""The `interpolate` job: two keyframes → the in-between RGBA clip, written atomically.

Everything a user can get wrong (the keyframe files, their sizes, --frames, the output path) is
checked before sampling starts, so a failure writes nothing. Batch files are JSONL, one item a
line: `{"a": "pose1.png", "b": "pose2.png", "prompt": "...", "frames": 17, "output": "out.mov"}`
(`seed`, `steps`, `guidance`, `keyframe_strength`, `guide`, `exact_keyframes` optional); relative keyframe paths are read
from the batch file's folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from rgbacli.batch.plan import Job, preview_paths, slugify
from rgbacli.errors import UsageError

ITEM_KEYS = {"a", "b", "prompt", "frames", "output", "seed", "steps", "guidance", "keyframe_strength", "guide",
             "exact_keyframes"}


def check_guide(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise UsageError(f"--guide must be between 0 and 1, not {value:g}")
    return float(value)


def check_strength(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise UsageError(f"--keyframe-strength must be between 0 and 1, not {value:g}")
    return float(value)


def interpolate_job(index: int, line: int, a: str, b: str, prompt: str, output: str, params: dict,
                    options: dict) -> Job:
    """A job whose `params` hold the GenerateParams fields the user set (the rest from the preset,
    filled in when it runs: the size comes from the keyframes)."""
    return Job(index, line, prompt, "interpolate", params.get("seed", 0), output, dict(params),
               {**options, "a": a, "b": b})


def plan_interpolate(text: str, pattern: str | None, seed: int, common: dict, options: dict,
                     base_dir: Path | None = None) -> list[Job]:
    """Every JSONL item as a job (a bad line: a job carrying its error). Item i gets `seed + i`
    unless it sets one; its output is its own `output` or the pattern ({index}, {slug}, {seed})."""
    jobs: list[Job] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        index = len(jobs)

        def bad(message: str) -> None:
            jobs.append(Job(index, lineno, "", "interpolate", error=f"line {lineno}: {message}"))

        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad(f"invalid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            bad("expected a JSON object with 'a' and 'b'")
            continue
        unknown = sorted(set(obj) - ITEM_KEYS)
        if unknown:
            bad(f"unknown key '{unknown[0]}' (known: {', '.join(sorted(ITEM_KEYS))})")
            continue
        missing = [k for k in ("a", "b") if not isinstance(obj.get(k), str) or not obj[k].strip()]
        if missing:
            bad(f"missing or empty '{missing[0]}'")
            continue
        prompt = obj.get("prompt", "")
        if not isinstance(prompt, str):
            bad("'prompt' must be a string")
            continue
        try:
            params = dict(common)
            params["seed"] = int(obj.get("seed", seed + index))
            for key in ("frames", "steps"):
                if key in obj:
                    params[key] = int(obj[key])
            if "guidance" in obj:
                params["guidance"] = float(obj["guidance"])
            opts = dict(options)
            if "keyframe_strength" in obj:
                opts["keyframe_strength"] = check_strength(float(obj["keyframe_strength"]))
            if "guide" in obj:
                opts["guide"] = check_guide(float(obj["guide"]))
            if "exact_keyframes" in obj:
                if not isinstance(obj["exact_keyframes"], bool):
                    raise UsageError("'exact_keyframes' must be true or false")
                opts["exact_keyframes"] = obj["exact_keyframes"]
        except (TypeError, ValueError, UsageError) as e:
            bad(str(e) if isinstance(e, UsageError) else f"bad value ({e})")
            continue
        a, b = (str(Path(obj[k]) if base_dir is None or Path(obj[k]).is_absolute() else base_dir / obj[k])
                for k in ("a", "b"))
        output = obj.get("output")
        if output is None:
            if pattern is None:
                bad("no 'output' and no -o pattern")
                continue
            try:
                output = pattern.format(index=index, slug=slugify(prompt or f"{Path(a).stem}-{Path(b).stem}"),
                                        seed=params["seed"])
            except (KeyError, IndexError, ValueError) as e:
                raise UsageError(f"bad output pattern '{pattern}': {e} (use {{index}}, {{slug}}, {{seed}})") from None
        jobs.append(interpolate_job(index, lineno, a, b, prompt, str(output), params, opts))
    return jobs


def run_interpolate(engine, job: Job, progress: Callable[[int, int], None]) -> dict:
    """Read and check the keyframes, sample the clip, write it (+ previews) atomically."""
    import numpy as np

    from rgbacli.console import info, warn
    from rgbacli.fsutil import check_output
    from rgbacli.media import Clip, write_clip, write_contact_sheet, write_preview_mp4
    from rgbacli.media.write import check_writable
    from rgbacli.pipelines.interpolate import DEFAULT_GUIDE, InterpolatePipeline
    from rgbacli.pipelines.keyframes import check_frames, read_keyframes
    from rgbacli.pipelines.params import params_from_sampling

    o, out = job.options, job.output
    force = bool(o.get("force"))
    strength = check_strength(o.get("keyframe_strength", 1.0))
    p = params_from_sampling(engine.preset.sampling, job.prompt, **job.params)
    check_frames(p.frames)
    check_writable(out, force)
    extras = preview_paths(out) if o.get("preview") else []
    for extra in extras:
        check_output(extra, force)
    backend = engine.backend
    pair = read_keyframes(o["a"], o["b"], backend.spatial_factor * backend.patch_size, engine.preset.name,
                          tuple(o["size"]) if o.get("size") else None)
    for note in pair.notes:
        info(note)
    for message in pair.warnings:
        warn(message)
    p = params_from_sampling(engine.preset.sampling, job.prompt, **{**job.params, "width": pair.width,
                                                                     "height": pair.height})
    t0 = time.perf_counter()
    guide = check_guide(o.get("guide", DEFAULT_GUIDE))
    result = InterpolatePipeline(engine)(p, pair.start.rgba, pair.end.rgba, strength, bool(o.get("smp", True)),
                                         progress, guide=guide, exact_keyframes=bool(o.get("exact_keyframes", True)))
    frames = result.frames.numpy()
    clip = Clip(frames=frames, fps=p.fps, had_alpha=True)
    path = write_clip(clip, out, force=force, premultiplied=bool(o.get("premultiplied")))
    if extras:
        write_preview_mp4(clip, extras[0], force=force)
        write_contact_sheet(clip, extras[1], force=force)

    def iou(x, y):
        x, y = x > 0.5, y > 0.5
        union = (x | y).sum()
        return round(float((x & y).sum() / union), 4) if union else 1.0

    return {
        "output": str(path), "previews": extras, "a": o["a"], "b": o["b"], "a_frame": pair.start.frame,
        "b_frame": pair.end.frame, "frames": int(frames.shape[0]), "size": f"{pair.width}x{pair.height}",
        "fps": p.fps, "seed": p.seed, "params": p.to_dict(), "smp": result.smp, "keyframe_strength": strength, "guide": guide,
        "exact_keyframes": bool(o.get("exact_keyframes", True)),
        "endpoint_alpha_iou": [iou(frames[0, ..., 3], pair.start.rgba[..., 3]),
                               iou(frames[-1, ..., 3], pair.end.rgba[..., 3])],
        "endpoint_rgb_error": [round(float(np.abs(frames[i, ..., :3] - k.rgba[..., :3])[k.rgba[..., 3] > 0.5].mean()), 4)
                               if (k.rgba[..., 3] > 0.5).any() else None
                               for i, k in ((0, pair.start), (-1, pair.end))],
        "notes": pair.notes + pair.warnings, "seconds": round(time.perf_counter() - t0, 3),
        "timings": {k: round(v, 3) for k, v in result.timings.items()}, "passes_per_step": result.passes_per_step,
        "alpha": "premultiplied" if o.get("premultiplied") else "straight",
    }
