"""Looking at transparency: clips over a checkerboard as an H.264 preview or a PNG contact sheet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from rgbacli.errors import UsageError
from rgbacli.fsutil import atomic_output
from rgbacli.media.blend import over_opaque
from rgbacli.media.clip import Clip, to_uint8
from rgbacli.media.write import check_writable, open_writer

LIGHT, DARK = (204, 204, 204), (153, 153, 153)


def checkerboard(width: int, height: int, cell: int = 16, light=LIGHT, dark=DARK) -> np.ndarray:
    """Opaque (H, W, 4) uint8 grey checkerboard, the usual backdrop for showing transparency."""
    yy, xx = np.mgrid[0:height, 0:width]
    board = np.empty((height, width, 4), np.uint8)
    odd = ((yy // cell + xx // cell) % 2).astype(bool)
    board[...] = (*light, 255)
    board[odd] = (*dark, 255)
    return board


def over_checkerboard(frames: np.ndarray, cell: int = 16) -> np.ndarray:
    """(T, H, W, 4) straight-alpha frames flattened over a checkerboard (opaque uint8)."""
    frames = to_uint8(frames)
    board = checkerboard(frames.shape[2], frames.shape[1], cell)
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        out[t] = board
        over_opaque(frame, out[t])
    return out


def write_preview_mp4(clip: Clip, path: str | os.PathLike, *, force: bool = False, cell: int = 16) -> Path:
    """The clip over a checkerboard as H.264 .mp4 (plays anywhere; shows where alpha is)."""
    p = Path(path)
    if p.suffix.lower() not in (".mp4", ".m4v"):
        raise UsageError(f"{p}: a preview is an .mp4 file")
    check_writable(p, force)
    with open_writer(p, fps=clip.fps, force=force) as w:
        for frame in over_checkerboard(clip.frames, cell):
            w.write(frame)
    return p


def write_contact_sheet(clip: Clip, path: str | os.PathLike, *, columns: int = 4, max_frames: int = 16,
                        gap: int = 4, cell: int = 8, force: bool = False) -> Path:
    """A PNG grid of up to `max_frames` evenly spaced frames, each over a checkerboard."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{p}: a contact sheet is a .png file")
    if columns < 1 or max_frames < 1:
        raise UsageError("contact sheet needs columns ≥ 1 and max_frames ≥ 1")
    n = min(max_frames, clip.n_frames)
    picks = np.unique(np.linspace(0, clip.n_frames - 1, n).round().astype(int))
    tiles = over_checkerboard(clip.frames[picks], cell)
    cols = min(columns, len(picks))
    rows = -(-len(picks) // cols)
    h, w = clip.height, clip.width
    sheet = np.full((rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y : y + h, x : x + w] = tile[..., :3]
    with atomic_output(p, force) as tmp:
        Image.fromarray(sheet, "RGB").save(tmp, format="PNG")
    return p
