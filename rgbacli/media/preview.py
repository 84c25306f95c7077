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


# Requested paths are drawn in yellow, realised (alpha-centroid) tracks in red.
PATH_COLOUR, TRACK_COLOUR = (255, 214, 0), (230, 30, 40)


def centroid_tracks(alpha: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
    """Alpha-weighted centroid (N, T, 2) x/y per frame (pixel column j has x = j). With requested
    ``paths`` (N, T, 2) each pixel counts for the object whose requested point is nearest that frame
    (one object: the whole frame); a frame without alpha repeats the previous centroid (or the path)."""
    alpha = np.asarray(alpha, np.float64)
    t, h, w = alpha.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    n = 1 if paths is None else len(paths)
    out = np.zeros((n, t, 2))
    for f in range(t):
        if n == 1:
            owners = np.zeros((h, w), int)
        else:
            d = [(xx - p[f, 0]) ** 2 + (yy - p[f, 1]) ** 2 for p in paths]
            owners = np.argmin(np.stack(d), axis=0)
        for k in range(n):
            a = alpha[f] * (owners == k)
            s = a.sum()
            if s > 1e-6:
                out[k, f] = (a * xx).sum() / s, (a * yy).sum() / s
            else:
                out[k, f] = out[k, f - 1] if f else (paths[k, 0] if paths is not None else (w / 2, h / 2))
    return out


def draw_tracks(frames: np.ndarray, tracks, upto: int | None = None) -> np.ndarray:
    """Opaque (T, H, W, C) uint8 frames with polylines drawn: ``tracks`` is [(points (T, 2), colour)];
    frame t shows each line up to its point t (``upto`` fixes that frame for every image)."""
    from PIL import ImageDraw

    out = np.array(frames, copy=True)
    for t in range(len(out)):
        img = Image.fromarray(out[t])
        draw = ImageDraw.Draw(img)
        end = t if upto is None else upto
        for points, colour in tracks:
            pts = [(float(x), float(y)) for x, y in np.asarray(points)[: end + 1]]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=1)
            if pts:
                x, y = pts[-1]
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], outline=colour)
        out[t] = np.asarray(img)
    return out


def write_preview_mp4(clip: Clip, path: str | os.PathLike, *, force: bool = False, cell: int = 16,
                      tracks=None) -> Path:
    """The clip over a checkerboard as H.264 .mp4 (plays anywhere; shows where alpha is); ``tracks``
    [(points (T, 2), colour)] are drawn over it (:func:`draw_tracks`)."""
    p = Path(path)
    if p.suffix.lower() not in (".mp4", ".m4v"):
        raise UsageError(f"{p}: a preview is an .mp4 file")
    check_writable(p, force)
    board = over_checkerboard(clip.frames, cell)
    if tracks:
        board = draw_tracks(board, tracks)
    with open_writer(p, fps=clip.fps, force=force) as w:
        for frame in board:
            w.write(frame)
    return p


def write_contact_sheet(clip: Clip, path: str | os.PathLike, *, columns: int = 4, max_frames: int = 16,
                        gap: int = 4, cell: int = 8, force: bool = False, tracks=None) -> Path:
    """A PNG grid of up to `max_frames` evenly spaced frames, each over a checkerboard (``tracks`` drawn
    up to each tile's frame)."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{p}: a contact sheet is a .png file")
    if columns < 1 or max_frames < 1:
        raise UsageError("contact sheet needs columns ≥ 1 and max_frames ≥ 1")
    n = min(max_frames, clip.n_frames)
    picks = np.unique(np.linspace(0, clip.n_frames - 1, n).round().astype(int))
    tiles = over_checkerboard(clip.frames[picks], cell)
    if tracks:
        tiles = np.stack([draw_tracks(tiles[i:i + 1], tracks, upto=int(f))[0] for i, f in enumerate(picks)])
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
