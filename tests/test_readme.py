"""Every line of the README's quick start runs as written on a fresh checkout (the embedded tiny
model, no weights installed), in an empty folder, one `rgba` process-equivalent per command
(in process, through `rgbacli.cli.main`, so torch is imported once)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from rgbacli.cli import main
from rgbacli.media import read_clip

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_lines() -> list[str]:
    text = README.read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S)
    assert block, "README has no quick-start block"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def run_line(line: str, capsys) -> list[tuple[str, int, str, str]]:
    """Run one README line: `rgba …` commands in process (split on &&), anything else in bash."""
    results = []
    for part in line.split(" && "):
        words = shlex.split(part, comments=True)
        if not words:
            continue
        if words[0] != "rgba":
            r = subprocess.run(["bash", "-c", part], capture_output=True, text=True)
            results.append((part, r.returncode, r.stdout, r.stderr))
            continue
        with pytest.raises(SystemExit) as e:
            main(words[1:])
        out, err = capsys.readouterr()
        code = e.value.code if isinstance(e.value.code, int) else (0 if e.value.code is None else 1)
        results.append((part, code, out, err))
        if code:
            break
    return results


def test_every_quick_start_line_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RGBA_WEIGHTS", "")  # a fresh machine: no real weights → the tiny preset
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    lines = quick_start_lines()
    assert len(lines) >= 8
    ran = []
    for line in lines:
        for part, code, out, err in run_line(line, capsys):
            assert code == 0, f"{part!r} exited {code}: {err}"
            ran.append(part)
    assert any("--prompts" in p for p in ran) and any(p.startswith("rgba story") for p in ran)
    # what the lines promise is there
    for name in ["jelly.mov", "jelly.preview.mp4", "jelly.sheet.png", "orb.webm", "shot.mp4", "jelly.safetensors",
                 "back.0001.png", "out/manifest.json", "milo/story.json", "milo.safetensors", "plate.1001.exr",
                 "plate.matte.1001.exr"]:
        assert (tmp_path / name).exists(), name
    assert read_clip(tmp_path / "shot.mp4").size == (320, 180)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["ok"] == len(manifest["items"]) >= 2
