"""`rgba story`: a story → consistent characters as RGBA panels, clips and comic pages."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rgbacli.commands._options import (DeviceOpt, DtypeOpt, ForceOpt, JsonOpt, OffloadOpt, PremultipliedOpt,
                                       PresetOpt, WeightsDirOpt)
from rgbacli.console import info, print_json, progress
from rgbacli.errors import UsageError


def story(
    source: Annotated[str, typer.Argument(help="Story file (StoryDiffusion syntax, docs/story.md), or - for stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output folder (panels/, characters/, pages, "
                      "story.json).")],
    preset: PresetOpt = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Story seed; panel i uses seed + i.")] = 0,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Frames per panel (default: the preset's); 1 "
                      "makes stills, more makes clips as well (the tiny model needs clips: docs/story.md).")] = None,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Frame rate of panel clips.")] = None,
    clip_format: Annotated[str, typer.Option("--clip-format", help="Extension of panel clips (mov, webm, mkv, "
                           "apng, webp).")] = "mov",
    steps: Annotated[Optional[int], typer.Option("--steps", help="Sampling steps (default from preset).")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="Text CFG scale (default from "
                        "preset).")] = None,
    id_length: Annotated[int, typer.Option("--id-length", help="Identity panels per character: its first K "
                         "panels that name it alone, sampled together.")] = 2,
    sa: Annotated[Optional[float], typer.Option("--sa", help="Share of the other identity panels' tokens each "
                  "one attends to per step (0-1).")] = None,
    csa_start: Annotated[Optional[float], typer.Option("--csa-start", help="Share of the steps sampled before "
                         "consistent self-attention starts (0-1; layout and motion form early).  \\[default: 0.5]")] = None,
    no_csa: Annotated[bool, typer.Option("--no-csa", help="No consistent self-attention (each panel alone).")] = False,
    no_anchor: Annotated[bool, typer.Option("--no-anchor", help="No identity anchor (the foreground latent "
                         "statistics pull, docs/story.md).")] = False,
    layout: Annotated[str, typer.Option("--layout", help="Comic pages: grid (2x2), classic (StoryDiffusion's "
                      "rows) or none.")] = "grid",
    background: Annotated[str, typer.Option("--background", help="Page background: a colour (#RRGGBB[AA], "
                          "white, transparent, …) or an image.")] = "white",
    style: Annotated[str, typer.Option("--style", help="Prompt style (docs/story.md lists them).")] = "none",
    characters: Annotated[Optional[str], typer.Option("--characters", help="Reuse the characters of a file "
                          "written by --save-characters.")] = None,
    save_characters: Annotated[Optional[str], typer.Option("--save-characters", help="Write every character's "
                               "identity bank to this .safetensors file.")] = None,
    animate: Annotated[bool, typer.Option("--animate", help="Also join consecutive panels into one clip, "
                       "OUTDIR/story.<clip-format>, with `rgba interpolate` transitions between them.")] = False,
    animate_frames: Annotated[Optional[int], typer.Option("--animate-frames", help="Frames of each transition "
                              "(its two ends are the panels' own frames).  \\[default: the preset's clip length]")] = None,
    premultiplied: PremultipliedOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    offload: OffloadOpt = False,
    weights_dir: WeightsDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn a story into consistent RGBA panels (and clips) with comic pages.

    Characters are defined by `[Name] description` lines; every other line is a panel naming
    `[Name]`s (or `[NC]`), with its caption after the last `#`.
    """
    from dataclasses import asdict

    from rgbacli.batch.jobs import JOB_KINDS
    from rgbacli.batch.plan import Job
    from rgbacli.engine import Engine
    from rgbacli.models.consistent_attention import CSAConfig
    from rgbacli.pipelines.story import DEFAULT_ANCHOR, DEFAULT_CSA, AnchorConfig

    if frames is not None and frames < 1:
        raise UsageError(f"--frames must be at least 1, not {frames}")
    if no_csa and (sa is not None or csa_start is not None):
        raise UsageError(f"{'--sa' if sa is not None else '--csa-start'} sets consistent self-attention, which "
                         "--no-csa turns off")
    if save_characters is not None and not save_characters.endswith(".safetensors"):
        raise UsageError(f"--save-characters must end in .safetensors: {save_characters}")
    given = {k: v for k, v in (("sa", sa), ("start", csa_start)) if v is not None}
    try:
        csa = None if no_csa else CSAConfig(**{**DEFAULT_CSA, **given})
    except ValueError as e:
        raise UsageError(f"{'--sa' if 'sa must' in str(e) else '--csa-start'}: {e}") from None
    anchor = None if no_anchor else AnchorConfig(**DEFAULT_ANCHOR)
    if animate_frames is not None and not animate:
        raise UsageError("--animate-frames sets the transitions of --animate")
    text = _read(source)
    options = dict(text=text, source=source if source != "-" else "story (stdin)", outdir=output, seed=seed,
                   frames=frames, fps=fps, clip_format=clip_format, steps=steps, guidance=guidance,
                   id_length=id_length, csa=None if csa is None else asdict(csa),
                   anchor=None if anchor is None else asdict(anchor), layout=layout, background=background,
                   style=style, characters=characters, save_characters=save_characters,
                   premultiplied=premultiplied, force=force, animate=animate, animate_frames=animate_frames)
    engine = Engine(preset, device=device, dtype=dtype, offload=offload, weights_dir=weights_dir)
    job = Job(0, 0, source, kind="story", output=output, options=options)
    with progress() as bar:
        task = bar.add_task("story panels", total=None)
        summary = JOB_KINDS.get("story", "rgba story")(engine, job, lambda i, n: bar.update(task, completed=i, total=n))
    summary["preset"] = engine.preset.name
    if as_json:
        print_json(summary)
    else:
        info(f"wrote {summary['output']}: {summary['panels']} panels, {summary['pages']} pages, characters "
             f"{', '.join(summary['characters']) or 'none'} ({summary['seconds']:.1f}s)")


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read story file {source}: {getattr(e, 'strerror', None) or e}") from None
