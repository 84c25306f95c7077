"""What a rendered RGBA file holds, for CI checks: container facts plus alpha statistics.

`inspect_file` streams the frames once (one frame in memory at a time) through the same
readers every command uses (rgbacli.media.read), so VP9 alpha is decoded by libvpx.
`check_report` turns thresholds into one-line failure messages.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from rgbacli.errors import MediaError, UsageError
from rgbacli.media import formats
from rgbacli.media.read import FrameSource, open_frames, sequence_in_dir, sorted_pattern_files

# Colour tags are ITU-T H.273 code points; these are the names FFmpeg gives them.
# 2 ("unspecified") and unknown codes are left out: they are reported as None.
_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
              10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
_TRANSFER = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
             10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10",
             15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
_MATRIX = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
           9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c",
           14: "ictcp"}
_RANGE = {1: "tv", 2: "pc"}

# Premultiplied estimate: in associated alpha no colour channel can exceed alpha. Lossy codecs
# add a little noise, so a pixel only counts against "premultiplied" when max(R,G,B) > α + TOL.
PREMULT_TOLERANCE = 2
# Above this share of non-opaque pixels breaking that rule, the file is called straight.
PREMULT_MAX_SHARE = 0.01


@dataclass
class FileReport:
    """Everything `rgba inspect` reports about one file (shares are fractions of all pixels)."""

    path: str
    format: str  # our format id: mov, webm, mkv, png-seq, ...
    container: str  # demuxer (FFmpeg) or image format (Pillow)
    codec: str | None
    profile: str | None
    decoder: str  # what decoded the frames: an FFmpeg decoder name, libvpx-vp9 for VP9 alpha, or pillow
    pix_fmt: str | None  # FFmpeg pixel format of the stream, or the Pillow mode of the (first) image
    width: int
    height: int
    frames: int  # decoded
    declared_frames: int | None  # what the header says, when it says
    fps: float
    duration: float  # frames / fps, in seconds
    color: dict[str, str | None]  # primaries, transfer, matrix, range (None: not tagged)
    alpha_plane: bool  # the source stores an alpha channel
    alpha_source: str | None  # where the alpha comes from (pixel format, VPx side data, image mode)
    alpha_used: bool  # some pixel has α < 255
    alpha_min: int
    alpha_max: int
    coverage: float  # share of pixels with α > 0.5 (α ≥ 128 in 8 bits), over all frames
    semi_transparent: float  # share of pixels with 0 < α < 255, over all frames
    coverage_min: float
    coverage_min_frame: int  # 0-based
    coverage_max: float
    coverage_max_frame: int
    premultiplied: dict  # see _premultiplied_verdict
    coverage_per_frame: list[float] = field(default_factory=list)
    semi_transparent_per_frame: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Probe:
    """Container facts read from the header (no frames decoded)."""

    container: str
    codec: str | None = None
    profile: str | None = None
    decoder: str = "pillow"
    pix_fmt: str | None = None
    color: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(("primaries", "transfer",
                                                                                  "matrix", "range")))
    alpha_source: str | None = None


def _probe_av(path: Path, had_alpha: bool) -> _Probe:
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            ctx = s.codec_context
            pix = ctx.format.name if ctx.format is not None else None
            vpx_alpha = ctx.name in ("vp8", "vp9") and str(s.metadata.get("alpha_mode", "")).strip() == "1"
            probe = _Probe(container=c.format.name, codec=ctx.name, profile=ctx.profile or None, pix_fmt=pix)
            # The reader's rule (rgbacli.media.read): VPx alpha side data needs the libvpx decoders.
            probe.decoder = ("libvpx-vp9" if ctx.name == "vp9" else "libvpx") if vpx_alpha else ctx.codec.name
            probe.color = {
                "primaries": _PRIMARIES.get(int(ctx.color_primaries or 2)),
                "transfer": _TRANSFER.get(int(ctx.color_trc or 2)),
                "matrix": _MATRIX.get(int(ctx.colorspace)) if ctx.colorspace is not None else None,
                "range": _RANGE.get(int(ctx.color_range or 0)),
            }
            if vpx_alpha:
                probe.alpha_source = "VPx alpha side data, alpha_mode=1"
            elif had_alpha:
                probe.alpha_source = f"pixel format {pix}"
            return probe
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise MediaError(f"{path}: unreadable or corrupt media ({e})") from None


def _probe_pillow(path: Path, container: str, had_alpha: bool) -> _Probe:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            probe = _Probe(container=container, codec=(im.format or "").lower() or None, pix_fmt=im.mode)
            if had_alpha:
                probe.alpha_source = "palette transparency" if im.mode == "P" else f"image mode {im.mode}"
            return probe
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{path}: unreadable or corrupt image ({e})") from None


def _probe(src: FrameSource, fmt_name: str) -> _Probe:
    if fmt_name.endswith("-seq"):
        # The first frame's file speaks for the sequence (the reader refuses a size change).
        files = sorted_pattern_files(src.path) if formats.is_pattern(src.path) else sequence_in_dir(src.path)[0]
        kind = formats.IMAGE_KIND[fmt_name]
        if kind == "exr":  # Pillow cannot open EXR; FFmpeg's decoder describes it
            probe = _probe_av(files[0], src.had_alpha)
            probe.container = "exr sequence"
            return probe
        return _probe_pillow(files[0], f"{kind} sequence", src.had_alpha)
    if fmt_name in ("png", "webp", "gif", "jpg", "tiff"):
        return _probe_pillow(src.path, fmt_name, src.had_alpha)
    return _probe_av(src.path, src.had_alpha)


@contextmanager
def os_errors_as_media_errors(path: str | os.PathLike):
    """An OS failure the readers and writers let through (permission denied, a folder that
    refuses temporary files, a full disk) becomes one MediaError line naming the file."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
        raise MediaError(f"{path}: {e.strerror or e}{where}") from None


