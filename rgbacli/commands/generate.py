"""`rgba generate`: text → RGBA video, one prompt or a batch from a prompt file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rgbacli.commands._batch import BatchTarget, run_jobs
from rgbacli.commands._options import (BitDepthOpt, DeviceOpt, DtypeOpt, ExecutorOpt, ForceOpt, GpusPerWorkerOpt,
                                       JsonOpt, MatteOpt, MaxRetriesOpt, OffloadOpt, PremultipliedOpt, PresetOpt,
                                       RayAddressOpt, StartNumberOpt, WeightsDirOpt, WorkersOpt)
from rgbacli.console import info, print_json, progress
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
    solver: Annotated[Optional[str], typer.Option("--solver", help="unipc, euler, cogvideox-dpm or cogvideox-ddim "
                      "(default from preset).")] = None,
    negative: Annotated[Optional[str], typer.Option("--negative", help="Negative prompt (used when guidance > 1).")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="wan-alpha (alpha in the latent, two "
                       "decoders) or alpha-tokens (TransPixar); default: the preset's.")] = None,
    motion_guidance: Annotated[Optional[float], typer.Option("--motion-guidance", help="GenTron motion-free "
                               "guidance scale λM (e.g. 1.0–1.3).")] = None,
    trajectory: Annotated[Optional[list[str]], typer.Option("--trajectory", help="Motion path of one object: a "
                          "Tora .txt (one x,y per line on 256x256) or a .json ({\"canvas\": [w, h], \"objects\": "
                          "[[[x, y], ...]]}); repeat for more objects (docs/trajectory.md).")] = None,
    path: Annotated[Optional[list[str]], typer.Option("--path", help="Motion path in output pixels, e.g. "
                    "\"8,32 56,32\"; repeatable.")] = None,
    trajectory_method: Annotated[Optional[str], typer.Option("--trajectory-method", help="tora (the preset's "
                                 "trained adapter; default where it has one), noise (Wan-Alpha v2's training-free "
                                 "noise shift) or tora+noise (both).")] = None,
    trajectory_guidance: Annotated[Optional[float], typer.Option("--trajectory-guidance", help="Classifier-free "
                                   "guidance on the trajectory (tora methods): 1 is off, above 1 follows the path "
                                   "more closely for one more DiT pass per step (default from preset).")] = None,
    alpha_shift: Annotated[Optional[float], typer.Option("--alpha-shift", help="Wan-Alpha v2.0 noise shift: the "
                           "mean added to the initial noise outside the mask (default from preset, else 0.05; may be "
                           "negative: which sign attracts the object depends on the latent space, "
                           "docs/noise_shift.md); needs --alpha-mask or --alpha-center.")] = None,
    alpha_mask: Annotated[Optional[str], typer.Option("--alpha-mask", help="Noise-shift mask file (frames×H×W or "
                          "H×W, 1 where the object goes; the reference's torch file, .safetensors or .npy).")] = None,
    alpha_center: Annotated[Optional[str], typer.Option("--alpha-center", help="Noise-shift Gaussian ellipse centre "
                            "X,Y (fractions of the frame), or X,Y:X2,Y2 to move it over the clip.")] = None,
    alpha_size: Annotated[Optional[str], typer.Option("--alpha-size", help="Ellipse size W,H as fractions of the "
                          "frame (default 0.5,0.5).")] = None,
    prompts: Annotated[Optional[str], typer.Option("--prompts", help="Batch: file with one prompt per line or "
                       "JSONL items; '-' reads stdin.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Batch: skip items already done per the manifest.")] = False,
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="Batch: manifest path "
                        "(default: manifest.json beside the outputs).")] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    max_retries: MaxRetriesOpt = 2,
    preview: Annotated[bool, typer.Option("--preview", help="Also write <out>.preview.mp4 (checkerboard) "
                       "and <out>.sheet.png (contact sheet).")] = False,
    premultiplied: PremultipliedOpt = False,
    start_number: StartNumberOpt = None,
    bit_depth: BitDepthOpt = None,
    matte: MatteOpt = False,
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
    target = BatchTarget(executor, ray_address, workers, gpus_per_worker, max_retries).check(batch=prompts is not None)
    width = height = None
    if size is not None:
        width, height = parse_size(size)
    common = dict(frames=frames, width=width, height=height, fps=fps, steps=steps, guidance=guidance,
                  shift=shift, solver=solver, negative=negative, motion_guidance=motion_guidance,
                  **_noise_shift_options(alpha_shift, alpha_mask, alpha_center, alpha_size))
    if backend is not None:
        BACKENDS.get(backend, "--backend")
    chosen = with_backend(load_preset(preset or default_preset(weights_dir)), backend)
    engine = Engine(chosen, device=device, dtype=dtype, offload=offload, weights_dir=weights_dir)
    if preset is None:
        info(f"rgba: using preset '{engine.preset.name}' (pass --preset to choose)")
    options = dict(preview=preview, premultiplied=premultiplied, force=force, start_number=start_number,
                   bit_depth=bit_depth, matte=matte)
    if prompts is not None:  # the flags shared by every item: one usage error before any work
        from rgbacli.pipelines.params import params_from_sampling

        params_from_sampling(engine.preset.sampling, "batch", seed=seed, **common).validate(_limits(engine, target))
    _add_trajectory(engine.preset, common, trajectory, path, trajectory_method, prompt is None, trajectory_guidance)

    if prompts is None:
        engine.check_weights()  # every missing file at once, before any work
        job = generate_job(0, 0, prompt, seed, output or default_output(prompt), common, engine.preset.sampling, options)
        summary = _run_one(engine, job)
        summary["preset"] = engine.preset.name
        if as_json:
            print_json(summary)
        else:
            info(f"wrote {summary['output']} ({summary['frames']} frames {summary['size']}, "
                 f"{summary['seconds']:.1f}s, preset {engine.preset.name})")
        return
    placement = dict(device=device, dtype=dtype, offload=offload, weights_dir=weights_dir)
    raise typer.Exit(_run_batch(engine, prompts, output, seed, common, options, resume, manifest, as_json,
                                target, placement))


def _add_trajectory(preset, common: dict, files, paths, method, batch: bool, guidance: float | None = None) -> None:
    """Parse --trajectory/--path into `common` (resolved per clip by rgbacli/batch/plan.py, where a batch
    item may carry its own `trajectory`), with --trajectory-guidance for the tora methods."""
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.trajectory_input import choose_method, load_trajectory_file, parse_path_option

    p = params_from_sampling(preset.sampling, "", **{k: v for k, v in common.items() if v is not None})
    given = [t for f in files or [] for t in load_trajectory_file(f)]
    given += [parse_path_option(text, p.width, p.height) for text in paths or []]
    if not given and not batch:
        for flag, value in (("--trajectory-method", method), ("--trajectory-guidance", guidance)):
            if value is not None:
                raise UsageError(f"{flag} needs --trajectory FILE or --path")
        return
    try:
        common["trajectory_method"] = choose_method(preset, method)
    except UsageError as e:
        if given:
            raise
        common["trajectory_error"] = str(e)  # only items that ask for a trajectory fail
    if guidance is not None:
        if common.get("trajectory_method") == "noise":  # the one method without the adapter
            raise UsageError("--trajectory-guidance guides Tora's adapter: use --trajectory-method tora or tora+noise")
        common["trajectory_guidance"] = guidance
    if given:
        common["trajectory_given"] = given


def _noise_shift_options(mean, mask, center, size) -> dict:
    """--alpha-shift/--alpha-mask/--alpha-center/--alpha-size → GenerateParams fields (checked here,
    so a bad point or a missing mask file is one line before any model loads)."""
    from rgbacli.models.noise_shift import NoiseShift, parse_points

    if mean is not None and mask is None and center is None:
        raise UsageError("--alpha-shift needs --alpha-mask FILE or --alpha-center X,Y (where the object goes)")
    if mask is not None and not Path(mask).is_file():
        raise UsageError(f"--alpha-mask {mask}: no such file")
    centers = [list(pt) for pt in parse_points(center)] if center is not None else None
    sizes = list(parse_points(size)[0]) if size is not None else None
    NoiseShift.from_options(mean, mask, centers, sizes)  # the remaining checks (both given, size alone)
    return {"alpha_shift": mean, "alpha_mask": str(Path(mask).resolve()) if mask else None,
            "alpha_center": centers, "alpha_size": sizes}


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


def _run_batch(engine, prompts_arg, pattern, seed, common, options, resume, manifest_arg, as_json,
               target=None, placement=None) -> int:
    """Every item of a prompt file through the chosen executor (local, or Ray workers); a failing
    item is recorded and the rest run."""
    from rgbacli.batch.plan import plan_generate

    if pattern is None:
        raise UsageError("--prompts needs -o with a pattern, e.g. -o 'out/{index:03d}-{slug}.mov'")
    text = _read_prompts(prompts_arg)
    jobs = plan_generate(text, pattern, seed, common, engine.preset.sampling, options, _limits(engine, target))
    if not jobs:
        raise UsageError(f"prompt file {prompts_arg} has no prompts")
    manifest_path = Path(manifest_arg) if manifest_arg else Path(pattern).parent / "manifest.json"
    return run_jobs(engine, jobs, manifest_path, resume, as_json, target, placement)


def _limits(engine, target=None):
    """The model's limits for checking every item before any work (None when the model cannot be
    loaded, e.g. missing weights: then each item fails alone with that error). On Ray the driver
    loads no model (its workers do, and check each item against the limits before sampling)."""
    from rgbacli.errors import RgbaError

    if target is not None and target.executor != "local":
        return None
    try:
        return engine.backend.limits(engine.preset.name)
    except RgbaError:
        return None
