"""Still images, one frame each: 8/16-bit PNG, 8/16-bit TIFF and half/float OpenEXR.

Encoding gives bytes (the caller writes them, so a full disk surfaces as one OSError there):
8-bit PNG through Pillow (as it always was), 16-bit PNG, TIFF and EXR through PyAV's
encoders. Decoding: 8-bit PNG through Pillow, 16-bit PNG and TIFF through PyAV, EXR through
the OpenEXR library. Frames arrive and leave straight alpha; EXR files hold linear light,
premultiplied (the EXR conventions), converted here on the way in and out.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from rgbacli.errors import MediaError, UsageError
from rgbacli.media.clip import linear_to_srgb, srgb_to_linear

# Which image codec a file suffix means (sequences and single images alike).
KIND_BY_SUFFIX = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".exr": "exr"}
# Bit depths each kind can write, the first being the default (EXR: 16 = half, 32 = float).
DEPTHS = {"png": (8, 16), "tiff": (16, 8), "exr": (16, 32)}

# Pixel formats that carry alpha have an "a" component (yuva…, rgba, bgra, gbrap, ya8, …).
ALPHA_PIX = re.compile(r"yuva|rgba|bgra|argb|abgr|gbrap|^ya\d")


def short_error(e: BaseException) -> str:
    """The first line of an exception's message, without errno noise."""
    text = (getattr(e, "strerror", None) if isinstance(e, (av.FFmpegError, OSError)) else None) or str(e)
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return text[:200]


def resolve_depth(kind: str, bit_depth: int | None, where: str = "") -> int:
    """The bit depth to write `kind` at: the default, or a checked choice (UsageError)."""
    allowed = DEPTHS[kind]
    if bit_depth is None:
        return allowed[0]
    if bit_depth not in allowed:
        names = {"png": "PNG", "tiff": "TIFF", "exr": "EXR"}
        raise UsageError(f"{where + ': ' if where else ''}{names[kind]} is written at bit depth "
                         f"{' or '.join(map(str, sorted(allowed)))}, not {bit_depth}")
    return bit_depth


@dataclass(frozen=True)
class ImageCodec:
    """How to store one frame. `grey` stores channel 0 alone (a matte); `linear` makes EXR hold
    linear light (the sRGB curve removed); `compress_level` is Pillow's for 8-bit PNG."""

    kind: str  # png | tiff | exr
    depth: int = 8
    grey: bool = False
    linear: bool = True
    compress_level: int | None = None

    @property
    def wants_float(self) -> bool:
        """True when frames should reach encode() as float32 (anything above 8 bits)."""
        return self.depth > 8

    def encode(self, frame: np.ndarray) -> bytes:
        """(H, W, 4) frame → file bytes. uint8 for 8-bit codecs, float32 [0, 1] otherwise."""
        if self.kind == "exr":
            return self._encode_exr(frame)
        if self.depth == 8:
            frame = np.ascontiguousarray(frame[..., 0] if self.grey else frame)
            if self.kind == "png":
                buf = io.BytesIO()
                extra = {} if self.compress_level is None else {"compress_level": self.compress_level}
                Image.fromarray(frame, "L" if self.grey else "RGBA").save(buf, format="PNG", **extra)
                return buf.getvalue()
            return _av_encode("tiff", "gray" if self.grey else "rgba", frame, {"compression_algo": "deflate"})
        q = np.rint(np.clip(frame, 0.0, 1.0) * 65535.0).astype(np.uint16)
        q = np.ascontiguousarray(q[..., 0] if self.grey else q)
        if self.kind == "png":
            return _av_encode("png", "gray16be" if self.grey else "rgba64be", q, {})
        return _av_encode("tiff", "gray16le" if self.grey else "rgba64le", q, {"compression_algo": "deflate"})

    def _encode_exr(self, frame: np.ndarray) -> bytes:
        f = frame.astype(np.float64)
        if self.grey:
            out = f[..., 0]  # a matte is coverage: already linear, never premultiplied
        else:
            rgb, a = f[..., :3], f[..., 3:4]
            if self.linear:
                rgb = srgb_to_linear(rgb)
            out = np.concatenate([rgb * a, a], axis=-1)
        out = out.astype(np.float32)
        if self.depth == 16:
            # Round to nearest half here: FFmpeg's float→half conversion truncates.
            out = out.astype(np.float16).astype(np.float32)
        return _av_encode("exr", "grayf32le" if self.grey else "gbrapf32le", np.ascontiguousarray(out),
                          {"format": "half" if self.depth == 16 else "float", "compression": "zip16"})


def _av_encode(codec: str, pix_fmt: str, array: np.ndarray, options: dict) -> bytes:
    """One frame through an FFmpeg image encoder, bit-exact (no version strings) → bytes."""
    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height, cc.pix_fmt = array.shape[1], array.shape[0], pix_fmt
    cc.time_base = Fraction(1, 1)
    cc.thread_count = 1
    cc.flags |= av.codec.context.Flags.bitexact
    cc.options = dict(options)
    frame = av.VideoFrame.from_ndarray(array, format=pix_fmt)
    frame.pts = 0
    return b"".join(bytes(p) for p in cc.encode(frame) + cc.encode(None))


# --- decoding -----------------------------------------------------------------------------


@dataclass
class Decoded:
    """One decoded image: (H, W, 4) straight alpha, uint8, uint16 or float32; its source depth."""

    pixels: np.ndarray
    had_alpha: bool
    bits: int


