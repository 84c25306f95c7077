"""Write RGBA clips; the format follows the output path (see formats.py).

All outputs are atomic: frames go to a temporary sibling that is renamed into place only when
the whole clip is written, and an existing output is refused without `force`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import Image

from rgbacli import console
from rgbacli.errors import MediaError, OutputExistsError, RgbaError, UsageError
from rgbacli.fsutil import atomic_output, check_output
from rgbacli.media import formats
from rgbacli.media.clip import Clip, div255, premultiply, to_uint8
from rgbacli.media.read import sorted_pattern_files

# H.264 settings for .mp4 outputs and previews (the benchmark gives ffmpeg the same ones).
H264_OPTIONS = {"preset": "medium", "crf": "18"}
VP9_OPTIONS = {"crf": "20", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
PRORES_OPTIONS = {"profile": "4444", "vendor": "apl0"}

# name → (codec, pix_fmt, codec options, container options)
_AV_CODECS = {
    "mov": ("prores_ks", "yuva444p10le", PRORES_OPTIONS, {}),
    "webm": ("libvpx-vp9", "yuva420p", VP9_OPTIONS, {}),
    "mkv": ("ffv1", "bgra", {"level": "3", "slicecrc": "1"}, {}),
    "apng": ("apng", "rgba", {}, {"plays": "0"}),
    "mp4": ("libx264", "yuv420p", H264_OPTIONS, {"movflags": "+faststart"}),
}
_OPAQUE = ("mp4", "jpg")


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def flatten_over_black(frame: np.ndarray) -> np.ndarray:
    """RGB of a straight-alpha uint8 frame composited over black (what opaque formats store)."""
    return div255(frame[..., :3].astype(np.uint16) * frame[..., 3:4]).astype(np.uint8)


class _AVWriter:
    """Encode frames with PyAV; the stream is created at the first frame (size known then)."""

    def __init__(self, tmp: Path, fmt: str, fps: float, threads: int):
        self.codec, self.pix_fmt, self.options, copts = _AV_CODECS[fmt]
        self.fmt, self.rate, self.threads = fmt, _rate(fps), threads
        cfmt = "apng" if fmt == "apng" else None
        self.container = av.open(str(tmp), "w", format=cfmt, options=copts)
        self.stream = None
        self.index = 0

    def _start(self, h: int, w: int) -> None:
        if self.codec == "libx264" and (w % 2 or h % 2):
            w, h = w + w % 2, h + h % 2  # x264 4:2:0 needs even sizes: repeat the edge column/row
        s = self.container.add_stream(self.codec, rate=self.rate, options=dict(self.options))
        s.width, s.height, s.pix_fmt = w, h, self.pix_fmt
        s.codec_context.time_base = 1 / self.rate
        s.thread_type = "AUTO" if self.codec not in ("apng",) else "SLICE"
        s.codec_context.thread_count = self.threads
        self.stream = s

    def write(self, frame: np.ndarray) -> None:
        if self.stream is None:
            self._start(*frame.shape[:2])
        s = self.stream
        if frame.shape[0] != s.height or frame.shape[1] != s.width:
            pad = ((0, s.height - frame.shape[0]), (0, s.width - frame.shape[1]), (0, 0))
            if min(pad[0][1], pad[1][1]) < 0 or max(pad[0][1], pad[1][1]) > 1:
                raise MediaError(f"frame {self.index} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"expected {s.width}x{s.height}")
            frame = np.pad(frame, pad, mode="edge")
        # Opaque codecs get RGBA too: swscale ignores alpha when converting to yuv420p.
        vf = av.VideoFrame.from_ndarray(frame, format="rgba")
        vf.pts = self.index
        vf.time_base = 1 / self.rate
        self.index += 1
        self.container.mux(s.encode(vf))

    def finish(self) -> None:
        if self.stream is not None:
            self.container.mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass


class _PillowWriter:
    """Collect frames and save them with Pillow at the end (WebP, GIF, single PNG/JPEG)."""

    def __init__(self, tmp: Path, fmt: str, fps: float):
        self.tmp, self.fmt, self.fps = tmp, fmt, fps
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        if self.fmt in ("png", "jpg") and self.frames:
            raise UsageError(f"a .{self.fmt} output holds one image; use name.%04d.png, .apng or .webp for clips")
        self.frames.append(frame)

    def _durations(self, unit: int) -> list[int]:
        """Per-frame durations (ms, multiples of `unit`) whose running sum tracks i·1000/fps."""
        ends = [round((i + 1) * 1000.0 / self.fps / unit) * unit for i in range(len(self.frames))]
        return [max(unit, e - s) for s, e in zip([0] + ends[:-1], ends)]

    def finish(self) -> None:
        if not self.frames:
            return
        f = self.frames
        if self.fmt == "png":
            Image.fromarray(f[0], "RGBA").save(self.tmp, format="PNG")
        elif self.fmt == "jpg":
            Image.fromarray(np.ascontiguousarray(f[0][..., :3]), "RGB").save(self.tmp, format="JPEG", quality=95)
        elif self.fmt == "webp":
            ims = [Image.fromarray(x, "RGBA") for x in f]
            extra = dict(save_all=True, append_images=ims[1:], duration=self._durations(1), loop=0) if len(ims) > 1 else {}
            ims[0].save(self.tmp, format="WEBP", lossless=True, exact=True, quality=100, method=4, **extra)
        elif self.fmt == "gif":
            ims = [_gif_frame(x) for x in f]
            ims[0].save(self.tmp, format="GIF", save_all=True, append_images=ims[1:], duration=self._durations(10),
                        loop=0, disposal=2, transparency=255, optimize=False)

    def abort(self) -> None:
        self.frames.clear()


def _gif_frame(frame: np.ndarray) -> Image.Image:
    """Quantise RGB to 255 colours; alpha < 128 becomes palette index 255 (GIF's 1-bit alpha)."""
    pal_im = Image.fromarray(np.ascontiguousarray(frame[..., :3]), "RGB").quantize(
        colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    idx = np.array(pal_im)
    idx[frame[..., 3] < 128] = 255
    out = Image.fromarray(idx, "P")
    palette = pal_im.getpalette()[: 255 * 3]
    out.putpalette(palette + [0] * (768 - len(palette)))
    return out


class _SequenceWriter:
    """PNG frames `name.0001.png …` into a private temp dir; finish() moves them into place."""

    def __init__(self, tmpdir: Path, name_pattern: str):
        self.tmpdir, self.name_pattern = tmpdir, name_pattern
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        self.count += 1
        Image.fromarray(frame, "RGBA").save(self.tmpdir / (self.name_pattern % self.count), format="PNG",
                                             compress_level=4)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class FrameWriter:
    """What open_writer yields: `write(frame)` takes (H, W, 4) uint8 or float straight alpha."""

    def __init__(self, impl, path: Path, fmt: formats.Format, premultiplied: bool):
        self._impl, self.path, self.format, self.premultiplied = impl, path, fmt, premultiplied
        self.frames_written = 0
        self._warned = False

    def write(self, frame: np.ndarray) -> None:
        frame = to_uint8(np.asarray(frame))
        if frame.ndim != 3 or frame.shape[-1] != 4:
            raise ValueError(f"frames must be (H, W, 4), got {frame.shape}")
        if self.format.name in _OPAQUE:
            if (frame[..., 3] < 255).any():
                if not self._warned:
                    console.warn(f"{self.path}: {self.format.description} has no alpha; "
                                 "transparent pixels are flattened over black")
                    self._warned = True
                frame = np.concatenate([flatten_over_black(frame), frame[..., 3:]], axis=-1)
        else:
            if self.format.name == "gif" and not self._warned and ((frame[..., 3] > 0) & (frame[..., 3] < 255)).any():
                console.warn(f"{self.path}: GIF alpha is 1-bit; alpha is thresholded at 50%")
                self._warned = True
            if self.premultiplied:
                frame = premultiply(frame)
        self._impl.write(np.ascontiguousarray(frame))
        self.frames_written += 1


def check_writable(path: str | os.PathLike, force: bool = False, n_frames: int | None = None) -> formats.Format:
    """Fail early (before any work) on a bad output: unknown format, exists, missing dir, T>1 to an image."""
    p = Path(path)
    fmt = formats.detect(p, for_write=True)
    if n_frames is not None and n_frames > 1 and fmt.name in ("png", "jpg"):
        raise UsageError(f"{p}: a .{fmt.name} output holds one image but the clip has {n_frames} frames; "
                         f"use {p.with_suffix('')}.%04d.png, .apng or .webp")
    if fmt.name == "png-seq" and formats.is_pattern(p):
        check_output(p.parent / "x", force=True)  # parent exists and is writable
        existing = sorted_pattern_files(p)
        if existing and not force:
            raise OutputExistsError(f"{existing[0]} already exists (pass --force to overwrite the sequence)")
    else:
        check_output(p, force)
    return fmt


@contextmanager
def open_writer(path: str | os.PathLike, *, fps: float, force: bool = False, premultiplied: bool = False,
                threads: int = 0) -> Iterator[FrameWriter]:
    """Stream frames to `path`; the output appears only if the block finishes without error."""
    p = Path(path)
    fmt = check_writable(p, force)
    if not fps > 0:
        raise UsageError(f"fps must be positive, got {fps}")
    if fmt.name == "png-seq" and formats.is_pattern(p):
        with _sequence_output(p, force) as tmpdir:
            w = FrameWriter(_SequenceWriter(tmpdir, p.name), p, fmt, premultiplied)
            yield w
            _require_frames(w, p)
        return
    if fmt.name == "png-seq":
        with atomic_output(p, force, directory=True) as tmpdir:
            w = FrameWriter(_SequenceWriter(tmpdir, formats.SEQUENCE_DIR_PATTERN), p, fmt, premultiplied)
            yield w
            _require_frames(w, p)
        return
    with atomic_output(p, force) as tmp:
        try:
            impl = _AVWriter(tmp, fmt.name, fps, threads) if fmt.name in _AV_CODECS else _PillowWriter(tmp, fmt.name, fps)
        except (av.FFmpegError, OSError) as e:
            raise MediaError(f"{p}: cannot open for writing ({e})") from None
        w = FrameWriter(impl, p, fmt, premultiplied)
        try:
            yield w
            _require_frames(w, p)
            impl.finish()
        except (av.FFmpegError, OSError) as e:
            impl.abort()
            raise MediaError(f"{p}: writing failed ({e})") from None
        except BaseException:
            impl.abort()
            raise


def _require_frames(w: FrameWriter, p: Path) -> None:
    if w.frames_written == 0:
        raise MediaError(f"{p}: nothing to write (zero frames)")


@contextmanager
def _sequence_output(pattern: Path, force: bool) -> Iterator[Path]:
    """A temp dir beside the frames; on success its files replace the sequence, all or nothing.

    With `force`, frames of the old sequence numbered past the new end are removed, so the
    pattern afterwards matches exactly the new clip.
    """
    parent = pattern.parent if str(pattern.parent) else Path(".")
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{pattern.name.split('%')[0]}tmp-", dir=parent))
    try:
        yield tmpdir
        new = sorted(os.listdir(tmpdir))
        old = sorted_pattern_files(pattern)
        if old and not force:
            raise OutputExistsError(f"{old[0]} already exists (pass --force to overwrite the sequence)")
        for name in new:
            if (parent / name).is_dir():
                raise RgbaError(f"{parent / name} is a directory; cannot overwrite it with a frame")
        for name in new:
            os.replace(tmpdir / name, parent / name)
        keep = set(new)
        for stale in old:
            if stale.name not in keep:
                stale.unlink()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_clip(clip: Clip, path: str | os.PathLike, *, force: bool = False, premultiplied: bool = False,
               threads: int = 0) -> Path:
    """Write a whole clip (format from the path) at clip.fps; returns the output path.

    `premultiplied=True` stores associated alpha (colour multiplied by alpha) instead of straight.
    """
    if clip.n_frames == 0:
        raise MediaError(f"{path}: nothing to write (zero frames)")
    check_writable(path, force, clip.n_frames)
    with open_writer(path, fps=clip.fps, force=force, premultiplied=premultiplied, threads=threads) as w:
        for frame in clip.frames:
            w.write(frame)
    return Path(path)
