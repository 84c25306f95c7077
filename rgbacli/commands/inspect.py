"""`rgba inspect`: what rendered RGBA files hold (codec, size, alpha use, coverage) with CI checks.

A plain function with Annotated Typer options; rgbacli/cli.py registers it. The figures come
from rgbacli.media.inspect; this module only parses, calls and reports.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rgbacli.commands._options import JsonOpt


def inspect(
    files: Annotated[list[str], typer.Argument(
        help="Media to inspect: .mov .webm .mkv .apng .webp .gif .mp4 .png .jpg, name.%04d.png, a folder.",
        show_default=False)],
    as_json: JsonOpt = False,
    require_alpha: Annotated[bool, typer.Option(
        "--require-alpha", help="Fail (exit 1) unless the file has an alpha channel with some pixel below 255.")] = False,
    min_coverage: Annotated[Optional[float], typer.Option(
        "--min-coverage", help="Fail if any frame has less than this share of pixels with alpha > 0.5.",
        show_default=False)] = None,
    max_coverage: Annotated[Optional[float], typer.Option(
        "--max-coverage", help="Fail if any frame has more than this share of pixels with alpha > 0.5.",
        show_default=False)] = None,
) -> None:
    """Report container, codec, pixel format, size, frames, fps, colour tags and alpha statistics.

    Exit 0 when every check passes, 1 when one fails (one line per failure on stderr), 2 on bad options.
    """
    from rich.markup import escape

    from rgbacli import console
    from rgbacli.media.inspect import InspectThresholds, check_report, inspect_file

    th = InspectThresholds(require_alpha, min_coverage, max_coverage)
    th.validate()
    reports, failures = [], []
    with console.progress() as bar:
        for path in files:
            task = bar.add_task(escape(f"inspect {path}"), total=None)
            rep = inspect_file(path, on_frame=lambda done, total: bar.update(task, completed=done, total=total))
            bar.remove_task(task)
            reports.append(rep)
            failures += check_report(rep, th)
    if as_json:
        console.print_json({"files": [r.to_dict() for r in reports], "failures": failures, "passed": not failures})
    else:
        for rep in reports:
            console.err.print(rep.path, markup=False, soft_wrap=True)  # a plain line: never wrapped or parsed
            console.err.print(_table(rep))
    for line in failures:
        console.err.print(f"rgba: check failed: {line}", soft_wrap=True, markup=False)
    if failures:
        raise typer.Exit(1)


def _table(rep):
    from rich.table import Table

    def share(x: float) -> str:
        return f"{x:.4f}"

    t = Table(show_header=False, box=None, padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    codec = rep.codec or "?"
    if rep.profile:
        codec += f" ({rep.profile})"
    t.add_row("container", f"{rep.format} ({rep.container})")
    t.add_row("codec", f"{codec}, decoded by {rep.decoder}")
    t.add_row("pixel format", rep.pix_fmt or "?")
    t.add_row("size", f"{rep.width}x{rep.height}")
    declared = f" (header: {rep.declared_frames})" if rep.declared_frames not in (None, rep.frames) else ""
    t.add_row("frames", f"{rep.frames}{declared}, {rep.fps:g} fps, {rep.duration:.3f} s")
    t.add_row("colour tags", ", ".join(f"{k} {v or '-'}" for k, v in rep.color.items()))
    plane = f"yes ({rep.alpha_source})" if rep.alpha_plane else "no"
    used = f"yes (alpha {rep.alpha_min}-{rep.alpha_max})" if rep.alpha_used else "no (every pixel 255)"
    t.add_row("alpha plane", plane)
    t.add_row("alpha used", used)
    t.add_row("coverage (a > 0.5)", f"{share(rep.coverage)} overall; per frame {share(rep.coverage_min)} "
              f"(frame {rep.coverage_min_frame}) to {share(rep.coverage_max)} (frame {rep.coverage_max_frame})")
    t.add_row("semi-transparent", share(rep.semi_transparent))
    pm = rep.premultiplied
    t.add_row("premultiplied?", f"{pm['verdict']}: {pm['reason']}")
    return t
