"""`rgba generate`: text → RGBA video, one prompt or a batch from a prompt file."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from rgbacli.cli import app
from rgbacli.console import info, print_json, progress, warn
from rgbacli.errors import RgbaError, UsageError
from rgbacli.fsutil import atomic_output, check_output


@app.command("generate")
def generate(
    prompt: Optional[str] = typer.Argument(None, help="What to generate, e.g. \"a glass jellyfish\"."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="Output file (.mov .webm .mkv .apng .webp name.%04d.png …). "
                                              "Default: <prompt-slug>.mov. With --prompts: a pattern such as "
                                              "'out/{index:03d}-{slug}.mov'."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset name or TOML path (default: the first "
                                         "real preset whose weights are present, else 'tiny')."),
    seed: int = typer.Option(0, "--seed", help="Random seed (batch: item i uses seed+i unless it sets one)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Number of frames (default from preset)."),
    size: Optional[str] = typer.Option(None, "--size", help="WxH, e.g. 832x480 (default from preset)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frames per second of the written clip."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Text CFG scale; 1.0 skips the "
                                             "unconditional pass entirely."),
    shift: Optional[float] = typer.Option(None, "--shift", help="Flow-matching timestep shift."),
    solver: Optional[str] = typer.Option(None, "--solver", help="unipc or euler (default from preset)."),
    negative: Optional[str] = typer.Option(None, "--negative", help="Negative prompt (used when guidance > 1)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="wan-alpha (alpha in the latent, two "
                                          "decoders) or alpha-tokens (TransPixar); default: the preset's."),
    motion_guidance: Optional[float] = typer.Option(None, "--motion-guidance",
                                                    help="GenTron motion-free guidance scale λM (e.g. 1.0–1.3)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Batch: file with one prompt per line or "
                                          "JSONL items; '-' reads stdin."),
    resume: bool = typer.Option(False, "--resume", help="Batch: skip items already done per the manifest."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Batch: manifest path "
                                           "(default: manifest.json beside the outputs)."),
    preview: bool = typer.Option(False, "--preview", help="Also write <out>.preview.mp4 (checkerboard) "
                                 "and <out>.sheet.png (contact sheet)."),
    premultiplied: bool = typer.Option(False, "--premultiplied", help="Write premultiplied (associated) "
                                       "alpha instead of straight."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    offload: bool = typer.Option(False, "--offload", help="Keep components on the CPU between uses (GPU)."),
    weights_dir: Optional[str] = typer.Option(None, "--weights-dir", help="Folder searched first for weights."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
) -> None:
    """Generate an RGBA clip from text (straight alpha unless --premultiplied)."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.batch import parse_size
    from rgbacli.presets import default_preset

    if (prompt is None) == (prompts is None):
        raise UsageError("give a PROMPT or --prompts FILE (exactly one)")
    width = height = None
    if size is not None:
        width, height = parse_size(size)
    common = dict(frames=frames, width=width, height=height, fps=fps, steps=steps, guidance=guidance,
                  shift=shift, solver=solver, negative=negative, motion_guidance=motion_guidance)
    from rgbacli.presets import load_preset, with_backend

    chosen = with_backend(load_preset(preset or default_preset(weights_dir)), backend)
    engine = Engine(chosen, device=device, dtype=dtype, offload=offload, weights_dir=weights_dir)
    if preset is None:
        info(f"rgba: using preset '{engine.preset.name}' (pass --preset to choose)")
    opts = dict(preview=preview, premultiplied=premultiplied, force=force)

    if prompts is None:
        out = output or _default_output(prompt)
        summary = _generate_one(engine, prompt, seed, out, common, opts)
        summary["preset"] = engine.preset.name
        if as_json:
            print_json(summary)
        else:
            info(f"wrote {summary['output']} ({summary['frames']} frames {summary['size']}, "
                 f"{summary['seconds']:.1f}s, preset {engine.preset.name})")
        return

    code = _run_batch(engine, prompts, output, seed, common, opts, resume, manifest, as_json)
    raise typer.Exit(code)


def _default_output(prompt: str) -> str:
    """<slug>.mov in the current folder; -2, -3 … are appended rather than overwrite anything."""
    from rgbacli.pipelines.batch import slugify

    base = slugify(prompt)
    candidate, n = f"{base}.mov", 2
    while Path(candidate).exists():
        candidate, n = f"{base}-{n}.mov", n + 1
    return candidate


