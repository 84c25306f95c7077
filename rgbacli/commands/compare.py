"""`rgba compare`: frame-by-frame alpha IoU/MAE and premultiplied PSNR/SSIM of two RGBA clips.

A plain function with Annotated Typer options; rgbacli/cli.py registers it. The figures come
from rgbacli.media.compare; this module only parses, calls and reports.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rgbacli.commands._options import ForceOpt, JsonOpt, PremultipliedOpt

_ALL = "alpha-iou,alpha-mae,psnr,ssim"


def compare(
    a: Annotated[str, typer.Argument(help="Reference clip (e.g. the golden render).", show_default=False)],
    b: Annotated[str, typer.Argument(help="Clip to check against A.", show_default=False)],
    metric: Annotated[str, typer.Option("--metric", help="Comma-separated figures to compute "
                                        "(a threshold adds its own).")] = _ALL,
    min_alpha_iou: Annotated[Optional[float], typer.Option(
        "--min-alpha-iou", help="Fail frames whose alpha IoU (masks alpha > 0.5) is below this.",
        show_default=False)] = None,
    max_alpha_mae: Annotated[Optional[float], typer.Option(
        "--max-alpha-mae", help="Fail frames whose mean |alpha difference| (0..1) is above this.",
        show_default=False)] = None,
    min_psnr: Annotated[Optional[float], typer.Option(
        "--min-psnr", help="Fail frames whose premultiplied-RGB PSNR (dB) is below this.", show_default=False)] = None,
    min_ssim: Annotated[Optional[float], typer.Option(
        "--min-ssim", help="Fail frames whose premultiplied-RGB SSIM is below this.", show_default=False)] = None,
    diff: Annotated[Optional[str], typer.Option(
        "--diff", help="Write where they differ (alpha left, colour right, x4): a .png shows the frame "
        "that differs most, a clip path (.mkv .mp4 name.%04d.png ...) every frame.", show_default=False)] = None,
    resize: Annotated[bool, typer.Option("--resize", help="Resize B to A's size instead of refusing "
                                         "different sizes.")] = False,
    premultiplied: PremultipliedOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare B with A frame by frame; colour is compared premultiplied (hidden colour under alpha 0 never counts).

    Exit 0 when every threshold holds, 1 when one fails (failing frames listed on stderr), 2 when the clips differ in frame count or size (without --resize) or an option is bad.
    """
    from rich.markup import escape

    from rgbacli import console
    from rgbacli.media.compare import CompareThresholds, compare_files, failure_lines, parse_metrics

    metrics = parse_metrics(metric)
    th = CompareThresholds(min_alpha_iou, max_alpha_mae, min_psnr, min_ssim)
    th.validate()
    with console.progress() as bar:
        task = bar.add_task("compare", total=None)
        res = compare_files(a, b, metrics=metrics, thresholds=th, resize=resize, diff=diff, force=force,
                            premultiplied=premultiplied,
                            on_frame=lambda done, total: bar.update(task, completed=done, total=total))
    if res.fps != res.b_fps:
        console.warn(escape(f"{a} is {res.fps:g} fps but {b} is {res.b_fps:g} fps; frames are compared in order"))
    if as_json:
        console.print_json(res.to_json())
    else:
        w, h = res.size
        resized = f", B resized from {res.b_size[0]}x{res.b_size[1]}" if res.resized else ""
        # the heading is a plain line, not the table's title, which would wrap at the table's width
        console.err.print(f"{res.b} vs {res.a}: {res.frames} frames {w}x{h}{resized}", markup=False, soft_wrap=True)
        console.err.print(_table(res))
        if res.diff:
            shown = f" (frame {res.diff_frame})" if res.diff_frame is not None else ""
            console.err.print(f"wrote {res.diff}{shown}", markup=False, soft_wrap=True)
    for line in failure_lines(res):
        console.err.print(f"rgba: check failed: {line}", soft_wrap=True, markup=False)
    if not res.passed:
        raise typer.Exit(1)


def _table(res):
    from rich.table import Table

    from rgbacli.media.compare import HIGHER_IS_BETTER, format_value

    t = Table()
    for col in ("metric", "mean", "worst", "worst frame", "threshold", "result"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    failed = {f["metric"] for f in res.failures}
    for m in res.metrics:
        s, limit = res.summary[m], res.thresholds.get(m)
        result = "-" if limit is None else ("[red]FAIL[/red]" if m in failed else "[green]ok[/green]")
        t.add_row(m, format_value(m, s["mean"]), format_value(m, s["worst"]), str(s["worst_frame"]),
                  f"{'≥' if HIGHER_IS_BETTER[m] else '≤'} {limit['value']:g}" if limit else "-", result)
    return t
