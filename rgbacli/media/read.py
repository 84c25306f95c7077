"""Read RGBA clips: PyAV for video containers, Pillow for images/WebP/GIF, PNG sequences.

Every reader yields straight-alpha uint8 `(H, W, 4)` frames; sources without alpha get an
opaque alpha channel and `had_alpha=False`. Failures are MediaError with one line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from rgbacli.errors import MediaError
from rgbacli.media import formats
from rgbacli.media.clip import DEFAULT_FPS, Clip, unpremultiply

# Pixel formats that carry alpha have an "a" component (yuva…, rgba, bgra, gbrap, ya8, …).
_ALPHA_PIX = re.compile(r"yuva|rgba|bgra|argb|abgr|gbrap|^ya\d")

Image.MAX_IMAGE_PIXELS = None  # our inputs are local frames, not untrusted web uploads


@dataclass
class FrameSource:
    """A lazily decoded clip: metadata now, frames when iterated (each iteration re-decodes)."""

    path: Path
    fps: float
    width: int
    height: int
    had_alpha: bool
    n_frames: int | None  # as declared by the header (duration × rate for some); None if unknown
    _frames: Callable[[], Iterator[np.ndarray]] = field(repr=False)
    premultiplied: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self._frames():
            if frame.shape[:2] != (self.height, self.width):
                raise MediaError(
                    f"{self.path}: frame size changes mid-stream "
                    f"({frame.shape[1]}x{frame.shape[0]} after {self.width}x{self.height})"
                )
            yield unpremultiply(frame) if self.premultiplied else frame


def open_frames(path: str | os.PathLike, premultiplied: bool = False, fps: float | None = None,
                threads: int = 0) -> FrameSource:
    """Open a clip for streaming. `fps` sets the rate of sequences/images (default 24) and
    overrides the stored rate of videos (a reinterpretation, not a resample)."""
    p = Path(path)
    if fps is not None and not fps > 0:
        raise MediaError(f"fps must be positive, got {fps}")
    if formats.is_pattern(p):
        formats.detect(p)
        src = _open_sequence(p, sorted_pattern_files(p), fps)
    elif not p.exists():
        raise MediaError(f"{p}: no such file or directory")
    elif p.is_dir():
        src = _open_sequence(p, sorted_dir_pngs(p), fps)
    else:
        fmt = formats.detect(p)
        if fmt.name in ("png", "webp", "gif", "jpg"):
            src = _open_pillow(p, fps)
        else:
            src = _open_av(p, fps, threads)
    src.premultiplied = premultiplied
    return src


def read_clip(path: str | os.PathLike, premultiplied: bool = False, fps: float | None = None) -> Clip:
    """Decode a whole clip into memory as uint8 straight alpha (see open_frames for `fps`).

    `premultiplied=True` says the source stores associated alpha; it is converted to straight.
    """
    src = open_frames(path, premultiplied=premultiplied, fps=fps)
    frames = list(src)
    if not frames:
        raise MediaError(f"{src.path}: contains no frames")
    return Clip(np.stack(frames), fps=src.fps, had_alpha=src.had_alpha)


# --- PNG sequences ------------------------------------------------------------------------


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def sorted_pattern_files(pattern: Path) -> list[Path]:
    """Existing files matching a `name.%04d.png` pattern, in frame-number order."""
    parent = pattern.parent if str(pattern.parent) else Path(".")
    rx = formats.pattern_regex(pattern)
    if not parent.is_dir():
        return []
    hits = [(int(m.group(1)), parent / n) for n in os.listdir(parent) if (m := rx.match(n))]
    return [p for _, p in sorted(hits)]


def sorted_dir_pngs(directory: Path) -> list[Path]:
    """The .png files of a directory in natural (numeric-aware) order."""
    names = [n for n in os.listdir(directory) if n.lower().endswith(".png") and not n.startswith(".")]
    return [directory / n for n in sorted(names, key=_natural_key)]


def _load_png(path: Path) -> tuple[np.ndarray, bool]:
    try:
        with Image.open(path) as im:
            alpha = _pil_has_alpha(im)
            return np.asarray(im.convert("RGBA")), alpha
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{path}: unreadable or corrupt image ({_short(e)})") from None


def _open_sequence(where: Path, files: list[Path], fps: float | None) -> FrameSource:
    if not files:
        raise MediaError(f"{where}: no PNG frames found")
    first, had_alpha = _load_png(files[0])

    def frames() -> Iterator[np.ndarray]:
        yield first
        for f in files[1:]:
            yield _load_png(f)[0]

    h, w = first.shape[:2]
    return FrameSource(where, fps or DEFAULT_FPS, w, h, had_alpha, len(files), frames)


# --- Pillow: single images, animated WebP / GIF -------------------------------------------


def _pil_has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def snap_fps(n_frames: int, total_ms: float, unit_ms: int = 1) -> float:
    """The frame rate behind `n_frames` lasting `total_ms`, undoing millisecond rounding.

    Writers spread rounding so the total is round(n·1000/fps); an integer or NTSC rate that
    reproduces the stored total exactly is taken, else the plain ratio.
    """
    raw = n_frames * 1000.0 / total_ms
    for cand in (round(raw), round(raw * 1.001) / 1.001):
        if cand > 0 and round(n_frames * 1000.0 / cand / unit_ms) * unit_ms == round(total_ms):
            return float(cand)
    return raw


def _open_pillow(path: Path, fps: float | None) -> FrameSource:
    try:
        im = Image.open(path)
        n = getattr(im, "n_frames", 1)
        had_alpha = _pil_has_alpha(im)
        durations = []
        if n > 1 and fps is None:
            for i in range(n):
                im.seek(i)
                im.load()
                durations.append(im.info.get("duration") or 0)
            im.seek(0)
        w, h = im.size
        im.close()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
        raise MediaError(f"{path}: unreadable or corrupt image ({_short(e)})") from None
    if fps is None:
        total = sum(durations)
        fps = snap_fps(n, total, 10 if path.suffix.lower() == ".gif" else 1) if total > 0 else DEFAULT_FPS

    def frames() -> Iterator[np.ndarray]:
        try:
            with Image.open(path) as im:
                for i in range(n):
                    im.seek(i)
                    yield np.asarray(im.convert("RGBA"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
            raise MediaError(f"{path}: unreadable, corrupt or truncated image ({_short(e)})") from None

    return FrameSource(path, float(fps), w, h, had_alpha, n, frames)


# --- PyAV: video containers ---------------------------------------------------------------


def _short(e: BaseException) -> str:
    """The first line of an exception's message (FFmpeg's own text without errno noise)."""
    text = (getattr(e, "strerror", None) if isinstance(e, av.FFmpegError) else None) or str(e)
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return text[:200]


def _stream_rate(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(Fraction(rate))
    return None


def _declared_frames(container, stream, rate: float | None) -> int | None:
    """Frame count the header declares: APNG's acTL chunk, else container duration × rate."""
    if stream.codec_context.name == "apng":
        extra = stream.codec_context.extradata or b""
        i = extra.find(b"acTL")
        if i >= 0 and len(extra) >= i + 8:
            return int.from_bytes(extra[i + 4 : i + 8], "big") or None
    if container.duration and rate:
        return round(container.duration / 1_000_000 * rate)
    return None