def png_bit_depth(path: Path) -> int:
    """The bit depth in a PNG's IHDR chunk (8 when the header cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError as e:
        raise MediaError(f"{path}: cannot read ({short_error(e)})") from None
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return 8


def decode_image(path: Path, *, high: bool = False, linear: bool = True) -> Decoded:
    """Read one image. `high` keeps >8-bit sources at their precision (uint16 / float32);
    otherwise everything but EXR comes back uint8. EXR always comes back float32."""
    kind = KIND_BY_SUFFIX.get(path.suffix.lower(), "png")
    if kind == "exr":
        return _read_exr(path, linear)
    if kind == "png" and png_bit_depth(path) <= 8:
        return _read_pillow(path)
    return _read_av(path, "png" if kind == "png" else "tiff", high)


def _read_pillow(path: Path) -> Decoded:
    try:
        with Image.open(path) as im:
            alpha = pil_has_alpha(im)
            return Decoded(np.asarray(im.convert("RGBA")), alpha, 8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{path}: unreadable or corrupt image ({short_error(e)})") from None


def pil_has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _read_av(path: Path, codec: str, high: bool) -> Decoded:
    try:
        data = path.read_bytes()
        cc = av.CodecContext.create(codec, "r")
        frames = cc.decode(av.Packet(data)) + cc.decode(None)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: unreadable or corrupt image ({short_error(e)})") from None
    if not frames:
        raise MediaError(f"{path}: unreadable or corrupt image (no picture decoded)")
    frame = frames[0]
    name = frame.format.name
    bits = max(c.bits for c in frame.format.components)
    alpha = bool(ALPHA_PIX.search(name))
    try:
        if "f16" in name or "f32" in name:
            return Decoded(np.clip(frame.to_ndarray(format="gbrapf32le", threads=1), 0.0, 1.0), alpha, bits)
        if bits <= 8 or not high:
            return Decoded(_rgba8(frame, bits), alpha, bits)
        return Decoded(frame.to_ndarray(format="rgba64le", threads=1), alpha, bits)
    except (av.FFmpegError, ValueError) as e:
        raise MediaError(f"{path}: unsupported pixel layout {name} ({short_error(e)})") from None


def _rgba8(frame, bits: int) -> np.ndarray:
    """uint8 RGBA; deeper sources are rounded (x/257), not truncated as swscale would."""
    if bits <= 8:
        return frame.to_ndarray(format="rgba", threads=1)
    return uint16_to_uint8(frame.to_ndarray(format="rgba64le", threads=1))


def uint16_to_uint8(x: np.ndarray) -> np.ndarray:
    """round(x · 255 / 65535) = round(x / 257), exactly, in integers."""
    return ((x.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _read_exr(path: Path, linear: bool) -> Decoded:
    """EXR → straight float32 RGBA in [0, 1]: R,G,B[,A] or Y[,A] channels, premultiplied and
    (when `linear`) linear light in the file. Pixels outside the data window are transparent."""
    import OpenEXR  # a compiled extension, imported only when an EXR is read

    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            header = f.header()  # a view that empties when the file closes: copy what we need
            windows = {k: header[k] for k in ("dataWindow", "displayWindow") if k in header}
            chans = {name: np.array(ch.pixels) for name, ch in f.channels().items()}
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise MediaError(f"{path}: unreadable or corrupt EXR ({short_error(e)})") from None
    if all(c in chans for c in "RGB"):
        rgb = [chans[c] for c in "RGB"]
    elif "Y" in chans:
        rgb = [chans["Y"]] * 3
    else:
        raise MediaError(f"{path}: EXR has no R,G,B or Y channels (found: {', '.join(sorted(chans)) or 'none'})")
    has_a = "A" in chans
    planes = [np.asarray(p, np.float32) for p in rgb + [chans["A"] if has_a else np.ones_like(rgb[0])]]
    data = np.stack(planes, axis=-1)
    bits = 16 if rgb[0].dtype == np.float16 else 32
    data = _display_window(data, windows)
    a = data[..., 3:4]
    with np.errstate(divide="ignore", invalid="ignore"):
        rgb_straight = np.where(a > 0, data[..., :3] / a, 0.0) if has_a else data[..., :3]
    rgb_straight = np.nan_to_num(rgb_straight, nan=0.0, posinf=1.0, neginf=0.0)
    if linear:
        rgb_straight = linear_to_srgb(np.clip(rgb_straight, 0.0, None))
    out = np.concatenate([np.clip(rgb_straight, 0.0, 1.0), np.clip(a, 0.0, 1.0)], axis=-1).astype(np.float32)
    return Decoded(out, has_a, bits)


def _display_window(data: np.ndarray, windows: dict) -> np.ndarray:
    """Place the data window's pixels on the display window (the frame a compositor shows)."""
    try:
        (dx0, dy0), (dx1, dy1) = (tuple(int(v) for v in p) for p in windows["dataWindow"])
        (wx0, wy0), (wx1, wy1) = (tuple(int(v) for v in p) for p in windows["displayWindow"])
    except (KeyError, TypeError, ValueError):
        return data
    if (dx0, dy0, dx1, dy1) == (wx0, wy0, wx1, wy1):
        return data
    out = np.zeros((wy1 - wy0 + 1, wx1 - wx0 + 1, 4), np.float32)
    x0, y0, x1, y1 = max(dx0, wx0), max(dy0, wy0), min(dx1, wx1), min(dy1, wy1)
    if x0 <= x1 and y0 <= y1:
        out[y0 - wy0 : y1 - wy0 + 1, x0 - wx0 : x1 - wx0 + 1] = data[y0 - dy0 : y1 - dy0 + 1, x0 - dx0 : x1 - dx0 + 1]
    return out
