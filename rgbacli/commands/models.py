"""`rgba models`: list presets and which of their weight files are present on this machine."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from rgbacli.commands._options import JsonOpt, WeightsDirOpt
from rgbacli.console import err, print_json
from rgbacli.presets import load_preset, resolve_files, shipped_presets


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
        report.append({
            "preset": p.name, "description": p.description, "backend": p.backend, "ready": ready,
            "source": str(p.source),
            "files": [{"role": f.role, "file": f.path, "repo": f.repo, "optional": f.optional,
                       "found": str(f.found) if f.found else None, "note": f.note} for f in files],
        })
    if as_json:
        print_json({"presets": report})
        return
    for entry in report:
        state = "[green]ready[/green]" if entry["ready"] else "[red]missing files[/red]"
        table = Table(title=f"{entry['preset']} — {state}", caption=entry["description"], title_justify="left",
                      caption_justify="left")
        table.add_column("role")
        table.add_column("file")
        table.add_column("status")
        for f in entry["files"]:
            status = f"[green]found[/green] {f['found']}" if f["found"] else (
                "[yellow]absent (optional)[/yellow]" if f["optional"] else "[red]missing[/red]")
            if f["note"] and not f["found"]:
                status += f" — {f['note']}"
            table.add_row(f["role"], f["file"] + (f"  ({f['repo']})" if f["repo"] else ""), status)
        err.print(table)
