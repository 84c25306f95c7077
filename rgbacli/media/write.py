"""Write RGBA clips; the format follows the output path (see formats.py).

All outputs are atomic: frames go to a temporary sibling that is renamed into place only when
the whole clip is written, and an existing output is refused without `force`. Files are
deterministic (the same frames give the same bytes: no timestamps, bit-exact muxing), and
the video files carry BT.709 colour tags. A write that fails (disk full, folder not writable)
is one MediaError naming the output and the reason, with nothing left behind.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter
from PIL import Image

from rgbacli import console
from rgbacli.errors import MediaError, OutputExistsError, RgbaError, UsageError
from rgbacli.fsutil import atomic_output, check_output, discard_temp, make_temp, reason, signals_deferred
from rgbacli.media import formats
from rgbacli.media.clip import Clip, div255, premultiply, to_float, to_uint8
from rgbacli.media.images import ImageCodec, resolve_depth
from rgbacli.media.read import pattern_frames

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

# Colour tags (FFmpeg enum values): BT.709 primaries and transfer everywhere; YUV formats use
# the BT.709 matrix at limited ("tv") range, as ProRes, VP9 and H.264 players expect; FFV1
# stores RGB, so its matrix is "gbr" (identity) at full ("pc") range.
BT709, MATRIX_RGB, RANGE_TV, RANGE_PC = 1, 0, 1, 2
COLOUR_TAGS = {  # format → (primaries, transfer, matrix, range)
    "mov": (BT709, BT709, BT709, RANGE_TV),
    "webm": (BT709, BT709, BT709, RANGE_TV),
    "mp4": (BT709, BT709, BT709, RANGE_TV),
    "mkv": (BT709, BT709, MATRIX_RGB, RANGE_PC),
}


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def flatten_over_black(frame: np.ndarray) -> np.ndarray:
    """RGB of a straight-alpha uint8 frame composited over black (what opaque formats store)."""
    return div255(frame[..., :3].astype(np.uint16) * frame[..., 3:4]).astype(np.uint8)


class _AVWriter:
    """Encode frames with PyAV; the stream is created at the first frame (size known then)."""

    def __init__(self, tmp: Path, fmt: str, fps: float, threads: int, label: Path):
        self.codec, self.pix_fmt, self.options, copts = _AV_CODECS[fmt]
        self.fmt, self.rate, self.threads, self.label = fmt, _rate(fps), threads, label
        cfmt = "apng" if fmt == "apng" else None
        # bitexact: no encoder/muxer version strings and no random Matroska segment UID.
        self.container = av.open(str(tmp), "w", format=cfmt, options={**copts, "fflags": "+bitexact"})
        self.stream = None
        self.index = 0
        self.size: tuple[int, int] | None = None
        self.tags = COLOUR_TAGS.get(fmt)
        self.yuv = self.tags is not None and self.tags[2] != MATRIX_RGB
        self.reformatter = VideoReformatter()

    def _start(self, h: int, w: int) -> None:
        if self.codec == "libx264" and (w % 2 or h % 2):
            # x264 4:2:0 needs even sizes: repeat the edge column/row, and say so once.
            W, H = w + w % 2, h + h % 2
            console.warn(f"{self.label}: H.264 4:2:0 needs an even size; {w}x{h} is written as {W}x{H} "
                         "(edge row/column repeated)")
            w, h = W, H
        s = self.container.add_stream(self.codec, rate=self.rate, options=dict(self.options))
        s.width, s.height, s.pix_fmt = w, h, self.pix_fmt
        cc = s.codec_context
        cc.time_base = 1 / self.rate
        cc.flags |= av.codec.context.Flags.bitexact
        if self.tags is not None:
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = self.tags
        s.thread_type = "AUTO" if self.codec not in ("apng",) else "SLICE"
        cc.thread_count = self.threads
        self.stream = s
        self.size = (w, h)

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
        # Conversions run on one thread: FFmpeg 8's threaded swscale fills whole rows of small
        # frames with garbage at random (seen at 24x16), which also broke determinism.
        if self.yuv:
            # Convert with the BT.709 matrix at limited range, matching the tags (swscale's
            # default would be BT.601); ProRes copies the frame's tags into its frame header.
            vf.color_primaries, vf.color_trc = self.tags[0], self.tags[1]
            vf = self.reformatter.reformat(vf, format=self.pix_fmt, src_colorspace=Colorspace.ITU709,
                                           dst_colorspace=Colorspace.ITU709, src_color_range=ColorRange.JPEG,
                                           dst_color_range=ColorRange.MPEG, threads=1)
        elif self.pix_fmt != "rgba":
            vf = self.reformatter.reformat(vf, format=self.pix_fmt, threads=1)
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


def _write_bytes(path: Path, data: bytes) -> None:
    """Every still image reaches the disk through here (one place where a full disk shows)."""
    with open(path, "wb") as f:
        f.write(data)


class _ImageWriter:
    """A single still image (.png, .tif, .exr): one frame, encoded by an ImageCodec."""

    def __init__(self, tmp: Path, codec: ImageCodec, ext: str):
        self.tmp, self.codec, self.ext = tmp, codec, ext
        self.done = False

    def write(self, frame: np.ndarray) -> None:
        if self.done:
            raise UsageError(f"a {self.ext} output holds one image; use name.%04d{self.ext}, .apng or .webp for clips")
        _write_bytes(self.tmp, self.codec.encode(frame))
        self.done = True

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _PillowWriter:
    """Collect frames and save them with Pillow at the end (WebP, GIF, single JPEG)."""

    def __init__(self, tmp: Path, fmt: str, fps: float):
        self.tmp, self.fmt, self.fps = tmp, fmt, fps
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        if self.fmt == "jpg" and self.frames:
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
        if self.fmt == "jpg":
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
    """Frames `name.1001.exr …` into a private temp dir; _sequence_output moves them into place."""

    def __init__(self, tmpdir: Path, name_pattern: str, start: int, codec: ImageCodec):
        self.tmpdir, self.name_pattern, self.codec = tmpdir, name_pattern, codec
        self.number = start

    def write(self, frame: np.ndarray) -> None:
        _write_bytes(self.tmpdir / (self.name_pattern % self.number), self.codec.encode(frame))
        self.number += 1

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def matte_frame(frame: np.ndarray) -> np.ndarray:
    """(H, W, 4) → the matte as an opaque grey frame of the same dtype: R = G = B = alpha."""
    out = np.empty_like(frame)
    out[..., :3] = frame[..., 3:4]
    out[..., 3] = 255 if frame.dtype == np.uint8 else (65535 if frame.dtype == np.uint16 else 1.0)
    return out


class FrameWriter:
    """What open_writer yields: `write(frame)` takes (H, W, 4) uint8, uint16 or float straight alpha.

    `size` is the (width, height) actually written (H.264 pads odd sizes), None before a frame.
    """

    def __init__(self, impl, path: Path, fmt: formats.Format, premultiplied: bool, *, depth: int = 8,
                 matte: bool = False):
        self._impl, self.path, self.format, self.premultiplied = impl, path, fmt, premultiplied
        self.depth, self.matte = depth, matte
        self.frames_written = 0
        self._warned = False
        self._size: tuple[int, int] | None = None

    @property
    def size(self) -> tuple[int, int] | None:
        return getattr(self._impl, "size", None) or self._size

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 4:
            raise ValueError(f"frames must be (H, W, 4), got {frame.shape}")
        if self.matte:
            frame = matte_frame(frame)
        if self.depth > 8:
            # 16-bit PNG/TIFF and EXR keep float precision; EXR premultiplies by itself.
            frame = to_float(frame)
            if self.premultiplied and not self.matte and formats.IMAGE_KIND.get(self.format.name) != "exr":
                frame = premultiply(frame)
        else:
            frame = self._eight_bit(to_uint8(frame) if frame.dtype != np.uint16 else to_uint8(to_float(frame)))
        if self._size is None:
            self._size = (frame.shape[1], frame.shape[0])
        try:
            self._impl.write(np.ascontiguousarray(frame))
        except (av.FFmpegError, OSError) as e:
            raise MediaError(f"{self.path}: writing failed ({reason(e)})") from None
        self.frames_written += 1

    def _eight_bit(self, frame: np.ndarray) -> np.ndarray:
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
            if self.premultiplied and not self.matte:
                frame = premultiply(frame)
        return frame


_SINGLE_IMAGES = ("png", "jpg", "exr", "tiff")


def check_writable(path: str | os.PathLike, force: bool = False, n_frames: int | None = None) -> formats.Format:
    """Fail early (before any work) on a bad output: unknown format, exists, missing dir, T>1 to an image."""
    p = Path(path)
    fmt = formats.detect(p, for_write=True)
    if n_frames is not None and n_frames > 1 and fmt.name in _SINGLE_IMAGES:
        ext = p.suffix.lower()
        raise UsageError(f"{p}: a {ext} output holds one image but the clip has {n_frames} frames; "
                         f"use {p.with_suffix('')}.%04d{'.png' if fmt.name == 'jpg' else ext}, .apng or .webp")
    if formats.is_pattern(p):
        check_output(p.parent / "x", force=True, error=MediaError)  # parent exists and is writable
        existing = pattern_frames(p)
        if existing and not force:
            raise OutputExistsError(f"{existing[0][1]} already exists (pass --force to overwrite the sequence)")
    else:
        check_output(p, force, error=MediaError)
    return fmt


def check_delivery(path: str | os.PathLike, bit_depth: int | None = None, start_number: int | None = None) -> None:
    """Before any work: the bit depth and start number suit this output's format (UsageError)."""
    p = Path(path)
    fmt = formats.detect(p, for_write=True)
    _codec_for(p, fmt, bit_depth, True, False)
    _first_number(p, fmt, start_number)


