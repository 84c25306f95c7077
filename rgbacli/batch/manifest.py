"""The batch manifest: one JSON document per batch, written only by the driver, atomically."""

from __future__ import annotations

import json
from pathlib import Path

from rgbacli.fsutil import atomic_output


def load_manifest(path: Path) -> dict:
    """The previous manifest (for --resume); a missing or unreadable one counts as empty."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def is_done(previous: dict, output: str, params: dict) -> bool:
    """True when the manifest says this exact item finished and its output is still there."""
    for entry in previous.get("items", []):
        if entry.get("output") == output and entry.get("status") == "ok" and entry.get("params") == params:
            return Path(output).exists()
    return False


def write_manifest(path: Path, doc: dict) -> None:
    """Replace the manifest in one rename (a reader never sees half a file)."""
    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str))