def open_checked(path: str | os.PathLike, **kw) -> FrameSource:
    """open_frames, with OS failures as one MediaError line."""
    with os_errors_as_media_errors(path):
        return open_frames(path, **kw)


def _premultiplied_verdict(violating: int, non_opaque: int, tinted_semi: int) -> dict:
    """How the colours look: straight, likely premultiplied, or unknown (see docs/ci.md)."""
    share = violating / non_opaque if non_opaque else 0.0
    if non_opaque == 0:
        verdict, reason = "unknown", "every pixel is opaque: both conventions store the same values"
    elif share > PREMULT_MAX_SHARE:
        verdict = "straight"
        reason = f"{share:.2%} of non-opaque pixels have a colour channel > alpha + {PREMULT_TOLERANCE}"
    elif tinted_semi == 0:
        verdict, reason = "unknown", "no translucent pixel carries colour: nothing tells the conventions apart"
    else:
        verdict = "likely premultiplied"
        reason = (f"only {share:.2%} of non-opaque pixels have a colour channel > alpha + {PREMULT_TOLERANCE} "
                  "(straight clips whose colour stays below alpha look the same)")
    return {"verdict": verdict, "reason": reason, "violating_share": share, "violating_pixels": violating,
            "non_opaque_pixels": non_opaque, "tolerance": PREMULT_TOLERANCE}


