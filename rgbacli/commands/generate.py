"""`rgba generate`: text → RGBA video, one prompt or a batch from a prompt file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rgbacli.commands._options import (DeviceOpt, DtypeOpt, ForceOpt, JsonOpt, OffloadOpt, PremultipliedOpt,
                                       PresetOpt, WeightsDirOpt)
from rgbacli.console import info, print_json, progress, warn
from rgbacli.errors import UsageError


def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="What to generate, e.g. \"a glass jellyfish\".")] = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Output file (.mov .webm .mkv .apng .webp "
                      "name.%04d.png …). Default: <prompt-slug>.mov. With --prompts: a pattern such as "
                      "'out/{index:03d}-{slug}.mov'.")] = None,
    preset: PresetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (batch: item i uses seed+i unless it sets one).")] = 0,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Number of frames (default from preset).")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="WxH, e.g. 832x480 (default from preset).")] = None,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Frames per second of the written clip.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Sampling steps.")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="Text CFG scale; 1.0 skips the "
                        "unconditional pass entirely.")] = None,
    shift: Annotated[Optional[float], typer.Option("--shift", help="Flow-matching timestep shift.")] = None,
    solver: Annotated[Optional[str], typer.Option("--solver", help="unipc or euler (default from preset).")] = None,
    negative: Annotated[Optional[str], typer.Option("--negative", help="Negative prompt (used when guidance > 1).")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="wan-alpha (alpha in the latent, two "
                       "decoders) or alpha-tokens (TransPixar); default: the preset's.")] = None,
    motion_guidance: Annotated[Optional[float], typer.Option("--motion-guidance", help="GenTron motion-free "
                               "guidance scale λM (e.g. 1.0–1.3).")] = None,
    prompts: Annotated[Optional[str], typer.Option("--prompts", help="Batch: file with one prompt per line or "
                       "JSONL items; '-' reads stdin.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Batch: skip items already done per the manifest.")] = False,
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="Batch: manifest path "
                        "(default: manifest.json beside the outputs).")] = None,
    preview: Annotated[bool, typer.Option("--preview", help="Also write <out>.preview.mp4 (checkerboard) "
                       "and <out>.sheet.png (contact sheet).")] = False,
    premultiplied: PremultipliedOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    offload: OffloadOpt = False,
    weights_dir: WeightsDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate an RGBA clip from text (straight alpha unless --premultiplied).

    Without --preset: the first real preset whose weights are all present, else the embedded tiny model.
    """
    from rgbacli.backends import BACKENDS
    from rgbacli.batch.plan import default_output, generate_job, parse_size
    from rgbacli.engine import Engine
    from rgbacli.presets import default_preset, load_preset, with_backend

    if (prompt is None) == (prompts is None):
        raise UsageError("give a PROMPT or --prompts FILE (exactly one)")
    width = height = None
    if size is not None:
        width, height = parse_size(size)
    common = dict(frames=frames, width=width, height=height, fps=fps, steps=steps, guidance=guidance,
                  shift=shift, solver=solver, negative=negative, motion_guidance=motion_guidance)
    if backend is not None:
        BACKENDS.get(backend, "--backend")
    chosen = with_backend(load_preset(preset or default_preset(weights_dir)), backend)
    engine = Engine(chosen, device=device, dtype=dtype, offload=offload, weights_dir=weights_dir)
    if preset is None:
        info(f"rgba: using preset '{engine.preset.name}' (pass --preset to choose)")
    options = dict(preview=preview, premultiplied=premultiplied, force=force)
    if prompts is not None:  # the flags shared by every item: one usage error before any work
        from rgbacli.pipelines.params import params_from_sampling

        params_from_sampling(engine.preset.sampling, "batch", seed=seed, **common).validate(_limits(engine))

    if prompts is None:
        job = generate_job(0, 0, prompt, seed, output or default_output(prompt), common, engine.preset.sampling, options)
        summary = _run_one(engine, job)
        summary["preset"] = engine.preset.name
        if as_json:
            print_json(summary)
        else:
            info(f"wrote {summary['output']} ({summary['frames']} frames {summary['size']}, "
                 f"{summary['seconds']:.1f}s, preset {engine.preset.name})")
        return
    raise typer.Exit(_run_batch(engine, prompts, output, seed, common, options, resume, manifest, as_json))


def _run_one(engine, job) -> dict:
    """One clip with a progress bar; a failure is the job's error, raised as it was."""
    from rgbacli.batch.jobs import JOB_KINDS

    with progress() as bar:
        task = bar.add_task(f"generate '{job.prompt[:30]}'", total=job.params["steps"])
        return JOB_KINDS.get(job.kind, "rgba generate")(engine, job, lambda i, n: bar.update(task, completed=i))


def _read_prompts(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except OSError as e:
        raise UsageError(f"cannot read prompt file {source}: {e.strerror}") from None


def _run_batch(engine, prompts_arg, pattern, seed, common, options, resume, manifest_arg, as_json) -> int:
    """Every item of a prompt file through the local executor; a failing item is recorded and the rest run."""
    from rgbacli.batch.driver import run_batch
    from rgbacli.batch.executor import LocalExecutor
    from rgbacli.batch.plan import plan_generate

    if pattern is None:
        raise UsageError("--prompts needs -o with a pattern, e.g. -o 'out/{index:03d}-{slug}.mov'")
    text = _read_prompts(prompts_arg)
    jobs = plan_generate(text, pattern, seed, common, engine.preset.sampling, options, _limits(engine))
    if not jobs:
        raise UsageError(f"prompt file {prompts_arg} has no prompts")
    manifest_path = Path(manifest_arg) if manifest_arg else Path(pattern).parent / "manifest.json"
    header = {"preset": engine.preset.name, "device": str(engine.device)}
    last: dict = {}
    try:
        with progress() as bar:
            doc = run_batch(LocalExecutor(engine), jobs, manifest_path, resume, header, _reporter(bar),
                            on_update=last.update)
    finally:  # also when a stop signal ends the batch: the summary of what the manifest says
        if last:
            if as_json:
                print_json({**last, "manifest": str(manifest_path)})
            else:
                info(f"{last['ok']} ok, {last['failed']} failed"
                     + (f", {last['pending'] + last['interrupted']} not done" if last["state"] != "complete" else "")
                     + f"; manifest {manifest_path}")
    return 1 if doc["failed"] else 0


def _limits(engine):
    """The model's limits for checking every item before any work (None when the model cannot be
    loaded, e.g. missing weights: then each item fails alone with that error)."""
    from rgbacli.errors import RgbaError

    try:
        return engine.backend.limits(engine.preset.name)
    except RgbaError:
        return None


def _reporter(bar):
    """Batch events → a progress bar per item and one line per finished, skipped or failed item."""
    tasks = {}

    def on_event(event) -> None:
        job = event.job
        if event.kind == "started":
            tasks[job.index] = bar.add_task(f"[{job.index}] '{job.prompt[:30]}'", total=job.params.get("steps"))
        elif event.kind == "progress" and job.index in tasks:
            bar.update(tasks[job.index], completed=event.step)
        elif event.kind == "skipped":
            info(f"[{job.index}] skipped (done): {job.output}")
        elif event.kind == "finished":
            if job.index in tasks:
                bar.remove_task(tasks.pop(job.index))
            if event.entry["status"] == "ok":
                info(f"[{job.index}] wrote {job.output}")
            else:
                error = event.entry["error"]
                where = "" if error.startswith(f"line {job.line}:") else f"line {job.line}: "
                warn(f"item {job.index} failed: {where}{error}")

    return on_event
