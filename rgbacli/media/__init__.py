"""RGBA media: read/write transparent clips in many formats, composite them, preview them.

Frames are numpy (T, H, W, 4), uint8 or float32 in [0, 1], straight (unassociated) alpha.
See docs/media.md for formats, conventions and the API table.
"""

from rgbacli.media.clip import Clip, premultiply, to_float, to_uint8, unpremultiply
from rgbacli.media.color import parse_color
from rgbacli.media.composite import Layer, composite_clip, over, run_composite
from rgbacli.media.formats import FORMATS, Format, matte_path
from rgbacli.media.preview import checkerboard, write_contact_sheet, write_preview_mp4
from rgbacli.media.read import FrameSource, open_frames, read_clip
from rgbacli.media.write import open_writer, write_clip, write_matte

__all__ = [
    "Clip", "Format", "FORMATS", "FrameSource", "Layer",
    "checkerboard", "composite_clip", "matte_path", "open_frames", "open_writer", "over", "parse_color",
    "premultiply", "read_clip", "run_composite", "to_float", "to_uint8", "unpremultiply", "write_clip",
    "write_contact_sheet", "write_matte", "write_preview_mp4",
]