def _open_av(path: Path, fps: float | None, threads: int) -> FrameSource:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: unreadable or corrupt media ({_short(e)})") from None
    try:
        if not container.streams.video:
            raise MediaError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        w, h = ctx.width, ctx.height
        if not w or not h:
            raise MediaError(f"{path}: video stream has no frame size (corrupt header?)")
        codec = ctx.name
        vpx_alpha = codec in ("vp8", "vp9") and str(stream.metadata.get("alpha_mode", "")).strip() == "1"
        pix = ctx.format.name if ctx.format is not None else ""
        had_alpha = vpx_alpha or bool(_ALPHA_PIX.search(pix))
        rate = fps or _stream_rate(stream) or DEFAULT_FPS
        n = stream.frames or None
        expected = n or _declared_frames(container, stream, _stream_rate(stream))
    finally:
        container.close()

    def frames() -> Iterator[np.ndarray]:
        # FFmpeg's native vp8/vp9 decoders drop the alpha plane carried in Matroska
        # BlockAdditional side data; libvpx decodes it, so feed it the demuxed packets.
        count = 0
        try:
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                if vpx_alpha:
                    dec = av.CodecContext.create("libvpx-vp9" if codec == "vp9" else "libvpx", "r")
                    dec.thread_count = threads
                    decoded = (f for pkt in c.demux(s) for f in dec.decode(pkt if pkt.size else None))
                else:
                    s.thread_type = "AUTO"
                    s.codec_context.thread_count = threads
                    decoded = c.decode(s)
                for frame in decoded:
                    count += 1
                    yield frame.to_ndarray(format="rgba")
        except av.FFmpegError as e:
            raise MediaError(f"{path}: corrupt or truncated media ({_short(e)})") from None
        # Demuxers stop quietly at a cut; compare with what the header promised.
        if expected and count < expected - max(1, expected // 50):
            raise MediaError(f"{path}: truncated: decoded {count} of {expected} frames")

    return FrameSource(path, float(rate), w, h, had_alpha, n or expected, frames)
