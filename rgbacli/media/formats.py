"""Which container/codec a path means: the output format is chosen from the path alone."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rgbacli.errors import UsageError

_PATTERN = re.compile(r"%0?(\d*)d")


@dataclass(frozen=True)
class Format:
    """One supported way of storing RGBA frames."""

    name: str  # short id used in code and messages
    description: str
    alpha: str  # "full", "1-bit" or "none"
    lossless: bool
    writable: bool = True


FORMATS: dict[str, Format] = {
    "png-seq": Format("png-seq", "PNG sequence (name.%04d.png or a directory), 8 or 16-bit", "full", True),
    "exr-seq": Format("exr-seq", "OpenEXR sequence (name.%04d.exr), half float, premultiplied", "full", True),
    "tiff-seq": Format("tiff-seq", "TIFF sequence (name.%04d.tif), 16 or 8-bit", "full", True),
    "png": Format("png", "single PNG image", "full", True),
    "exr": Format("exr", "single OpenEXR image", "full", True),
    "tiff": Format("tiff", "single TIFF image", "full", True),
    "mov": Format("mov", "QuickTime ProRes 4444 (prores_ks, yuva444p10le)", "full", False),
    "webm": Format("webm", "WebM VP9 (libvpx-vp9, yuva420p)", "full", False),
    "mkv": Format("mkv", "Matroska FFV1 RGBA", "full", True),
    "apng": Format("apng", "animated PNG", "full", True),
    "webp": Format("webp", "WebP (lossless, animated when T > 1)", "full", True),
    "gif": Format("gif", "animated GIF (256 colours)", "1-bit", False),
    "mp4": Format("mp4", "MP4 H.264 (yuv420p)", "none", False),
    "jpg": Format("jpg", "single JPEG image", "none", False),
}

_BY_SUFFIX = {
    ".png": "png",
    ".exr": "exr",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".mov": "mov",
    ".webm": "webm",
    ".mkv": "mkv",
    ".apng": "apng",
    ".webp": "webp",
    ".gif": "gif",
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".jpg": "jpg",
    ".jpeg": "jpg",
}

SEQUENCE_DIR_PATTERN = "frame.%04d.png"
# Frame patterns: the suffix picks the still-image format of every frame.
_SEQ_BY_SUFFIX = {".png": "png-seq", ".exr": "exr-seq", ".tif": "tiff-seq", ".tiff": "tiff-seq"}
# The still-image codec behind each image format (see images.py).
IMAGE_KIND = {"png-seq": "png", "png": "png", "exr-seq": "exr", "exr": "exr", "tiff-seq": "tiff", "tiff": "tiff"}


def is_pattern(path: str | os.PathLike) -> bool:
    """True for printf-style frame patterns such as `out/name.%04d.png`."""
    return bool(_PATTERN.search(Path(path).name))


def pattern_regex(path: str | os.PathLike) -> re.Pattern[str]:
    """A regex matching the file names a `name.%04d.png` pattern expands to (group 1: number)."""
    name = Path(path).name
    m = _PATTERN.search(name)
    assert m is not None
    digits = r"\d+" if not m.group(1) else rf"\d{{{int(m.group(1))},}}"
    return re.compile(re.escape(name[: m.start()]) + f"({digits})" + re.escape(name[m.end() :]) + r"\Z")


def expand_pattern(path: str | os.PathLike, index: int) -> Path:
    """The file name of frame number `index` for a pattern path."""
    p = Path(path)
    return p.with_name(p.name % index)


def is_sequence(path: str | os.PathLike) -> bool:
    """True for inputs that are image sequences (a frame pattern or a folder): they have no
    frame rate of their own, so an `fps` given for them is their rate."""
    return is_pattern(path) or Path(path).is_dir()


def matte_path(path: str | os.PathLike) -> Path:
    """Where the matte of an output goes by default: `shot.mov` → `shot.matte.mov`,
    `shot.%04d.exr` → `shot.matte.%04d.exr`, a folder `frames` → `frames.matte`."""
    p = Path(path)
    m = _PATTERN.search(p.name)
    if m:
        head, tail = p.name[: m.start()], p.name[m.start() :]
        sep = head[-1] if head and head[-1] in "._-" else "."
        base = head[:-1] if head and head[-1] in "._-" else head
        return p.with_name(f"{base}.matte{sep}{tail}" if base else f"matte{sep}{tail}")
    if p.suffix == "" or p.is_dir() or str(path).endswith(os.sep):
        return p.with_name(p.name + ".matte")
    return p.with_name(f"{p.stem}.matte{p.suffix}")


def detect(path: str | os.PathLike, *, for_write: bool = False) -> Format:
    """The Format a path stands for; a UsageError names the supported extensions otherwise."""
    p = Path(path)
    if is_pattern(p):
        key = _SEQ_BY_SUFFIX.get(p.suffix.lower())
        if key is None:
            raise UsageError(f"{p}: frame patterns must end in .png, .exr, .tif or .tiff (e.g. name.%04d.exr)")
        return FORMATS[key]
    if p.is_dir() or str(path).endswith(os.sep) or (for_write and p.suffix == "" and p.name != ""):
        return FORMATS["png-seq"]
    key = _BY_SUFFIX.get(p.suffix.lower())
    if key is None:
        known = ", ".join(sorted(set(_BY_SUFFIX)))
        what = "output" if for_write else "input"
        raise UsageError(f"{p}: unknown {what} extension {p.suffix or '(none)'!r} "
                         f"(known: {known}, name.%04d.png|exr|tif, a directory)")
    return FORMATS[key]
