"""Parse colours given on the command line (`#RRGGBB[AA]`, `#RGB`, or a small set of names)."""

from __future__ import annotations

from rgbacli.errors import UsageError

NAMED_COLORS: dict[str, tuple[int, int, int, int]] = {
    "black": (0, 0, 0, 255),
    "white": (255, 255, 255, 255),
    "red": (255, 0, 0, 255),
    "green": (0, 128, 0, 255),
    "lime": (0, 255, 0, 255),
    "blue": (0, 0, 255, 255),
    "yellow": (255, 255, 0, 255),
    "cyan": (0, 255, 255, 255),
    "magenta": (255, 0, 255, 255),
    "orange": (255, 165, 0, 255),
    "purple": (128, 0, 128, 255),
    "gray": (128, 128, 128, 255),
    "grey": (128, 128, 128, 255),
    "transparent": (0, 0, 0, 0),
}
# CSS colour names: "green" is (0, 128, 0); "lime" is pure (0, 255, 0).


def parse_color(text: str) -> tuple[int, int, int, int]:
    """`#RRGGBB`, `#RRGGBBAA`, `#RGB` or a name from NAMED_COLORS → (r, g, b, a) uint8 values."""
    s = text.strip().lower()
    if s in NAMED_COLORS:
        return NAMED_COLORS[s]
    if s.startswith("#"):
        h = s[1:]
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        if len(h) in (6, 8):
            try:
                values = [int(h[i : i + 2], 16) for i in range(0, len(h), 2)]
            except ValueError:
                values = None
            if values is not None:
                return tuple(values + [255] * (4 - len(values)))  # type: ignore[return-value]
    names = ", ".join(sorted(NAMED_COLORS))
    raise UsageError(f"unknown colour {text!r} (use #RRGGBB, #RRGGBBAA or one of: {names})")


def looks_like_color(text: str) -> bool:
    """True for `#…` strings and known colour names (so a BG argument can be a colour or a file)."""
    s = text.strip().lower()
    return s.startswith("#") or s in NAMED_COLORS
