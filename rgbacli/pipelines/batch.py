"""Batch generation for shell pipelines and CI: prompt files, output patterns, manifest, resume.

A prompt file holds one prompt per line, or JSON objects (JSONL) with `prompt` and optional
`seed`, `frames`, `size` ("WxH"), `output`. Each item's output name comes from the `-o`
pattern (`{index}`, `{slug}`, `{seed}`, e.g. `out/{index:03d}-{slug}.mov`). A bad line fails
only its item; the manifest records params, seed, timings, output and status per item.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rgbacli.errors import UsageError


@dataclass
class BatchItem:
    """One line of the prompt file, parsed; `error` is set when the line itself is bad."""

    index: int
    line: int
    prompt: str = ""
    overrides: dict = field(default_factory=dict)
    output: str | None = None
    error: str | None = None


def slugify(text: str, limit: int = 40) -> str:
    """Lower-case ASCII words joined by '-', for deterministic file names."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (slug[:limit].rstrip("-")) or "clip"


def parse_size(size: str) -> tuple[int, int]:
    """'832x480' → (832, 480); anything else is a usage error naming the value."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(size))
    if not m:
        raise UsageError(f"bad size '{size}' (expected WxH, e.g. 832x480)")
    return int(m.group(1)), int(m.group(2))


_ITEM_KEYS = {"prompt", "seed", "frames", "size", "output", "negative", "steps", "guidance", "shift", "fps"}


def parse_prompt_lines(text: str) -> list[BatchItem]:
    """Parse a prompt file: blank lines and '#' comments are skipped; indices count items."""
    items: list[BatchItem] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        item = BatchItem(index=len(items), line=lineno)
        items.append(item)
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                item.error = f"line {lineno}: invalid JSON ({e.msg})"
                continue
            unknown = sorted(set(obj) - _ITEM_KEYS)
            if unknown:
                item.error = f"line {lineno}: unknown key '{unknown[0]}'"
                continue
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                item.error = f"line {lineno}: missing or empty 'prompt'"
                continue
            item.prompt = prompt.strip()
            try:
                for key in ("seed", "frames", "steps"):
                    if key in obj:
                        item.overrides[key] = int(obj[key])
                for key in ("guidance", "shift", "fps"):
                    if key in obj:
                        item.overrides[key] = float(obj[key])
                if "negative" in obj:
                    item.overrides["negative"] = str(obj["negative"])
                if "size" in obj:
                    item.overrides["width"], item.overrides["height"] = parse_size(obj["size"])
            except (TypeError, ValueError, UsageError) as e:
                item.error = f"line {lineno}: {e}"
                continue
            if "output" in obj:
                item.output = str(obj["output"])
        else:
            item.prompt = line
    return items


def output_for(pattern: str, item: BatchItem, seed: int) -> str:
    """Expand the -o pattern for one item ({index}, {slug}, {seed}); explicit outputs win."""
    if item.output:
        return item.output
    try:
        return pattern.format(index=item.index, slug=slugify(item.prompt), seed=seed)
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"bad output pattern '{pattern}': {e} (use {{index}}, {{slug}}, {{seed}})") from None


def load_manifest(path: Path) -> dict:
    """The previous manifest (for --resume); a missing or unreadable one counts as empty."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def is_done(previous: dict, output: str, params: dict) -> bool:
    """True when the manifest says this exact item finished and its output is still there."""
    for entry in previous.get("items", []):
        if entry.get("output") == output and entry.get("status") == "ok" and entry.get("params") == params:
            return Path(output).exists()
    return False