def _codec_for(p: Path, fmt: formats.Format, bit_depth: int | None, linear: bool, matte: bool) -> ImageCodec | None:
    """The still-image codec of an image output (None for video/animation formats); checks bit_depth."""
    kind = formats.IMAGE_KIND.get(fmt.name)
    if kind is None:
        if bit_depth not in (None, 8):
            raise UsageError(f"{p}: bit depth {bit_depth} applies to PNG, TIFF and EXR outputs only "
                             f"({fmt.description} has its own)")
        return None
    level = 4 if fmt.name == "png-seq" else None  # what each PNG writer always used
    return ImageCodec(kind, resolve_depth(kind, bit_depth, str(p)), grey=matte, linear=linear, compress_level=level)


def _first_number(p: Path, fmt: formats.Format, start_number: int | None) -> int:
    if start_number is None:
        return 1
    if not fmt.name.endswith("-seq"):
        raise UsageError(f"{p}: a start number applies to image sequences (name.%04d.exr), not {fmt.description}")
    if isinstance(start_number, bool) or not isinstance(start_number, int) or start_number < 0:
        raise UsageError(f"start number must be a whole number ≥ 0, got {start_number!r}")
    return start_number


@contextmanager
def open_writer(path: str | os.PathLike, *, fps: float, force: bool = False, premultiplied: bool = False,
                threads: int = 0, bit_depth: int | None = None, start_number: int | None = None,
                linear: bool = True, matte: bool = False) -> Iterator[FrameWriter]:
    """Stream frames to `path`; the output appears only if the block finishes without error.

    `bit_depth`: 8 or 16 for PNG (default 8) and TIFF (default 16); 16 (half, default) or 32
    (float) for EXR. `start_number`: the first frame number of a sequence (default 1).
    `linear=False` stores EXR colour as given instead of converting sRGB to linear light.
    `matte=True` writes each frame's alpha alone, as opaque grey (see write_matte).
    """
    p = Path(path)
    fmt = check_writable(p, force)
    if not fps > 0:
        raise UsageError(f"fps must be positive, got {fps}")
    codec = _codec_for(p, fmt, bit_depth, linear, matte)
    first = _first_number(p, fmt, start_number)
    depth = codec.depth if codec is not None else 8
    if fmt.name.endswith("-seq"):
        pattern = p if formats.is_pattern(p) else p / formats.SEQUENCE_DIR_PATTERN
        ctx = _sequence_output(p, force) if formats.is_pattern(p) else atomic_output(p, force, directory=True,
                                                                                      error=MediaError)
        with ctx as tmpdir:
            w = FrameWriter(_SequenceWriter(tmpdir, pattern.name, first, codec), p, fmt, premultiplied,
                            depth=depth, matte=matte)
            yield w
            _require_frames(w, p)
        return
    with atomic_output(p, force, error=MediaError) as tmp:
        try:
            if codec is not None:
                impl = _ImageWriter(tmp, codec, p.suffix.lower())
            elif fmt.name in _AV_CODECS:
                impl = _AVWriter(tmp, fmt.name, fps, threads, p)
            else:
                impl = _PillowWriter(tmp, fmt.name, fps)
        except (av.FFmpegError, OSError) as e:
            raise MediaError(f"{p}: cannot open for writing ({reason(e)})") from None
        w = FrameWriter(impl, p, fmt, premultiplied, depth=depth, matte=matte)
        try:
            yield w
            _require_frames(w, p)
            impl.finish()
        except (av.FFmpegError, OSError) as e:
            impl.abort()
            raise MediaError(f"{p}: writing failed ({reason(e)})") from None
        except BaseException:
            impl.abort()
            raise


