"""Read RGBA clips: PyAV for video containers, Pillow for images/WebP/GIF, image sequences
(PNG, EXR, TIFF) through rgbacli/media/images.py.

Every reader yields straight-alpha `(H, W, 4)` frames, uint8 by default or float32 in [0, 1]
with `dtype="float32"` (16-bit and EXR sources keep their precision then); sources without
alpha get an opaque alpha channel and `had_alpha=False`. Failures are MediaError with one line.
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

from rgbacli.errors import MediaError, UsageError
from rgbacli.media import formats
from rgbacli.media.clip import DEFAULT_FPS, Clip, to_float, to_uint8, unpremultiply
from rgbacli.media.images import (ALPHA_PIX, KIND_BY_SUFFIX, decode_image, pil_has_alpha, png_bit_depth,
                                  short_error, uint16_to_uint8)

Image.MAX_IMAGE_PIXELS = None  # our inputs are local frames, not untrusted web uploads

DTYPES = ("uint8", "float32")


@dataclass
class FrameSource:
    """A lazily decoded clip: metadata now, frames when iterated (each iteration re-decodes).

    `bit_depth` is the source's bits per channel (8, 10, 12, 16; EXR half 16, float 32);
    `start_number` the first frame number of an image sequence (None for other inputs).
    """

    path: Path
    fps: float
    width: int
    height: int
    had_alpha: bool
    n_frames: int | None  # as declared by the header (duration × rate for some); None if unknown
    _frames: Callable[[], Iterator[np.ndarray]] = field(repr=False)
    premultiplied: bool = False
    dtype: str = "uint8"
    bit_depth: int = 8
    start_number: int | None = None
    straight_always: bool = False  # EXR: the reader already converted premultiplied → straight

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
            yield self._convert(frame)

    def _convert(self, f: np.ndarray) -> np.ndarray:
        """Native decoder output (uint8, uint16 or float32) → the requested dtype, straight alpha."""
        pre = self.premultiplied and not self.straight_always
        if self.dtype == "uint8":
            if f.dtype == np.uint8:
                return unpremultiply(f) if pre else f
            if f.dtype == np.uint16 and not pre:
                return uint16_to_uint8(f)
            f = to_float(f)
            return to_uint8(unpremultiply(f) if pre else f)
        f = to_float(f)
        return unpremultiply(f) if pre else f


def open_frames(path: str | os.PathLike, premultiplied: bool = False, fps: float | None = None,
                threads: int = 0, *, dtype: str = "uint8", linear: bool = True) -> FrameSource:
    """Open a clip for streaming. `fps` sets the rate of sequences/images (default 24) and
    overrides the stored rate of videos (a reinterpretation, not a resample).

    `dtype="float32"` yields float frames in [0, 1] at the source's precision (16-bit PNG/TIFF,
    EXR, 10/12-bit video); the default "uint8" rounds. `linear=False` reads EXR values as they
    are stored instead of converting linear light to sRGB. EXR is always read as premultiplied.
    """
    p = Path(path)
    if fps is not None and not fps > 0:
        raise MediaError(f"fps must be positive, got {fps}")
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    high = dtype != "uint8"
    if formats.is_pattern(p):
        formats.detect(p)
        numbered = pattern_frames(p)
        kind = KIND_BY_SUFFIX[p.suffix.lower()].upper()
        if not numbered:
            raise MediaError(f"{p}: no {kind} frames found")
        src = _open_images(p, [f for _, f in numbered], fps, high, linear, numbered[0][0])
    elif not p.exists():
        raise MediaError(f"{p}: no such file or directory")
    elif p.is_dir():
        files, first = sequence_in_dir(p)
        src = _open_images(p, files, fps, high, linear, first)
    else:
        fmt = formats.detect(p)
        if fmt.name in ("exr", "tiff") or (fmt.name == "png" and png_bit_depth(p) > 8):
            src = _open_images(p, [p], fps, high, linear, None)
        elif fmt.name in ("png", "webp", "gif", "jpg"):
            src = _open_pillow(p, fps)
        else:
            src = _open_av(p, fps, threads, high)
    src.premultiplied = premultiplied
    src.dtype = dtype
    return src


def read_clip(path: str | os.PathLike, premultiplied: bool = False, fps: float | None = None, *,
              dtype: str = "uint8", linear: bool = True) -> Clip:
    """Decode a whole clip into memory, straight alpha (see open_frames for `fps`, `dtype`, `linear`).

    `premultiplied=True` says the source stores associated alpha; it is converted to straight.
    """
    src = open_frames(path, premultiplied=premultiplied, fps=fps, dtype=dtype, linear=linear)
    frames = list(src)
    if not frames:
        raise MediaError(f"{src.path}: contains no frames")
    return Clip(np.stack(frames), fps=src.fps, had_alpha=src.had_alpha)


# --- image sequences ----------------------------------------------------------------------


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def pattern_frames(pattern: Path) -> list[tuple[int, Path]]:
    """(frame number, file) of existing files matching a `name.%04d.ext` pattern, in order."""
    parent = pattern.parent if str(pattern.parent) else Path(".")
    rx = formats.pattern_regex(pattern)
    if not parent.is_dir():
        return []
    return sorted((int(m.group(1)), parent / n) for n in os.listdir(parent) if (m := rx.match(n)))


def sorted_pattern_files(pattern: Path) -> list[Path]:
    """Existing files matching a `name.%04d.png` pattern, in frame-number order."""
    return [p for _, p in pattern_frames(pattern)]


# A frame of a numbered sequence: name, the last run of digits, the extension.
_NUMBERED = re.compile(r"^(?P<head>(?:.*\D)?)(?P<num>\d+)(?P<ext>\.[^.]+)$")
_FRAME_SUFFIXES = frozenset(KIND_BY_SUFFIX)
_MEDIA_SUFFIXES = _FRAME_SUFFIXES | {".jpg", ".jpeg", ".webp", ".gif", ".apng", ".mov", ".webm", ".mkv", ".mp4", ".m4v"}


def _names(paths: list[str], limit: int = 4) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _pattern_of(head: str, nums: list[str], ext: str) -> str:
    """The printf pattern of a sequence's names: zero-padded when every number has one width."""
    widths = {len(n) for n in nums}
    width = widths.pop() if len(widths) == 1 else 1
    return f"{head}{'%0' + str(width) + 'd' if width > 1 else '%d'}{ext}"


