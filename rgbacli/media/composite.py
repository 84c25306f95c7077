"""Composite RGBA layers over a background (clip, file or colour), frame by frame.

Layers stack in order, first lowest. The output lasts as long as the longest of the
background and each layer's start + length; anything shorter loops (default) or holds its
last frame. Clips at another frame rate are resampled to the output rate (the frame on
screen at each output timestamp). Pixel maths: rgbacli/media/blend.py.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from rgbacli import console
from rgbacli.errors import MediaError, UsageError
from rgbacli.fsutil import check_not_input
from rgbacli.media.blend import over, place  # noqa: F401  (re-exported)
from rgbacli.media.clip import Clip, premultiply, to_uint8, unpremultiply
from rgbacli.media.color import looks_like_color, parse_color
from rgbacli.media.formats import detect, is_sequence
from rgbacli.media.read import open_frames
from rgbacli.media.threads import BackgroundWriter, prefetch
from rgbacli.media.timeline import FITS, Fit, Track, plan_caching
from rgbacli.media.write import check_writable, open_writer


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (T, H, W, 4) uint8 straight-alpha frames to `size` (w, h) with Lanczos.

    Filtering happens on premultiplied colour so transparent pixels (whose colour is
    meaningless) cannot bleed dark or stray fringes into the edges; then back to straight.
    """
    w, h = size
    if (w, h) == (frames.shape[2], frames.shape[1]):
        return frames
    pre = premultiply(frames)
    out = np.empty((frames.shape[0], h, w, 4), np.uint8)
    for t in range(frames.shape[0]):
        for c in range(4):  # single-channel "L" images: Pillow applies no alpha handling of its own
            im = Image.fromarray(np.ascontiguousarray(pre[t, ..., c]), "L")
            out[t, ..., c] = np.asarray(im.resize((w, h), Image.Resampling.LANCZOS))
    # Lanczos can ring colour slightly above alpha; unpremultiply clips to 255.
    return unpremultiply(out)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(w, h) × scale, rounded, at least 1 pixel."""
    if not scale > 0:
        raise UsageError(f"--scale must be positive, got {scale}")
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


@dataclass
class Layer:
    """A foreground clip with its top-left at `position` (may be negative), resized by `scale`,
    entering at output frame `start`."""

    clip: Clip
    position: tuple[int, int] = (0, 0)
    scale: float = 1.0
    start: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """Size on the canvas (after scale)."""
        return scaled_size(self.clip.size, self.scale) if self.scale != 1.0 else self.clip.size


@dataclass
class _Input:
    """A layer or background as the compositor sees it: frames to pull plus timing metadata."""

    frames: Iterator[np.ndarray]
    fps: float
    n_frames: int | None
    size: tuple[int, int]
    had_alpha: bool
    position: tuple[int, int] = (0, 0)
    start: int = 0


def _scaler(size: tuple[int, int], target: tuple[int, int]):
    if size == target:
        return lambda f: f
    return lambda f: resize_frames(f[None], target)[0]


def _output_fps(fps: float | None, bg: _Input | None, layers: list[_Input]) -> float:
    """--fps, else a moving background's rate, else the first layer's."""
    if fps is not None:
        if not fps > 0:
            raise UsageError(f"--fps must be positive, got {fps}")
        return float(fps)
    if bg is not None and bg.n_frames != 1:
        return bg.fps
    return layers[0].fps if layers else 24.0


def _composite(layers: list[_Input], bg: _Input | None, color: tuple[int, int, int, int], size: tuple[int, int],
               out_fps: float, fit: Fit) -> Iterator[np.ndarray]:
    """Yield composited frames until every input has played through once."""
    if fit not in FITS:
        raise UsageError(f"--fit must be one of {', '.join(FITS)}, got {fit!r}")
    W, H = size
    tracks = [Track(L.frames, L.fps, out_fps, start=L.start, fit=fit, n_frames=L.n_frames) for L in layers]
    bg_track = Track(bg.frames, bg.fps, out_fps, fit=fit, n_frames=bg.n_frames) if bg is not None else None
    plan_caching(tracks + ([bg_track] if bg_track is not None else []))
    solid = np.empty((H, W, 4), np.uint8)
    solid[...] = color
    known_opaque = (bg is None and color[3] == 255) or (bg is not None and not bg.had_alpha)
    t = 0
    while True:
        layers_done = all(tr.ended(t) for tr in tracks)
        if layers_done and (bg_track is None or bg_track.ended(t)) and t > 0:
            return
        if bg_track is not None and layers_done and bg_track.keep:
            bg_track.release()  # the background outlasts every layer: it never loops
        base = bg_track.frame(t) if bg_track is not None else solid
        if base is None:
            raise MediaError("the background contains no frames")
        if base.shape != (H, W, 4):
            raise MediaError(f"background frame {t} is {base.shape[1]}x{base.shape[0]}, expected {W}x{H}")
        canvas = base.copy()
        for L, tr in zip(layers, tracks):
            fg = tr.frame(t)
            if fg is not None:
                place(canvas, fg, L.position[0], L.position[1], True if known_opaque else None)
        yield canvas
        t += 1


def _clip_input(clip: Clip, layer: Layer | None = None) -> _Input:
    frames = to_uint8(clip.frames)
    if layer is None:
        return _Input(iter(frames), clip.fps, clip.n_frames, clip.size, clip.had_alpha)
    scale = _scaler(clip.size, layer.size)
    return _Input(map(scale, frames), clip.fps, clip.n_frames, layer.size, clip.had_alpha,
                  tuple(layer.position), layer.start)


def composite_clip(layers: list[Layer], background: Clip | tuple[int, int, int, int], *,
                   size: tuple[int, int] | None = None, fps: float | None = None, fit: Fit = "loop") -> Clip:
    """In memory: layers (first lowest) over a background clip or an (r, g, b, a) colour.

    With a colour, the canvas is `size` or the first layer's size.
    """
    ins = [_clip_input(L.clip, L) for L in layers]
    if isinstance(background, Clip):
        bg, color, canvas = _clip_input(background), (0, 0, 0, 0), background.size
    else:
        bg, color = None, tuple(background)
        canvas = size or (ins[0].size if ins else (64, 64))
    out_fps = _output_fps(fps, bg, ins)
    frames = list(_composite(ins, bg, color, canvas, out_fps, fit))
    opaque = (bg is None and color[3] == 255) or (bg is not None and not bg.had_alpha)
    return Clip(np.stack(frames), out_fps, had_alpha=not opaque)


# --- files in, file out (what `rgba composite` runs) -------------------------------------


def _per_layer(name: str, values: list | None, n: int, default):
    """An option given once applies to every FG; otherwise it must be given once per FG."""
    if not values:
        return [default] * n
    if len(values) == 1:
        return list(values) * n
    if len(values) != n:
        raise UsageError(f"{name} was given {len(values)} times for {n} foregrounds (give it once or once per FG)")
    return list(values)


def run_composite(fg_paths: list[str], bg: str, out: str, *, positions: list[tuple[int, int]] | None = None,
                  scales: list[float] | None = None, starts: list[int] | None = None, fit: Fit = "loop",
                  fps: float | None = None, size: tuple[int, int] | None = None, force: bool = False,
                  premultiplied: bool = False, on_frame: Callable[[int, int | None], None] | None = None,
                  input_fps: float | None = None, trim_start: int = 0, trim_frames: int | None = None,
                  start_number: int | None = None, bit_depth: int | None = None, linear: bool = True,
                  matte: str | None = None) -> dict:
    """Composite FG files (first lowest) over a BG file or colour into `out`; returns a summary.

    Inputs are decoded in worker threads while frames are blended and encoded, so the whole
    job streams (only frames that may loop are kept). `premultiplied` means the input files
    store associated alpha and the output should too.

    `input_fps` is the frame rate of image-sequence inputs (folders, name.%04d.ext; default 24);
    videos keep their own. `trim_start`/`trim_frames` keep output frames
    [trim_start, trim_start + trim_frames) of the composite timeline (frame 0 is its start).
    `start_number`, `bit_depth`, `linear` go to the writer (see open_writer); `matte` is a
    path that also receives the output's alpha as a greyscale clip. The summary's `size` is
    what was written (H.264 pads odd sizes to even).
    """
    t0 = time.perf_counter()
    if not fg_paths:
        raise UsageError("give at least one foreground clip")
    if fit not in FITS:
        raise UsageError(f"--fit must be one of {', '.join(FITS)}, got {fit!r}")
    n = len(fg_paths)
    positions = _per_layer("--position", positions, n, (0, 0))
    scales = _per_layer("--scale", scales, n, 1.0)
    starts = _per_layer("--start", starts, n, 0)
    if isinstance(trim_start, bool) or not isinstance(trim_start, int) or trim_start < 0:
        raise UsageError(f"trim start must be a whole number of frames ≥ 0, got {trim_start!r}")
    if trim_frames is not None and (isinstance(trim_frames, bool) or not isinstance(trim_frames, int)
                                    or trim_frames < 1):
        raise UsageError(f"trim length must be a whole number of frames ≥ 1, got {trim_frames!r}")
    inputs = list(fg_paths) + ([bg] if Path(bg).exists() or not looks_like_color(bg) else [])
    check_not_input(out, inputs)
    check_writable(out, force)
    if matte is not None:
        check_not_input(matte, inputs, "matte")
        check_writable(matte, force)
        if Path(matte).resolve() == Path(out).resolve():
            raise UsageError(f"the matte {matte} cannot be the output itself")

    def source(path: str):
        return open_frames(path, premultiplied=premultiplied, fps=input_fps if is_sequence(path) else None)

    layers: list[_Input] = []
    for path, pos, sc, st in zip(fg_paths, positions, scales, starts):
        src = source(path)
        if not src.had_alpha:
            console.warn(f"{path} has no alpha channel; it is treated as fully opaque")
        target = scaled_size(src.size, sc) if sc != 1.0 else src.size
        layers.append(_Input(prefetch(map(_scaler(src.size, target), src)), src.fps, src.n_frames, target,
                             src.had_alpha, tuple(pos), st))

    bg_in, color = None, (0, 0, 0, 255)
    if not Path(bg).exists() and (looks_like_color(bg) or not Path(bg).suffix):
        color = parse_color(bg)  # a UsageError names the accepted colours
        canvas = tuple(size) if size else layers[0].size
    else:
        src = source(bg)
        if size is not None and tuple(size) != src.size:
            raise UsageError(f"--size {size[0]}x{size[1]} does not match the background {bg} "
                             f"({src.width}x{src.height}); --size is only for colour backgrounds")
        bg_in = _Input(prefetch(src), src.fps, src.n_frames, src.size, src.had_alpha)
        canvas = src.size
    W, H = canvas
    for path, L in zip(fg_paths, layers):
        (x, y), (w, h) = L.position, L.size
        if x >= W or y >= H or x + w <= 0 or y + h <= 0:
            console.warn(f"{path} at {x},{y} ({w}x{h}) lies entirely outside the {W}x{H} canvas")

    out_fps = _output_fps(fps, bg_in, layers)
    known = [i.n_frames for i in layers + ([bg_in] if bg_in else []) if i.n_frames]
    hint = max(known) if known else None
    count = t = 0
    with ExitStack() as stack:
        writer = stack.enter_context(open_writer(out, fps=out_fps, force=force, premultiplied=premultiplied,
                                                 linear=linear, start_number=start_number, bit_depth=bit_depth))
        matte_w = None
        if matte is not None:  # the output's depth and numbering, where the matte's format has them
            same = detect(matte, for_write=True) == detect(out, for_write=True)
            matte_w = stack.enter_context(open_writer(
                matte, fps=out_fps, force=force, matte=True, bit_depth=bit_depth if same else None,
                start_number=start_number if detect(matte, for_write=True).name.endswith("-seq") else None))

        def sink(frame: np.ndarray) -> None:
            writer.write(frame)
            if matte_w is not None:
                matte_w.write(frame)

        enc = BackgroundWriter(sink)
        try:
            for t, frame in enumerate(_composite(layers, bg_in, color, canvas, out_fps, fit)):
                if t < trim_start:
                    continue
                if trim_frames is not None and count >= trim_frames:
                    break
                enc.write(frame)
                count += 1
                if on_frame:
                    on_frame(count, hint)
        except BaseException:
            enc.close(raise_error=False)
            raise
        enc.close()
        if count == 0:
            raise UsageError(f"trim start {trim_start} is past the end of the composite ({t + 1} frames)")
    W, H = writer.size or canvas
    summary = {"output": str(out), "frames": count, "size": [W, H], "fps": out_fps,
               "seconds": round(time.perf_counter() - t0, 3)}
    if matte is not None:
        summary["matte"] = str(matte)
    return summary
