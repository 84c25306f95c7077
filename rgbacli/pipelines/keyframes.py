"""The two keyframes of `rgba interpolate`: read, checked and sized before any model is loaded.

- An image (PNG, WebP, APNG, GIF, TIFF, EXR, JPEG) gives its first frame.
- A clip (a video container or an image sequence) gives its last frame as A and its first as B,
  so that shots chain: `rgba interpolate shot1.mov shot2.mov` joins the end of one to the start
  of the next.
- An opaque image is accepted with a warning (alpha = 1 everywhere).
- The output size is `size` if given, else A's; a keyframe of another size is resized to it
  (premultiplied, so no dark fringes) with a note. A size that is not a positive multiple of the
  preset's multiple is one line; so is an unreadable file.

Numpy and the media readers only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rgbacli.errors import MediaError, UsageError

# Formats read as clips (A = the last frame, B = the first); every other format is an image.
CLIP_FORMATS = frozenset({"png-seq", "exr-seq", "tiff-seq", "mov", "webm", "mkv", "mp4"})
MIN_FRAMES = 3


@dataclass
class Keyframe:
    """One keyframe: (H, W, 4) float32 straight RGBA in [0, 1], where it came from, what was done."""

    rgba: np.ndarray
    path: str
    frame: str  # "first frame", "last frame of 17", "image"
    opaque: bool = False


@dataclass
class KeyframePair:
    start: Keyframe
    end: Keyframe
    width: int
    height: int
    notes: list[str] = field(default_factory=list)  # resizes, opaque inputs: said to the user once
    warnings: list[str] = field(default_factory=list)


def check_frames(frames: int) -> None:
    if frames < MIN_FRAMES:
        raise UsageError(f"--frames must be at least {MIN_FRAMES} (the two keyframes and one in-between), not {frames}")


def read_keyframe(path: str, role: str) -> Keyframe:
    """Role "a" (start) or "b" (end); a clip gives its last frame as A, its first as B."""
    from rgbacli.media import formats
    from rgbacli.media.clip import to_float
    from rgbacli.media.read import open_frames

    p = Path(path)
    fmt = formats.detect(p)  # an unknown extension: one UsageError line
    src = open_frames(p, dtype="float32")
    is_clip = fmt.name in CLIP_FORMATS
    frame, count = None, 0
    try:
        for f in src:
            frame, count = f, count + 1
            if not (is_clip and role == "a"):
                break  # images, and B from a clip: the first frame
    except MediaError:
        raise
    except Exception as e:  # a decoder failing mid-stream: still one line about the file
        raise MediaError(f"{p}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if frame is None:
        raise MediaError(f"{p}: contains no frames")
    rgba = np.ascontiguousarray(to_float(frame), dtype=np.float32)
    opaque = (not src.had_alpha) or bool(rgba[..., 3].min() >= 1.0)
    if opaque:
        rgba[..., 3] = 1.0
    where = ("last frame" + (f" of {count}" if count else "")) if is_clip and role == "a" else \
        ("first frame" if is_clip or (src.n_frames or 1) > 1 else "image")
    return Keyframe(rgba, str(p), where, opaque)


def resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 4) straight float RGBA resized (Lanczos) through premultiplied alpha."""
    from PIL import Image

    a = rgba[..., 3:4]
    pre = np.concatenate([rgba[..., :3] * a, a], axis=-1)
    chans = [np.asarray(Image.fromarray(pre[..., c].astype(np.float32), mode="F").resize((width, height),
                                                                                         Image.Resampling.LANCZOS))
             for c in range(4)]
    out = np.clip(np.stack(chans, axis=-1), 0.0, 1.0)
    alpha = out[..., 3:4]
    rgb = np.where(alpha > 1e-6, out[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=-1).astype(np.float32)


def check_size(width: int, height: int, multiple: int, preset: str, what: str) -> None:
    if width < multiple or height < multiple or width % multiple or height % multiple:
        def fit(v: int) -> int:
            return max(multiple, int(v / multiple + 0.5) * multiple)

        raise UsageError(f"{what} is {width}x{height}: preset '{preset}' needs width and height that are positive "
                         f"multiples of {multiple} (e.g. {fit(width)}x{fit(height)}; pass --size or resize it)")


def read_keyframes(a: str, b: str, multiple: int, preset: str, size: tuple[int, int] | None = None) -> KeyframePair:
    """Both keyframes, sized to `size` (default: A's) after checking it fits the preset's `multiple`."""
    start, end = read_keyframe(a, "a"), read_keyframe(b, "b")
    if size is not None:
        width, height = size
        check_size(width, height, multiple, preset, "--size")
    else:
        height, width = start.rgba.shape[:2]
        check_size(width, height, multiple, preset, f"keyframe A ({a})")
    pair = KeyframePair(start, end, width, height)
    for k, name in ((start, "A"), (end, "B")):
        h, w = k.rgba.shape[:2]
        if (w, h) != (width, height):
            k.rgba = resize_rgba(k.rgba, width, height)
            pair.notes.append(f"keyframe {name} ({k.path}) is {w}x{h}: resized to {width}x{height}")
        if k.opaque:
            pair.warnings.append(f"keyframe {name} ({k.path}) has no transparency: treated as opaque (alpha = 1)")
    return pair