def _require_frames(w: FrameWriter, p: Path) -> None:
    if w.frames_written == 0:
        raise MediaError(f"{p}: nothing to write (zero frames)")


@contextmanager
def _sequence_output(pattern: Path, force: bool) -> Iterator[Path]:
    """A temp dir beside the frames; on success its files replace the sequence, all or nothing.

    With `force`, frames of the old sequence that the new one does not have are removed, so
    the pattern afterwards matches exactly the new clip. The move is not cut by a stop signal;
    if it fails half-way, the frames already moved are taken away again.
    """
    parent = pattern.parent if str(pattern.parent) else Path(".")
    tmpdir = make_temp(parent, f".{pattern.name.split('%')[0]}tmp-", directory=True, error=MediaError, what=pattern)
    try:
        yield tmpdir
        new = sorted(os.listdir(tmpdir))
        old = pattern_frames(pattern)
        if old and not force:
            raise OutputExistsError(f"{old[0][1]} already exists (pass --force to overwrite the sequence)")
        for name in new:
            if (parent / name).is_dir():
                raise RgbaError(f"{parent / name} is a directory; cannot overwrite it with a frame")
        with signals_deferred():
            moved: list[Path] = []
            try:
                for name in new:
                    os.replace(tmpdir / name, parent / name)
                    moved.append(parent / name)
                keep = set(new)
                for _, stale in old:
                    if stale.name not in keep:
                        stale.unlink()
            except OSError as e:
                for m in moved:
                    m.unlink(missing_ok=True)
                raise MediaError(f"{pattern}: cannot move the frames into place ({reason(e)})") from None
    finally:
        discard_temp(tmpdir)


