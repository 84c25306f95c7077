"""Training data: procedural RGBA clips with captions and ground truth, and user clip folders."""

from rgbacli.data.captions import (
    COLORS,
    COLOURS,
    MATERIALS,
    MOTIONS,
    SPEEDS,
    SUBJECTS,
    Colour,
    caption_for,
    caption_vocabulary,
)
from rgbacli.data.folder import FolderDataset
from rgbacli.data.procedural import (
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    HELDOUT_SEED_BASE,
    ClipSpec,
    ObjectSpec,
    ProceduralDataset,
    Sample,
    make_clip,
    motion_path,
    render,
    sample_spec,
)

__all__ = [
    "COLORS", "COLOURS", "MATERIALS", "MOTIONS", "SPEEDS", "SUBJECTS", "Colour", "caption_for",
    "caption_vocabulary", "FolderDataset", "DEFAULT_FPS", "DEFAULT_FRAMES", "DEFAULT_SIZE",
    "HELDOUT_SEED_BASE", "ClipSpec", "ObjectSpec", "ProceduralDataset", "Sample", "make_clip",
    "motion_path", "render", "sample_spec",
]
