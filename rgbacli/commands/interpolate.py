"""`rgba interpolate A B -o OUT`: two RGBA keyframes → the in-between clip (or a JSONL batch of pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rgbacli.commands._batch import BatchTarget, run_jobs
from rgbacli.commands._options import (DeviceOpt, DtypeOpt, ExecutorOpt, ForceOpt, GpusPerWorkerOpt, JsonOpt,
                                       MaxRetriesOpt, OffloadOpt, PremultipliedOpt, PresetOpt, RayAddressOpt,
                                       WeightsDirOpt, WorkersOpt)
from rgbacli.console import info, print_json, progress
from rgbacli.errors import UsageError


def interpolate(
    a: Annotated[Optional[str], typer.Argument(help="Start keyframe: an RGBA image (PNG, WebP, APNG: its first "
                 "frame) or a clip (its last frame).")] = None,
    b: Annotated[Optional[str], typer.Argument(help="End keyframe: an RGBA image or a clip (its first frame).")] = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Output clip (.mov .webm .mkv .apng .webp "
                      "name.%04d.png …). With --batch: a pattern such as 'out/{index:03d}-{slug}.mov' for items "
                      "without their own output.")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Frames of the clip, keyframes included "
                      "(at least 3; default from preset).")] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="What the clip shows (optional: the keyframes and the "
                      "motion predictor carry the motion).")] = "",
    preset: PresetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (batch: item i uses seed+i unless it sets one).")] = 0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Sampling steps.")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="Text CFG scale; 1.0 skips the "
                        "unconditional pass.")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="WxH of the clip (default: keyframe A's size; the "
                    "other is resized to it).")] = None,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Frames per second of the written clip.")] = None,
    no_smp: Annotated[bool, typer.Option("--no-smp", help="No semantic motion predictor: pinned keyframes only.")] = False,
    keyframe_strength: Annotated[float, typer.Option("--keyframe-strength", help="How firmly the first and last "
                                 "latent frames are held to the keyframes (1 = exactly, 0 = free).")] = 1.0,
    guide: Annotated[float, typer.Option("--guide", help="Share of the steps that follow the motion guide (A "
                     "sliding to B's place while it crossfades into B), before the model refines the clip freely "
                     "(0 = no guide).")] = 0.5,
    exact_keyframes: Annotated[bool, typer.Option("--exact-keyframes/--no-exact-keyframes", help="Write A and B "
                               "as the clip's first and last frames exactly, the VAE's loss at each end carried "
                               "into the frames next to it (--no-exact-keyframes: the decoder's own ends).")] = True,
    batch: Annotated[Optional[str], typer.Option("--batch", help="JSONL file of items {\"a\", \"b\", \"prompt\", "
                     "\"frames\", \"output\"}; '-' reads stdin.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Batch: skip items already done per the manifest.")] = False,
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="Batch: manifest path (default: "
                        "manifest.json beside the outputs).")] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    max_retries: MaxRetriesOpt = 2,
    preview: Annotated[bool, typer.Option("--preview", help="Also write <out>.preview.mp4 (checkerboard) and "
                       "<out>.sheet.png (contact sheet).")] = False,
    premultiplied: PremultipliedOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    offload: OffloadOpt = False,
    weights_dir: WeightsDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Make the RGBA clip between two keyframes (pinned keyframes + a semantic motion predictor).

    Without --preset: the first real preset whose weights are all present, else the embedded tiny model.
    """
    from rgbacli.batch.interpolate import check_guide, check_strength, interpolate_job
    from rgbacli.batch.plan import parse_size
    from rgbacli.engine import Engine
    from rgbacli.pipelines.keyframes import check_frames
    from rgbacli.presets import default_preset

    if batch is None and (a is None or b is None):
        raise UsageError("give keyframes A and B (or --batch FILE)")
    if batch is not None and (a is not None or b is not None):
        raise UsageError("give keyframes A and B or --batch FILE, not both")
    if batch is None and output is None:
        raise UsageError("-o/--output is required (e.g. -o transition.mov)")
    if frames is not None:
        check_frames(frames)
    check_strength(keyframe_strength)
    check_guide(guide)
    target = BatchTarget(executor, ray_address, workers, gpus_per_worker, max_retries).check(
        batch=batch is not None, batch_flag="--batch FILE")
    parsed_size = list(parse_size(size)) if size is not None else None
    common = {k: v for k, v in dict(frames=frames, steps=steps, guidance=guidance, fps=fps).items() if v is not None}
    options = dict(size=parsed_size, keyframe_strength=keyframe_strength, guide=guide, smp=not no_smp,
                   exact_keyframes=exact_keyframes,
                   preview=preview, premultiplied=premultiplied, force=force)
    engine = Engine(preset or default_preset(weights_dir), device=device, dtype=dtype, offload=offload,
                    weights_dir=weights_dir)
    if preset is None:
        info(f"rgba: using preset '{engine.preset.name}' (pass --preset to choose)")
    if batch is not None:
        placement = dict(device=device, dtype=dtype, offload=offload, weights_dir=weights_dir)
        raise typer.Exit(_run_batch(engine, batch, output, seed, common, options, resume, manifest, as_json,
                                    target, placement))

    from rgbacli.batch.jobs import JOB_KINDS

    job = interpolate_job(0, 0, a, b, prompt, output, {**common, "seed": seed}, options)
    with progress() as bar:
        task = bar.add_task("interpolate", total=None)
        summary = JOB_KINDS.get("interpolate", "rgba interpolate")(
            engine, job, lambda i, n: bar.update(task, completed=i, total=n))
    summary["preset"] = engine.preset.name
    if as_json:
        print_json(summary)
    else:
        iou = summary["endpoint_alpha_iou"]
        info(f"wrote {summary['output']} ({summary['frames']} frames {summary['size']}, "
             f"{'SMP' if summary['smp'] else 'no SMP'}, endpoint alpha IoU {iou[0]:.2f}/{iou[1]:.2f}, "
             f"{summary['seconds']:.1f}s, preset {engine.preset.name})")


def _run_batch(engine, source, pattern, seed, common, options, resume, manifest_arg, as_json, target,
               placement) -> int:
    """Every item of a JSONL batch of keyframe pairs through the chosen executor (local or Ray)."""
    import sys

    from rgbacli.batch.interpolate import plan_interpolate

    if source == "-":
        text, base = sys.stdin.read(), None
    else:
        try:
            text, base = Path(source).read_text(), Path(source).parent
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read batch file {source}: {getattr(e, 'strerror', None) or e}") from None
    jobs = plan_interpolate(text, pattern, seed, common, options, base)
    if not jobs:
        raise UsageError(f"batch file {source} has no items")
    first = next((j.output for j in jobs if j.output), None)
    manifest_path = Path(manifest_arg) if manifest_arg else Path(pattern or first or ".").parent / "manifest.json"
    return run_jobs(engine, jobs, manifest_path, resume, as_json, target, placement, header={"kind": "interpolate"})
