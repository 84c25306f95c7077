"""The `story` job: a story file → OUTDIR with panels, clips, character sheets, comic pages and
story.json. Everything is checked before sampling starts, and written into a temporary folder
that replaces OUTDIR only when complete (`--force`), so a failure leaves nothing behind.

OUTDIR/
  panels/000.png …      straight RGBA (a clip's middle frame)      panels/000.mov … (--frames > 1)
  characters/Milo.png   a character's identity panels side by side, on transparency
  page-01.png …         comic pages (--layout grid|classic) over --background
  story.json            per panel: index, characters, prompt, caption, seed, files; the pages
  story.<ext>           with --animate: the panels joined by `rgba interpolate` transitions
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from rgbacli.batch.plan import Job
from rgbacli.errors import UsageError
from rgbacli.fsutil import atomic_output, check_output

# What a character file must share with the story that reuses it: its banks are per step and per
# token layout, and only mean the same thing on the same model and sampling schedule.
BANK_KEYS = ("width", "height", "frames", "steps", "guidance", "motion_guidance", "shift", "solver")


def _background(spec: str):
    from rgbacli.media import read_clip
    from rgbacli.media.color import looks_like_color, parse_color

    if looks_like_color(spec):
        return parse_color(spec)
    if not Path(spec).exists():
        raise UsageError(f"--background {spec!r} is neither a colour nor an image file")
    return np.ascontiguousarray(read_clip(spec).frames[0])


def _check_characters(banks: dict, run_meta: dict, source: str) -> None:
    for name, bank in banks.items():
        theirs = {k: bank.meta.get(k) for k in ("preset", "model", *BANK_KEYS)}
        ours = {k: run_meta.get(k) for k in ("preset", "model", *BANK_KEYS)}
        diff = [f"{k} {theirs[k]} (this story: {ours[k]})" for k in theirs if theirs[k] != ours[k]]
        if diff:
            raise UsageError(f"{source}: character [{name}] was made with {', '.join(diff)}; use the same "
                             "preset and sampling settings")


def _animate(engine, story, result, base, frames: int, progress, total: int):
    """The panels joined into one clip: between panel i's last frame and panel i+1's first, the inner
    frames of an `rgba interpolate` transition (pinned keyframes + the preset's motion predictor),
    prompted with the characters of the next panel. Returns (frames (N, H, W, 4), the index at which
    each panel starts)."""
    from rgbacli.pipelines.interpolate import InterpolatePipeline

    interp = InterpolatePipeline(engine)
    parts, cuts, at = [], [], 0
    for i, r in enumerate(result.panels):
        if i > 0:
            prev = result.panels[i - 1].frames
            names = r.panel.characters
            prompt = ", ".join(story.characters[n].description for n in names if n in story.characters)
            p = replace(base, prompt=prompt, frames=frames, seed=base.seed + 100_000 + i)
            clip = interp(p, prev[-1], r.frames[0]).frames
            inner = clip[1:-1].numpy()  # its ends are the panels' own frames
            parts.append(inner)
            at += len(inner)
            if progress:
                progress(len(result.panels) + i, total)
        cuts.append(at)
        parts.append(r.frames.numpy())
        at += len(r.frames)
    return np.concatenate(parts), cuts


def run_story(engine, job: Job, progress: Callable[[int, int], None]) -> dict:
    import torch

    from rgbacli.media import Clip, write_clip
    from rgbacli.media.pages import PagePanel, character_sheet, make_pages, scale_for, zoom
    from rgbacli.models.consistent_attention import CSAConfig, load_banks, save_banks
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.story import AnchorConfig, StoryPipeline, styled
    from rgbacli.pipelines.story_text import parse_story
    from rgbacli.weights.io import module_fingerprint

    o = job.options
    t0 = time.perf_counter()
    outdir, force = Path(o["outdir"]), bool(o.get("force"))
    check_output(outdir, force)
    if o.get("save_characters"):
        check_output(o["save_characters"], force)
    loaded = load_banks(o["characters"]) if o.get("characters") else {}
    story = parse_story(o["text"], int(o.get("id_length", 2)), {n: b.description for n, b in loaded.items()},
                        where=o.get("source", "story"))
    styled("", o.get("style", "none"))  # an unknown style: one line, before any work
    layout = o.get("layout", "grid")
    if layout not in ("grid", "classic", "none"):
        raise UsageError(f"unknown layout {layout!r} (use grid, classic or none)")
    background = _background(o.get("background", "white"))
    base = params_from_sampling(engine.preset.sampling, "", seed=int(o.get("seed", 0)), frames=o.get("frames"),
                                steps=o.get("steps"), guidance=o.get("guidance"), fps=o.get("fps"))
    pipeline = StoryPipeline(engine)
    pipeline.t2v.latent_shape(replace(base, prompt=story.panels[0].prompt))  # the preset's limits: one line, before sampling
    run_meta = {"preset": engine.preset.name, "model": module_fingerprint(engine.backend.transformer),
                **{k: getattr(base, k) for k in BANK_KEYS}}
    _check_characters(loaded, run_meta, o.get("characters", ""))
    csa = CSAConfig(**o["csa"]) if o.get("csa") is not None else None
    anchor = AnchorConfig(**o["anchor"]) if o.get("anchor") is not None else None

    animate = int(o.get("animate_frames") or base.frames) if o.get("animate") else None
    if animate is not None:
        if animate < 3:
            raise UsageError(f"--animate-frames must be at least 3 (the two panels' frames and one in-between), "
                             f"not {animate}")
        if len(story.panels) < 2:
            raise UsageError("--animate joins consecutive panels: the story has only one")
        transition = replace(base, prompt="(keyframes)", frames=animate)
        pipeline.t2v.latent_shape(transition)  # the transition's length against the preset's limits
    total = len(story.panels) + (len(story.panels) - 1 if animate else 0)
    panel_progress = (lambda i, n: progress(i, total)) if progress else None
    result = pipeline(story, base, csa, o.get("style", "none"), loaded, panel_progress, anchor)
    animation = _animate(engine, story, result, base, animate, progress, total) if animate else None

    clip_ext = o.get("clip_format", "mov").lstrip(".")
    with atomic_output(outdir, force, directory=True) as tmp:
        (tmp / "panels").mkdir()
        (tmp / "characters").mkdir()
        entries, page_panels = [], []
        for r in result.panels:
            frames = r.frames.numpy()
            still = frames[len(frames) // 2]
            image = f"panels/{r.panel.index:03d}.png"
            write_clip(Clip(still[None], fps=base.fps), tmp / image)
            entry = {"index": r.panel.index, "line": r.panel.line, "characters": list(r.panel.characters),
                     "prompt": r.params.prompt, "caption": r.panel.caption, "seed": r.params.seed, "mode": r.mode,
                     "image": image}
            if base.frames > 1:
                entry["clip"] = f"panels/{r.panel.index:03d}.{clip_ext}"
                write_clip(Clip(frames, fps=base.fps), tmp / entry["clip"], premultiplied=bool(o.get("premultiplied")))
            entries.append(entry)
            page_panels.append(PagePanel((still * 255 + 0.5).clip(0, 255).astype(np.uint8), r.panel.caption))
        characters, row_of = [], {e["index"]: k for k, e in enumerate(entries)}
        for name in story.characters:
            bank = result.banks.get(name)
            ids = [p.index for p in story.identity_panels(name)] if name in story.new_characters() else []
            if ids:  # its identity panels, kept with the bank too (the sheet of a reused character)
                images = [page_panels[row_of[i]].image for i in ids]
                if bank is not None:
                    bank.images = [torch.from_numpy(np.ascontiguousarray(img)) for img in images]
            else:
                images = [img.numpy() for img in bank.images] if bank is not None else []
            entry = {"name": name, "description": story.characters[name].description, "identity_panels": ids,
                     "from_file": name in loaded}
            if images:
                entry["sheet"] = f"characters/{name}.png"
                write_clip(Clip(character_sheet(images)[None]), tmp / entry["sheet"])
            characters.append(entry)
        pages = []
        if page_panels:
            factor = scale_for(page_panels[0].image.shape[1])
            big = [PagePanel(zoom(p.image, factor), p.caption) for p in page_panels]
            for i, page in enumerate(make_pages(big, layout, background, seed=base.seed), start=1):
                name = f"page-{i:02d}.png"
                write_clip(Clip(page[None]), tmp / name)
                pages.append(name)
        doc = {"source": o.get("source", "story"), "preset": engine.preset.name, "seed": base.seed,
               "id_length": story.id_length, "style": o.get("style", "none"), "layout": layout,
               "frames": base.frames, "size": f"{base.width}x{base.height}", "steps": base.steps,
               "csa": None if csa is None else csa.to_json(), "anchor": None if anchor is None else anchor.to_json(),
               "characters": characters, "panels": entries, "pages": pages}
        if animation is not None:
            frames, cuts = animation
            doc["animation"] = {"clip": f"story.{clip_ext}", "frames": len(frames), "transition_frames": animate,
                                "panel_starts": cuts}
            write_clip(Clip(frames, fps=base.fps), tmp / doc["animation"]["clip"],
                       premultiplied=bool(o.get("premultiplied")))
        (tmp / "story.json").write_text(json.dumps(doc, indent=2))
    if o.get("save_characters"):
        for name, bank in result.banks.items():
            bank.meta = {**run_meta, **({} if name not in loaded else loaded[name].meta)}
        save_banks(result.banks, o["save_characters"])
    seconds = time.perf_counter() - t0
    return {"output": str(outdir), "panels": len(entries), "pages": len(pages), "characters": [c["name"] for c in characters],
            "seconds": round(seconds, 3), "timings": {"story_s": round(result.timings["seconds"], 3)},
            "story": str(outdir / "story.json"), "characters_file": o.get("save_characters"),
            **({} if animation is None else {"animation": str(outdir / f"story.{clip_ext}"),
                                             "animation_frames": len(animation[0])})}