def sequence_in_dir(directory: Path) -> tuple[list[Path], int | None]:
    """The frames of the one numbered sequence in a folder (PNG, EXR or TIFF), in order, and
    its first frame number. Any other media file there, or a second sequence, is a MediaError
    naming them: a stray frame must never join a clip silently. Hidden and non-media files
    (captions, notes) are ignored."""
    names = [n for n in os.listdir(directory) if not n.startswith(".") and (directory / n).is_file()
             and Path(n).suffix.lower() in _MEDIA_SUFFIXES]
    groups: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    loose = []
    for n in names:
        m = _NUMBERED.match(n)
        if m and m.group("ext").lower() in _FRAME_SUFFIXES:
            groups.setdefault((m.group("head"), m.group("ext")), []).append((int(m.group("num")), m.group("num"), n))
        else:
            loose.append(n)
    if not groups:
        frames = [n for n in loose if Path(n).suffix.lower() in _FRAME_SUFFIXES]
        if len(frames) == 1 and len(loose) == 1:
            return [directory / frames[0]], None  # a folder holding one image
        if not loose:
            raise MediaError(f"{directory}: no PNG, EXR or TIFF frames found")
        raise MediaError(f"{directory}: holds no numbered frame sequence (name.0001.png …), only "
                         f"{_names(sorted(loose, key=_natural_key))}")
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    (head, ext), members = ranked[0]
    members.sort()
    pattern = _pattern_of(head, [num for _, num, _ in members], ext)
    if len(ranked) > 1 and len(ranked[1][1]) == len(members):
        pats = [_pattern_of(h, [num for _, num, _ in g], e) for (h, e), g in ranked]
        raise MediaError(f"{directory}: holds {len(ranked)} numbered sequences ({_names(pats)}); "
                         f"name one with a pattern such as {directory / pats[0]}")
    strays = sorted(loose + [n for _, g in ranked[1:] for _, _, n in g], key=_natural_key)
    if strays:
        raise MediaError(f"{directory}: files that are not frames of {pattern} ({len(members)} frames): "
                         f"{_names(strays)}; move them out or name the sequence as {directory / pattern}")
    return [directory / n for _, _, n in members], members[0][0]


def _open_images(where: Path, files: list[Path], fps: float | None, high: bool, linear: bool,
                 start_number: int | None) -> FrameSource:
    first = decode_image(files[0], high=high, linear=linear)

    def frames() -> Iterator[np.ndarray]:
        yield first.pixels
        for f in files[1:]:
            yield decode_image(f, high=high, linear=linear).pixels

    h, w = first.pixels.shape[:2]
    exr = files[0].suffix.lower() == ".exr"
    return FrameSource(where, fps or DEFAULT_FPS, w, h, first.had_alpha, len(files), frames,
                       bit_depth=first.bits, start_number=start_number, straight_always=exr)


# --- Pillow: single images, animated WebP / GIF -------------------------------------------


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
        had_alpha = pil_has_alpha(im)
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
        raise MediaError(f"{path}: unreadable or corrupt image ({short_error(e)})") from None
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
            raise MediaError(f"{path}: unreadable, corrupt or truncated image ({short_error(e)})") from None

    return FrameSource(path, float(fps), w, h, had_alpha, n, frames)


# --- PyAV: video containers ---------------------------------------------------------------


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


def _open_av(path: Path, fps: float | None, threads: int, high: bool = False) -> FrameSource:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: unreadable or corrupt media ({short_error(e)})") from None
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
        had_alpha = vpx_alpha or bool(ALPHA_PIX.search(pix))
        bits = max((c.bits for c in ctx.format.components), default=8) if ctx.format is not None else 8
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
                # Deeper sources (10/12-bit ProRes) keep 16 bits when float frames are wanted.
                # One conversion thread: FFmpeg 8's threaded swscale garbles rows of small
                # BT.709-tagged frames at random.
                out_fmt = "rgba64le" if high and bits > 8 else "rgba"
                for frame in decoded:
                    count += 1
                    yield frame.to_ndarray(format=out_fmt, threads=1)
        except av.FFmpegError as e:
            raise MediaError(f"{path}: corrupt or truncated media ({short_error(e)})") from None
        # Demuxers stop quietly at a cut; compare with what the header promised.
        if expected and count < expected - max(1, expected // 50):
            raise MediaError(f"{path}: truncated: decoded {count} of {expected} frames")

    return FrameSource(path, float(rate), w, h, had_alpha, n or expected, frames, bit_depth=bits)
