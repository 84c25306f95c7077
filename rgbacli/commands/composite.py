"""`rgba composite`: layer transparent clips over a video, an image or a colour."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rgbacli.commands._options import (BitDepthOpt, ForceOpt, InputFpsOpt, JsonOpt, MatteOpt, PremultipliedOpt,
                                       StartNumberOpt)
from rgbacli.errors import UsageError


def _pair(text: str, sep: str, what: str, cast=int) -> tuple:
    parts = text.lower().split(sep)
    try:
        if len(parts) != 2:
            raise ValueError
        return cast(parts[0]), cast(parts[1])
    except ValueError:
        raise UsageError(f"{what} must look like {'X,Y' if sep == ',' else 'WxH'}, got {text!r}") from None


def composite(
    fg: Annotated[list[Path], typer.Argument(help="Foreground RGBA clip(s); several are layered in order, first lowest.")],
    over: Annotated[str, typer.Option("--over", help="Background: a video, an image, or a colour (#RRGGBB[AA], black, "
                    "white, …).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file; the format follows the extension "
                      "(.mov .webm .mkv .apng .webp .gif .mp4 .png, name.%04d.png).")],
    position: Annotated[Optional[list[str]], typer.Option("--position", help="Top-left X,Y of the FG on the canvas (may "
                        "be negative). Give once for all FGs or once per FG.  \\[default: 0,0]")] = None,
    scale: Annotated[Optional[list[float]], typer.Option("--scale", help="Resize the FG by this factor (filtered in "
                     "premultiplied space, so edges stay clean). Once or once per FG.  \\[default: 1]")] = None,
    enter: Annotated[Optional[list[int]], typer.Option("--enter", help="Output frame at which the FG enters. Once or "
                     "once per FG.  \\[default: 0]")] = None,
    start: Annotated[int, typer.Option("--start", help="Trim: the first frame of the composite that is written "
                     "(0 is its start).")] = 0,
    duration: Annotated[Optional[int], typer.Option("--duration", help="Trim: how many frames to write from --start "
                        "(default: to the end).")] = None,
    fit: Annotated[str, typer.Option("--fit", help="When clips differ in length the output lasts as long as the "
                   "longest; shorter ones 'loop' or 'hold' their last frame.")] = "loop",
    fps: Annotated[Optional[float], typer.Option("--fps", help="Output frame rate; other rates are resampled (frame on "
                   "screen at each timestamp).  \\[default: the background's, else the first FG's]")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="Canvas WxH for a colour background.  "
                    "\\[default: first FG's size]")] = None,
    input_fps: InputFpsOpt = None,
    start_number: StartNumberOpt = None,
    bit_depth: BitDepthOpt = None,
    matte: MatteOpt = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    premultiplied: PremultipliedOpt = False,
) -> None:
    """Composite RGBA clips over a background with straight-alpha "over" (exact in 8 bits).

    Over a translucent background the result keeps alpha: αo = αf + αb·(1−αf).
    """
    from rgbacli import console
    from rgbacli.media import matte_path
    from rgbacli.media.composite import run_composite

    if fit not in ("loop", "hold"):
        raise UsageError(f"--fit must be 'loop' or 'hold', got {fit!r}")
    positions = [_pair(p, ",", "--position") for p in position] if position else None
    canvas = _pair(size, "x", "--size") if size else None
    if canvas is not None and min(canvas) < 1:
        raise UsageError(f"--size must be positive, got {size!r}")
    with console.progress() as bar:
        task = bar.add_task("compositing", total=None)

        def tick(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total if total and total >= done else None)

        summary = run_composite([str(f) for f in fg], over, str(output), positions=positions, scales=scale or None,
                                starts=enter or None, fit=fit, fps=fps, size=canvas, force=force,
                                premultiplied=premultiplied, on_frame=tick, input_fps=input_fps,
                                trim_start=start, trim_frames=duration, start_number=start_number,
                                bit_depth=bit_depth, matte=str(matte_path(output)) if matte else None)
    if json_out:
        console.print_json(summary)
    else:
        w, h = summary["size"]
        console.info(f"wrote {summary['output']} ({summary['frames']} frames, {w}x{h}, {summary['fps']:g} fps, "
                     f"{summary['seconds']:.1f} s)" + (f"; matte {summary['matte']}" if "matte" in summary else ""))
