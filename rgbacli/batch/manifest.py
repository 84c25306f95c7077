"""The batch manifest: one JSON document per batch, written only by the driver, atomically.

The driver rewrites it when the batch starts, when each item starts and after each item ends,
so that an interrupted batch (Ctrl-C, SIGTERM, a killed job) leaves a manifest that says exactly
which items finished. Item statuses: pending, running, ok, failed, interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

from rgbacli.fsutil import atomic_output

# Statuses of items a previous run started but did not finish: their output, if any, is ours to replace.
UNFINISHED = ("running", "interrupted")


def load_manifest(path: Path) -> dict:
    """The previous manifest (for --resume); a missing or unreadable one counts as empty."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) and isinstance(doc.get("items", []), list) else {}


def entries_by_index(previous: dict) -> dict[int, dict]:
    """The previous manifest's items by their index."""
    return {e["index"]: e for e in previous.get("items", []) if isinstance(e, dict) and isinstance(e.get("index"), int)}


def is_done(previous: dict, output: str, params: dict) -> bool:
    """True when the manifest says this exact item finished and its output is still there."""
    for entry in previous.get("items", []):
        if entry.get("output") == output and entry.get("status") == "ok" and entry.get("params") == params:
            return Path(output).exists()
    return False


def differences(old: dict, new: dict) -> str:
    """'steps 16 → 3, seed 0 → 1' for the keys whose values differ."""
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def write_manifest(path: Path, doc: dict) -> None:
    """Replace the manifest in one rename (a reader never sees half a file; a stop signal during
    the write removes the temporary file and leaves the previous manifest whole)."""
    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str))
