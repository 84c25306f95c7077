"""Comic pages and character sheets from RGBA panels (numpy uint8 (H, W, 4), straight alpha).

Layouts (StoryDiffusion's): `grid`, 2×2 panels a page; `classic`, rows drawn from the patterns
[1, 1, 2] and [1, 1, 2, 2], where 2 is a column of two half-size panels, shuffled by a seed.
Panels are composited over the page background with the exact straight-alpha "over"; captions
are word-wrapped in Pillow's own scalable font on a semi-opaque white box at a panel's foot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rgbacli.errors import UsageError
from rgbacli.media.blend import place
from rgbacli.media.composite import resize_frames

LAYOUTS = ("grid", "classic", "none")
BORDER = 10  # px between panels and around the page
CLASSIC_ROWS = ((1, 1, 2), (1, 1, 2, 2))
ROWS_PER_PAGE = 3


@dataclass
class PagePanel:
    image: np.ndarray  # (H, W, 4) uint8
    caption: str = ""


def scale_for(width: int, minimum: int = 256) -> int:
    """The whole-number zoom that makes a panel at least `minimum` px wide on a page."""
    return max(1, -(-minimum // max(width, 1)))


def zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize an RGBA panel (premultiplied filtering, so transparent colour cannot bleed)."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    return resize_frames(image[None], (max(1, round(w * factor)), max(1, round(h * factor))))[0]


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (a word longer than the width gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def captioned(image: np.ndarray, caption: str) -> np.ndarray:
    """The panel with its caption on a semi-opaque white box along the bottom (centred lines)."""
    if not caption.strip():
        return image
    h, w = image.shape[:2]
    size = max(10, w // 16)
    font = _font(size)
    lines = wrap(caption, font, w - 2 * (size // 2))
    line_h = size + size // 4
    box_h = min(h, line_h * len(lines) + size // 2)
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle([0, h - box_h, w, h], fill=(255, 255, 255, 200))
    y = h - box_h + size // 4
    for line in lines:
        x = (w - font.getlength(line)) / 2
        draw.text((x, y), line, font=font, fill=(0, 0, 0, 255))
        y += line_h
    out = image.copy()
    place(out, np.asarray(overlay), 0, 0)
    return out


def background_canvas(background: np.ndarray | tuple, width: int, height: int) -> np.ndarray:
    """A page canvas: a colour (r, g, b, a), or an image resized to cover the page."""
    if isinstance(background, tuple):
        canvas = np.empty((height, width, 4), np.uint8)
        canvas[:] = background
        return canvas
    img = Image.fromarray(np.ascontiguousarray(background), "RGBA")
    scale = max(width / img.width, height / img.height)
    img = img.resize((max(width, round(img.width * scale)), max(height, round(img.height * scale))),
                     Image.Resampling.LANCZOS)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return np.array(img.crop((left, top, left + width, top + height)))


def grid_pages(panels: list[PagePanel], background, columns: int = 2, rows: int = 2) -> list[np.ndarray]:
    """Pages of `columns × rows` captioned panels (the last page keeps its empty cells)."""
    if not panels:
        return []
    h, w = panels[0].image.shape[:2]
    per_page = columns * rows
    width, height = columns * w + (columns + 1) * BORDER, rows * h + (rows + 1) * BORDER
    pages = []
    for start in range(0, len(panels), per_page):
        canvas = background_canvas(background, width, height)
        for k, panel in enumerate(panels[start:start + per_page]):
            r, c = divmod(k, columns)
            place(canvas, captioned(panel.image, panel.caption), BORDER + c * (w + BORDER), BORDER + r * (h + BORDER))
        pages.append(canvas)
    return pages


def classic_rows(n: int, seed: int) -> list[tuple[int, ...]]:
    """Row patterns covering `n` panels (each 1 takes one panel, each 2 takes two), the last cut short."""
    rng = random.Random(seed)
    rows, left = [], n
    while left > 0:
        pattern = rng.choice(CLASSIC_ROWS)
        row, used = [], 0
        for cell in pattern:
            if used >= left:
                break
            take = min(cell, left - used)
            row.append(take)
            used += take
        rows.append(tuple(row))
        left -= used
    return rows


def classic_pages(panels: list[PagePanel], background, seed: int = 0) -> list[np.ndarray]:
    """Pages of up to ROWS_PER_PAGE rows of classic patterns; a 2 cell stacks two half-size panels."""
    if not panels:
        return []
    h, w = panels[0].image.shape[:2]
    rows = classic_rows(len(panels), seed)
    widest = max(len(r) for r in CLASSIC_ROWS)
    width = widest * w + (widest + 1) * BORDER
    factor = (h - BORDER) / 2 / h  # two half-height panels and a border fill one cell
    pages, it = [], iter(panels)
    for start in range(0, len(rows), ROWS_PER_PAGE):
        page_rows = rows[start:start + ROWS_PER_PAGE]
        height = len(page_rows) * h + (len(page_rows) + 1) * BORDER
        canvas = background_canvas(background, width, height)
        for r, row in enumerate(page_rows):
            y = BORDER + r * (h + BORDER)
            x = BORDER + (width - 2 * BORDER - (len(row) * w + (len(row) - 1) * BORDER)) // 2  # centre short rows
            for cell in row:
                if cell == 1:
                    panel = next(it)
                    place(canvas, captioned(panel.image, panel.caption), x, y)
                else:  # two half-size panels stacked in one column
                    for k in range(cell):
                        panel = next(it)
                        small = captioned(zoom(panel.image, factor), panel.caption)
                        place(canvas, small, x + (w - small.shape[1]) // 2, y + k * (h - small.shape[0]))
                x += w + BORDER
        pages.append(canvas)
    return pages


def make_pages(panels: list[PagePanel], layout: str, background, seed: int = 0) -> list[np.ndarray]:
    """Pages in `layout` (grid, classic or none)."""
    if layout == "grid":
        return grid_pages(panels, background)
    if layout == "classic":
        return classic_pages(panels, background, seed)
    if layout == "none":
        return []
    raise UsageError(f"unknown layout {layout!r} (use {', '.join(LAYOUTS)})")


def character_sheet(images: list[np.ndarray]) -> np.ndarray:
    """A character's identity panels side by side on transparency, BORDER px apart."""
    h = max(i.shape[0] for i in images)
    width = sum(i.shape[1] for i in images) + BORDER * (len(images) - 1)
    sheet = np.zeros((h, width, 4), np.uint8)
    x = 0
    for img in images:
        sheet[: img.shape[0], x:x + img.shape[1]] = img
        x += img.shape[1] + BORDER
    return sheet
