"""Word lists, the colour table and caption phrasing for procedural clips.

Everything the generator can say lives here, so the tiny text encoder's vocabulary
(`caption_vocabulary()`) is exactly the set of words it will see in training.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass

import numpy as np

SUBJECTS = ("jellyfish", "bubble", "orb", "star", "heart", "leaf", "ghost", "flame", "smoke", "spark")
MATERIALS = ("glass", "solid", "glowing", "smoky")
MOTIONS = ("up", "down", "left", "right", "spin", "pulse", "bounce", "still")
SPEEDS = ("slow", "normal", "fast")


@dataclass(frozen=True)
class Colour:
    """A named colour: straight RGB in [0, 1] and its hue in degrees (None for white)."""

    name: str
    rgb: tuple[float, float, float]

    @property
    def hue(self) -> float | None:
        h, _l, s = colorsys.rgb_to_hls(*self.rgb)
        return None if s < 0.15 else round(h * 360.0, 1)


# The quality benchmark checks the hue of generated objects against this table.
COLOURS: dict[str, Colour] = {
    c.name: c
    for c in (
        Colour("red", (0.92, 0.12, 0.10)),
        Colour("orange", (1.00, 0.52, 0.08)),
        Colour("yellow", (1.00, 0.86, 0.10)),
        Colour("green", (0.16, 0.80, 0.22)),
        Colour("cyan", (0.08, 0.84, 0.92)),
        Colour("blue", (0.14, 0.30, 0.98)),
        Colour("purple", (0.60, 0.20, 0.92)),
        Colour("pink", (1.00, 0.42, 0.72)),
        Colour("white", (0.96, 0.96, 0.96)),
    )
}
COLORS = COLOURS  # US spelling alias

SUBJECT_WORDS: dict[str, tuple[str, ...]] = {
    "jellyfish": ("jellyfish",),
    "bubble": ("bubble", "soap bubble"),
    "orb": ("orb", "sphere", "ball"),
    "star": ("star",),
    "heart": ("heart",),
    "leaf": ("leaf",),
    "ghost": ("ghost",),
    "flame": ("flame", "fire"),
    "smoke": ("smoke puff", "puff of smoke", "cloud of smoke"),
    "spark": ("spark burst", "burst of sparks", "firework"),
}

# "" means the material word may be left out (solid is the default reading).
MATERIAL_WORDS: dict[str, tuple[str, ...]] = {
    "glass": ("glass", "translucent", "transparent", "see-through"),
    "solid": ("", "", "solid", "opaque"),
    "glowing": ("glowing", "luminous", "neon", "shining"),
    "smoky": ("smoky", "wispy", "misty", "hazy"),
}

MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "up": ("drifting upward", "drifting up", "floating up", "floating upward", "rising", "moving up",
           "moving upward"),
    "down": ("drifting downward", "drifting down", "sinking", "falling", "moving down",
             "moving downward", "sinking down"),
    "left": ("drifting to the left", "floating to the left", "moving to the left", "moving left",
             "sliding left", "drifting left", "floating left"),
    "right": ("drifting to the right", "floating to the right", "moving to the right", "moving right",
              "sliding right", "drifting right", "floating right"),
    "spin": ("spinning", "rotating", "spinning around", "turning in place", "twirling"),
    "pulse": ("pulsing", "pulsating", "growing and shrinking", "swelling and shrinking"),
    "bounce": ("bouncing", "bouncing up and down", "hopping", "hopping up and down"),
    # "" = no motion phrase at all: a caption without a motion means a still object.
    "still": ("", "", "", "staying still", "hovering in place", "resting in place", "standing still",
              "not moving"),
}

SPEED_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("slowly", "gently", "lazily"),
    "normal": ("",),
    "fast": ("quickly", "rapidly", "fast", "swiftly"),
}

PREFIXES = ("", "", "", "", "", "video of ", "a clip of ", "animation of ")
JOINERS = (" and ", " and ", " with ", ", and ", " next to ")

# Common words the generator never uses: the tokenizer drops these silently instead of warning.
STOPWORDS = frozenset(
    "this these those its it at on into over under some very are by from for background "
    "alpha".split()
)

_VOWEL = re.compile(r"^[aeiou]")


def article(word: str) -> str:
    """'an' before a vowel sound, else 'a' (good enough for our word list)."""
    return "an" if _VOWEL.match(word) else "a"


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def noun_phrase(obj, rng: np.random.Generator, with_article: bool = True) -> str:
    """'a glass blue jellyfish', 'an orange orb', 'a red heart made of glass', …"""
    colour = obj.colour
    material = _pick(rng, MATERIAL_WORDS[obj.material])
    subject = _pick(rng, SUBJECT_WORDS[obj.subject])
    if obj.material == "glass" and rng.random() < 0.15:
        words = f"{colour} {subject} made of glass"
    elif material and rng.random() < 0.3:
        words = f"{colour} {material} {subject}"
    else:
        words = f"{material} {colour} {subject}".strip()
    return f"{article(words)} {words}" if with_article else words


def motion_phrase(obj, rng: np.random.Generator) -> str:
    """'slowly drifting upward', 'spinning quickly', '' (still, no phrase), …"""
    motion = _pick(rng, MOTION_WORDS[obj.motion])
    if not motion:
        return ""
    speed = _pick(rng, SPEED_WORDS[obj.speed]) if obj.motion != "still" else ""
    if not speed:
        return motion
    return f"{speed} {motion}" if rng.random() < 0.5 else f"{motion} {speed}"


def object_phrase(obj, rng: np.random.Generator, with_article: bool = True) -> str:
    np_ = noun_phrase(obj, rng, with_article)
    mo = motion_phrase(obj, rng)
    if not mo:
        return np_
    r = rng.random()
    if r < 0.1:
        return f"{np_} that is {mo}"
    if r < 0.2:
        return f"{np_}, {mo}"
    return f"{np_} {mo}"


def caption_for(spec, rng: np.random.Generator) -> str:
    """A caption describing every object of `spec` (subject, colour, material, motion, speed)."""
    objs = spec.objects
    if len(objs) == 1:
        with_article = rng.random() < 0.8
        text = object_phrase(objs[0], rng, with_article)
        if with_article and rng.random() < 0.15 and text.startswith(("a ", "an ")):
            mo = motion_phrase(objs[0], rng)
            if mo:  # "a blue orb is bouncing"
                text = f"{noun_phrase(objs[0], rng)} is {mo}"
    else:
        text = _pick(rng, JOINERS).join(object_phrase(o, rng) for o in objs)
    prefix = _pick(rng, PREFIXES)
    return (prefix + text).strip()


def _phrases(*tables) -> list[str]:
    """Every non-empty phrase of the tables, longest first (so "drifting to the left" beats "left")."""
    out = {p for table in tables for options in table.values() for p in options if p}
    return sorted(out, key=lambda p: (-len(p), p))


# Which phrases say each attribute; `leave_out` removes them from a caption.
ATTRIBUTE_PHRASES: dict[str, list[str]] = {
    "colour": sorted(COLOURS, key=lambda p: (-len(p), p)),
    "material": ["made of glass", *_phrases(MATERIAL_WORDS)],
    "motion": _phrases(MOTION_WORDS, SPEED_WORDS),
}
_ATTRIBUTE_RE = {
    name: re.compile(r"(?:,\s*|\bthat is |\bis )?\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b")
    for name, phrases in ATTRIBUTE_PHRASES.items()
}


def leave_out(caption: str, attributes) -> str:
    """The caption without the words of the named attributes ("colour", "material", "motion").

    Generated captions always name colour and material and usually motion, but people write
    "a glass jellyfish". Training on captions with some of these left out teaches the model that an
    unnamed attribute means any value, instead of giving it a prompt shape it never saw.
    """
    for name in attributes:
        caption = _ATTRIBUTE_RE[name].sub("", caption)
    caption = re.sub(r"\s+", " ", caption).strip(" ,")
    return re.sub(r"\b(?:a|an) ([a-z])", lambda m: f"{article(m.group(1))} {m.group(1)}", caption)


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z]+", text.lower()) if w]


def caption_vocabulary() -> list[str]:
    """Every word a generated caption can contain, sorted (the text encoder's vocabulary)."""
    words: set[str] = set(COLOURS)
    for table in (SUBJECT_WORDS, MATERIAL_WORDS, MOTION_WORDS, SPEED_WORDS):
        for options in table.values():
            for phrase in options:
                words.update(_words(phrase))
    for phrase in (*PREFIXES, *JOINERS, "a an made of glass that is"):
        words.update(_words(phrase))
    return sorted(words)