def _generate_one(engine, prompt: str, seed: int, out: str, common: dict, opts: dict) -> dict:
    """Generate one clip and write it (+ previews) atomically; returns a summary dict."""
    from rgbacli.media import Clip, write_clip, write_contact_sheet, write_preview_mp4
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    from rgbacli.media.write import check_writable

    check_writable(out, opts["force"])
    extras = []
    if opts["preview"]:
        stem = Path(out).parent / re.sub(r"\.?%0?\d*d$", "", Path(out).with_suffix("").name)
        extras = [f"{stem}.preview.mp4", f"{stem}.sheet.png"]
        for extra in extras:
            check_output(extra, opts["force"])
    params = params_from_preset(engine, prompt, seed=seed, **common)
    pipe = TextToRGBAPipeline(engine)
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"generate '{prompt[:30]}'", total=params.steps)
        result = pipe(params, progress=lambda i, n: bar.update(task, completed=i))
    clip = Clip(frames=result.frames.numpy(), fps=params.fps, had_alpha=True)
    path = write_clip(clip, out, force=opts["force"], premultiplied=opts["premultiplied"])
    if extras:
        write_preview_mp4(clip, extras[0], force=opts["force"])
        write_contact_sheet(clip, extras[1], force=opts["force"])
    t, h, w, _ = result.frames.shape
    alpha = result.frames[..., 3]
    return {
        "output": str(path), "previews": extras, "frames": t, "size": f"{w}x{h}", "fps": params.fps,
        "seed": params.seed, "params": params.to_dict(), "seconds": round(time.perf_counter() - t0, 3),
        "timings": {k: round(v, 3) for k, v in result.timings.items()}, "passes_per_step": result.passes_per_step,
        "alpha_mean": round(float(alpha.mean()), 4), "alpha_coverage": round(float((alpha > 0.5).float().mean()), 4),
        "alpha": "premultiplied" if opts["premultiplied"] else "straight",
    }


def _run_batch(engine, prompts_arg, pattern, seed, common, opts, resume, manifest_arg, as_json) -> int:
    """Run every item of a prompt file; a failing item is recorded and the rest still run."""
    from rgbacli.pipelines.batch import is_done, load_manifest, output_for, parse_prompt_lines

    if pattern is None:
        raise UsageError("--prompts needs -o with a pattern, e.g. -o 'out/{index:03d}-{slug}.mov'")
    if prompts_arg == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(prompts_arg).read_text()
        except OSError as e:
            raise UsageError(f"cannot read prompt file {prompts_arg}: {e.strerror}") from None
    items = parse_prompt_lines(text)
    if not items:
        raise UsageError(f"prompt file {prompts_arg} has no prompts")
    manifest_path = Path(manifest_arg) if manifest_arg else Path(pattern).parent / "manifest.json"
    previous = load_manifest(manifest_path) if resume else {}
    entries, failed = [], 0
    for item in items:
        entry = {"index": item.index, "line": item.line, "prompt": item.prompt}
        if item.error:
            entry.update(status="failed", error=item.error)
        else:
            item_seed = item.overrides.get("seed", seed + item.index)
            merged = {**common, **{k: v for k, v in item.overrides.items() if k != "seed"}}
            try:
                out = output_for(pattern, item, item_seed)
            except UsageError as e:
                out, entry["error"], entry["status"] = None, str(e), "failed"
            if out is not None:
                from rgbacli.pipelines.t2v import params_from_preset

                params = params_from_preset(engine, item.prompt, seed=item_seed, **merged).to_dict()
                entry.update(output=out, seed=item_seed, params=params)
                if resume and is_done(previous, out, params):
                    entry["status"] = "ok"
                    entry["skipped"] = True
                    entries.append(entry)
                    info(f"[{item.index}] skipped (done): {out}")
                    continue
                try:
                    summary = _generate_one(engine, item.prompt, item_seed, out, merged, opts)
                    entry.update(status="ok", seconds=summary["seconds"], timings=summary["timings"])
                    info(f"[{item.index}] wrote {out}")
                except RgbaError as e:
                    entry.update(status="failed", error=str(e))
        if entry["status"] == "failed":
            failed += 1
            warn(f"item {item.index} (line {item.line}) failed: {entry['error']}")
        entries.append(entry)
    doc = {"preset": engine.preset.name, "device": str(engine.device), "items": entries,
           "ok": len(entries) - failed, "failed": failed}
    with atomic_output(manifest_path, force=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str))
    if as_json:
        print_json({**doc, "manifest": str(manifest_path)})
    else:
        info(f"{len(entries) - failed} ok, {failed} failed; manifest {manifest_path}")
    return 1 if failed else 0
