"""`rgba models`: list presets and which of their weight files are present on this machine."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from rgbacli.commands._options import JsonOpt, WeightsDirOpt
from rich.console import Console
from rich.markup import escape

from rgbacli.console import print_json
from rgbacli.presets import download_commands, load_preset, resolve_files, shipped_presets, weights_root


def models(
    preset: Annotated[Optional[list[str]], typer.Argument(help="Preset names or TOML paths (default: all shipped).")] = None,
    weights_dir: WeightsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List presets and, for each, which weight files are present or missing (searched offline)."""
    names = preset or sorted(shipped_presets())
    report = []
    for name in names:
        p = load_preset(name)
        files = resolve_files(p, weights_dir)
        ready = all(f.found is not None or f.optional for f in files)
        root = weights_root(weights_dir)
        missing = [f for f in files if f.found is None and not f.optional]
        report.append({
            "preset": p.name, "description": p.description, "backend": p.backend, "ready": ready,
            "source": str(p.source), "weights_root": None if p.embedded else str(root),
            "files": [{"role": f.role, "file": f.path, "repo": f.repo, "optional": f.optional,
                       "found": str(f.found) if f.found else None, "note": f.note,
                       "belongs_in": None if f.found or p.embedded else str(root / f.path)} for f in files],
            "download": download_commands(missing, weights_dir),
        })
    if as_json:
        print_json({"presets": report})
        return
    # On stdout (it is the command's output); long paths fold onto the next line instead of being
    # cut at the terminal's (or a pipe's 80-column) width.
    out = Console(highlight=False)
    for entry in report:
        state = "[green]ready[/green]" if entry["ready"] else "[red]missing files[/red]"
        table = Table(title=f"{entry['preset']} — {state}", caption=entry["description"], title_justify="left",
                      caption_justify="left")
        table.add_column("role", overflow="fold")
        table.add_column("file", overflow="fold")
        table.add_column("status", overflow="fold")
        for f in entry["files"]:
            status = f"[green]found[/green] {escape(f['found'])}" if f["found"] else (
                "[yellow]absent (optional)[/yellow]" if f["optional"] else
                f"[red]missing[/red] → {escape(f['belongs_in'] or '')}")
            if f["note"] and not f["found"]:
                status += f" — {escape(f['note'])}"
            table.add_row(escape(f["role"]), escape(f["file"] + (f"  ({f['repo']})" if f["repo"] else "")), status)
        out.print(table)
        if entry["download"]:
            out.print(f"to fetch the missing files into {entry['weights_root']} (searched via --weights-dir or "
                      "RGBA_WEIGHTS):", soft_wrap=True, markup=False)
            for line in entry["download"]:
                out.print(f"  {line}", soft_wrap=True, markup=False)
