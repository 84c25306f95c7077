"""rgbacli: transparent (RGBA) video from the command line."""

__version__ = "0.1.0"
