"""`rgba train <stage>`: train the embedded tiny model (or your own from a folder of RGBA clips)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from rgbacli.commands._options import JsonOpt
from rgbacli.console import err, info, print_json

# `rgba train STAGE`: a group of its own, registered in rgbacli/cli.py.
train_app = typer.Typer(help="Train the tiny model, stage by stage (see docs/training.md).", no_args_is_help=True)

# The stages' own options, declared once (Annotated aliases, defaults in the signatures).
OutOpt = Annotated[Path, typer.Option("--out", help="Run folder for checkpoints and stage outputs.")]
MinutesOpt = Annotated[Optional[float], typer.Option("--minutes", help="Wall-clock budget of the stage.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the stage's last checkpoint.")]
RetrainOpt = Annotated[bool, typer.Option("--force", help="Train the stage again from the start where it already ran.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (1 is fastest on a busy "
                       "machine: OpenMP threads that share cores with other work stall each other).")]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Folder of RGBA clips with .txt captions "
                    "(default: procedural).")]
ClipsOpt = Annotated[int, typer.Option("--clips", help="Clips encoded once into the latent cache for DiT stages "
                     "(with --data: each clip of the folder once, at most this many).")]
VggOpt = Annotated[Optional[str], typer.Option("--vgg", help="Local torchvision VGG16 weights for the paper's "
                   "perceptual loss (default: the frozen VAE encoder's first block).")]
EvalClipsOpt = Annotated[int, typer.Option("--eval-clips", min=1, help="Held-out clips for the stage's before/after "
                         "figures (alpha IoU, RGB PSNR).")]
RUN = Path("runs/tiny")
CLIPS = 1600


def _check(out: Path, minutes: float | None, threads: int | None, clips: int | None, data: str | None) -> None:
    """Bad option values are one line and exit 2 before anything is created."""
    from rgbacli.errors import RgbaError, UsageError

    if minutes is not None and not minutes > 0:
        raise UsageError(f"--minutes must be positive, not {minutes:g}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    if clips is not None and clips < 1:
        raise UsageError(f"--clips must be at least 1, not {clips}")
    if out.exists() and not out.is_dir():
        raise RgbaError(f"--out {out} is a file, not a run folder")
    if data is not None:
        from rgbacli.data.folder import discover

        discover(data)


def _writable_run(out: Path) -> None:
    """Create the run folder and prove it takes files, else one line naming it (read-only, full...)."""
    import tempfile

    from rgbacli.errors import RgbaError
    from rgbacli.fsutil import reason

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise RgbaError(f"--out {out}: cannot write the run folder ({reason(e)})") from None


def _run(stage: str, fn, as_json: bool, threads: int | None = None, **kw) -> None:
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    _writable_run(kw["run"])
    t0 = time.perf_counter()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), console=err, disable=not err.is_terminal)
    last = [0.0]

    def log(step, total, loss, what=stage):
        if bar.disable and time.perf_counter() - last[0] > 30:  # plain log lines when not a terminal
            last[0] = time.perf_counter()
            info(f"{what}: step {step}" + (f" loss {loss:.4f}" if loss is not None else "")
                 + f" ({time.perf_counter() - t0:.0f}s)")
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=None, info="")
        bar.update(tasks[what], completed=step, info="" if loss is None else f"loss {loss:.4f}")

    tasks: dict = {}
    with bar:
        result = fn(log=log, **kw)
    result = {"stage": stage, "run": str(kw["run"]), **{k: v for k, v in result.items() if k != "history"}}
    info(f"{stage}: done — " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in result.items() if k not in ("stage", "run")))
    if as_json:
        print_json(result)


def _stage(stage: str, fn, *, out: Path, minutes: float | None, default_minutes: float, resume: bool, force: bool,
           as_json: bool, threads: int | None, clips: int | None = None, data: str | None = None, **kw) -> None:
    """Validate, refuse to clobber a stage that already ran (check_stage), then train."""
    from rgbacli.train.recipe import check_stage

    _check(out, minutes, threads, clips, data)
    if kw.get("vgg") is not None and not Path(kw["vgg"]).is_file():
        from rgbacli.errors import RgbaError

        raise RgbaError(f"--vgg {kw['vgg']}: no such weights file")
    check_stage(out, stage, resume, force)
    if clips is not None:
        kw["clips"] = clips
    _run(stage, fn, as_json, threads, run=out, minutes=default_minutes if minutes is None else minutes,
         resume=resume, folder=data, **kw)


@train_app.command("base-vae")
def base_vae(out: OutOpt = RUN, minutes: MinutesOpt = None, resume: ResumeOpt = False, force: RetrainOpt = False,
             data: DataOpt = None, as_json: JsonOpt = False, threads: ThreadsOpt = None) -> None:
    """Stage 1: the base video VAE on RGB renders."""
    from rgbacli.train.recipe import stage_base_vae

    _stage("base-vae", stage_base_vae, out=out, minutes=minutes, default_minutes=12, resume=resume, force=force,
           as_json=as_json, threads=threads, data=data)


def _vae_command(stage: str, recipe_fn: str, default_minutes: float, doc: str) -> None:
    """Register `rgba train STAGE` for a stage that trains the RGBA VAE on clips (3, 3b, 3c)."""

    def command(out: OutOpt = RUN, minutes: MinutesOpt = None, resume: ResumeOpt = False, force: RetrainOpt = False,
                data: DataOpt = None, vgg: VggOpt = None, as_json: JsonOpt = False, threads: ThreadsOpt = None,
                eval_clips: EvalClipsOpt = 8) -> None:
        from rgbacli.train import recipe

        _stage(stage, getattr(recipe, recipe_fn), out=out, minutes=minutes, default_minutes=default_minutes,
               resume=resume, force=force, as_json=as_json, threads=threads, data=data, vgg=vgg,
               eval_clips=eval_clips)

    command.__doc__ = doc
    train_app.command(stage)(command)


def _dit_command(stage: str, recipe_fn: str, default_minutes: float, doc: str) -> None:
    """Register `rgba train STAGE` for a stage that trains the DiT on a latent cache (2, 4, 4b)."""

    def command(out: OutOpt = RUN, minutes: MinutesOpt = None, resume: ResumeOpt = False, force: RetrainOpt = False,
                clips: ClipsOpt = CLIPS, data: DataOpt = None, as_json: JsonOpt = False,
                threads: ThreadsOpt = None) -> None:
        from rgbacli.train import recipe

        _stage(stage, getattr(recipe, recipe_fn), out=out, minutes=minutes, default_minutes=default_minutes,
               resume=resume, force=force, as_json=as_json, threads=threads, clips=clips, data=data)

    command.__doc__ = doc
    train_app.command(stage)(command)


_dit_command("base-dit", "stage_base_dit", 30,
             "Stage 2: the base text-to-video DiT and the tiny text encoder on RGB latents.")
_vae_command("rgba-vae", "stage_rgba_vae", 12,
             "Stage 3 (Wan-Alpha): merge block + RGB/alpha decoder LoRAs, encoder frozen.")
_vae_command("rgba-decoders", "stage_rgba_decoders", 10,
             "Stage 3, continued on the decoders only (the latent space stays put, so later stages stay valid).")
_vae_command("rgb-decoder", "stage_rgb_decoder", 20,
             "Stage 3c: the RGB decoder alone, whole weights, on whole clips (latent space and alpha untouched).")
_dit_command("dora", "stage_dora", 20,
             "Stage 4 (Wan-Alpha): DoRA on the DiT over RGBA latents, with motion-free dropout.")
_dit_command("alpha-tokens", "stage_alpha_tokens", 18,
             "Stage 4b (TransPixar): alpha tokens on the base DiT, for `--backend alpha-tokens`.")

_dit_command("trajectory", "stage_trajectory", 40,
             "Stage 5 (Tora): trajectory extractor + motion fusers on the frozen DiT, for `--trajectory`.")


@train_app.command("smp")
def smp(out: OutOpt = RUN, minutes: MinutesOpt = None, resume: ResumeOpt = False, force: RetrainOpt = False,
        clips: Annotated[int, typer.Option("--clips", help="Clips (first/last frames as keyframes) encoded once "
                         "into the stage's cache.")] = 1000,
        data: DataOpt = None,
        base: Annotated[Optional[str], typer.Option("--base", help="Folder with the frozen tiny model's files "
                        "(default: the package's tiny weights).")] = None,
        steps: Annotated[Optional[int], typer.Option("--steps", help="Stop after this many updates.")] = None,
        guided: Annotated[float, typer.Option("--guided", help="Share of each batch drawn where `rgba interpolate` "
                          "samples: from the noised motion guide, at the levels after its steps (0: the plain "
                          "flow loss only).")] = 0.8,
        as_json: JsonOpt = False, threads: ThreadsOpt = None) -> None:
    """Stage 6 (StoryDiffusion SMP): the semantic motion predictor for `rgba interpolate`, base frozen."""
    from rgbacli.train.smp import stage_smp

    if steps is not None and steps < 1:
        from rgbacli.errors import UsageError

        raise UsageError(f"--steps must be at least 1, not {steps}")
    if not 0 <= guided <= 1:
        from rgbacli.errors import UsageError

        raise UsageError(f"--guided must be between 0 and 1, not {guided}")
    if base is not None and not Path(base).is_dir():
        from rgbacli.errors import RgbaError

        raise RgbaError(f"--base {base}: no such folder")
    _stage("smp", stage_smp, out=out, minutes=minutes, default_minutes=35, resume=resume, force=force,
           as_json=as_json, threads=threads, clips=clips, data=data, base=base, steps=steps, guided=guided)


@train_app.command("latents")
def latents(stage: Annotated[str, typer.Argument(help="The DiT stage whose cache to build: base-dit, dora or "
                                                 "alpha-tokens.")],
            out: OutOpt = RUN, clips: ClipsOpt = CLIPS, data: DataOpt = None, as_json: JsonOpt = False,
            threads: ThreadsOpt = None) -> None:
    """Encode a DiT stage's latent cache ahead of it (e.g. while another stage still trains)."""
    from rgbacli.errors import UsageError
    from rgbacli.train.recipe import LATENT_CACHES

    if stage not in LATENT_CACHES:
        raise UsageError(f"unknown stage {stage!r} for latents (choose from {', '.join(LATENT_CACHES)})")
    _check(out, None, threads, clips, data)

    def build(run, log):
        cache = LATENT_CACHES[stage](run, clips, log, data)
        return {"clips": len(cache.captions), "still": len(cache.still_captions)}

    _run(f"latents {stage}", build, as_json, threads, run=out)


@train_app.command("export")
def export(out: OutOpt = RUN,
           to: Annotated[Optional[Path], typer.Option("--to", help="Destination folder (default: the package's "
                         "tiny weights).")] = None,
           force: Annotated[bool, typer.Option("--force", help="Replace weight files that differ.")] = False,
           as_json: JsonOpt = False) -> None:
    """Copy the trained files into the package so the `tiny` preset uses them."""
    from rgbacli.presets import PACKAGE_WEIGHTS
    from rgbacli.train.recipe import export as do_export

    files = do_export(out, to or PACKAGE_WEIGHTS / "tiny", force)
    info("exported " + ", ".join(str(f) for f in files))
    if as_json:
        print_json({"files": [str(f) for f in files]})