def write_clip(clip: Clip, path: str | os.PathLike, *, force: bool = False, premultiplied: bool = False,
               threads: int = 0, bit_depth: int | None = None, start_number: int | None = None,
               linear: bool = True) -> Path:
    """Write a whole clip (format from the path) at clip.fps; returns the output path.

    `premultiplied=True` stores associated alpha (colour multiplied by alpha) instead of straight
    (EXR is always premultiplied). `bit_depth`, `start_number`, `linear`: see open_writer.
    """
    if clip.n_frames == 0:
        raise MediaError(f"{path}: nothing to write (zero frames)")
    check_writable(path, force, clip.n_frames)
    with open_writer(path, fps=clip.fps, force=force, premultiplied=premultiplied, threads=threads,
                     bit_depth=bit_depth, start_number=start_number, linear=linear) as w:
        for frame in clip.frames:
            w.write(frame)
    return Path(path)


def write_matte(clip: Clip, path: str | os.PathLike, *, force: bool = False, threads: int = 0,
                bit_depth: int | None = None, start_number: int | None = None) -> Path:
    """Write the clip's alpha alone as a greyscale clip or sequence (atomic, like every output).

    Still images store one grey channel (PNG/TIFF grey, EXR `Y`, values = alpha, never
    linearised); videos store R = G = B = alpha, opaque. `formats.matte_path(out)` is the usual
    name beside an output: `shot.mov` → `shot.matte.mov`, `shot.%04d.exr` → `shot.matte.%04d.exr`.
    """
    if clip.n_frames == 0:
        raise MediaError(f"{path}: nothing to write (zero frames)")
    check_writable(path, force, clip.n_frames)
    with open_writer(path, fps=clip.fps, force=force, threads=threads, bit_depth=bit_depth,
                     start_number=start_number, matte=True) as w:
        for frame in clip.frames:
            w.write(frame)
    return Path(path)