def inspect_file(path: str | os.PathLike, on_frame: Callable[[int, int | None], None] | None = None) -> FileReport:
    """Decode `path` once, frame by frame, and gather the figures of a FileReport."""
    p = Path(path)
    fmt = formats.detect(p)
    src = open_checked(p)
    probe = _probe(src, fmt.name)
    cov, semi = [], []
    a_min, a_max = 255, 0
    violating = non_opaque = tinted_semi = 0
    covered_total = semi_total = 0
    n_pix = src.width * src.height
    with os_errors_as_media_errors(p):
        for i, frame in enumerate(src):
            a = frame[..., 3]
            zero, full = np.count_nonzero(a == 0), np.count_nonzero(a == 255)
            covered = np.count_nonzero(a >= 128)  # α/255 > 0.5
            n_semi = n_pix - zero - full
            cov.append(float(covered) / n_pix)
            semi.append(float(n_semi) / n_pix)
            covered_total += covered
            semi_total += n_semi
            a_min, a_max = min(a_min, int(a.min())), max(a_max, int(a.max()))
            if full < n_pix:
                rgb_max = frame[..., :3].max(axis=-1)
                excess = np.subtract(rgb_max, a, dtype=np.int16)  # > 0 is impossible when premultiplied
                violating += np.count_nonzero(excess > PREMULT_TOLERANCE)
                non_opaque += n_pix - full
                if n_semi:
                    tinted_semi += np.count_nonzero((a > 0) & (a < 255) & (rgb_max > PREMULT_TOLERANCE))
            if on_frame:
                on_frame(i + 1, src.n_frames)
    n = len(cov)
    if n == 0:
        raise MediaError(f"{p}: contains no frames")
    lo, hi = int(np.argmin(cov)), int(np.argmax(cov))
    return FileReport(
        path=str(p), format=fmt.name, container=probe.container, codec=probe.codec, profile=probe.profile,
        decoder=probe.decoder, pix_fmt=probe.pix_fmt, width=src.width, height=src.height, frames=n,
        declared_frames=src.n_frames, fps=src.fps, duration=n / src.fps, color=probe.color,
        alpha_plane=src.had_alpha, alpha_source=probe.alpha_source, alpha_used=a_min < 255,
        alpha_min=a_min, alpha_max=a_max, coverage=float(covered_total) / (n * n_pix),
        semi_transparent=float(semi_total) / (n * n_pix),
        coverage_min=cov[lo], coverage_min_frame=lo, coverage_max=cov[hi], coverage_max_frame=hi,
        premultiplied=_premultiplied_verdict(int(violating), int(non_opaque), int(tinted_semi)),
        coverage_per_frame=cov, semi_transparent_per_frame=semi,
    )


@dataclass
class InspectThresholds:
    """What makes `rgba inspect` exit 1; coverage limits apply to every frame."""

    require_alpha: bool = False
    min_coverage: float | None = None
    max_coverage: float | None = None

    def validate(self) -> None:
        for name, v in (("--min-coverage", self.min_coverage), ("--max-coverage", self.max_coverage)):
            if v is not None and not (0.0 <= v <= 1.0):  # also refuses NaN
                raise UsageError(f"{name} must be a share between 0 and 1, got {v:g}")
        if self.min_coverage is not None and self.max_coverage is not None and self.min_coverage > self.max_coverage:
            raise UsageError(f"--min-coverage {self.min_coverage:g} is above --max-coverage {self.max_coverage:g}")


def check_report(rep: FileReport, th: InspectThresholds) -> list[str]:
    """One line per failed check, each naming the file and the figure."""
    out = []
    if th.require_alpha and not rep.alpha_plane:
        out.append(f"{rep.path}: no alpha channel ({rep.codec or rep.container}, {rep.pix_fmt}) "
                   f"but --require-alpha")
    elif th.require_alpha and not rep.alpha_used:
        out.append(f"{rep.path}: alpha is 255 in every pixel of all {rep.frames} frames (alpha plane unused) "
                   f"but --require-alpha")
    cov = rep.coverage_per_frame
    if th.min_coverage is not None and rep.coverage_min < th.min_coverage:
        bad = sum(c < th.min_coverage for c in cov)
        out.append(f"{rep.path}: alpha coverage {_fmt(rep.coverage_min)} in frame {rep.coverage_min_frame} "
                   f"< --min-coverage {th.min_coverage:g} ({bad} of {rep.frames} frames below)")
    if th.max_coverage is not None and rep.coverage_max > th.max_coverage:
        bad = sum(c > th.max_coverage for c in cov)
        out.append(f"{rep.path}: alpha coverage {_fmt(rep.coverage_max)} in frame {rep.coverage_max_frame} "
                   f"> --max-coverage {th.max_coverage:g} ({bad} of {rep.frames} frames above)")
    return out


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4f}"
