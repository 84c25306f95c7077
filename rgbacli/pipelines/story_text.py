"""Story files (StoryDiffusion's syntax), parsed without loading any model.

    [Milo] a jellyfish                      defines a character (its first line-start mention)
    // comments and blank lines are ignored
    [Milo] drifting up # Milo wakes up      a panel: names replaced by descriptions, caption after #
    [Milo] drifting left near [Bea]          a panel naming two characters
    [NC] a glowing star # night falls        a panel with no character

A character's *identity panels* are its first `id_length` panels that name it alone; they are
sampled together and define its look (rgbacli/models/consistent_attention.py). Every error is
one `UsageError` line with the line number, raised before anything is generated or written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rgbacli.errors import UsageError

NO_CHARACTER = "NC"
_NAME = r"[A-Za-z][A-Za-z0-9_\- ]{0,39}"
_DEFINITION = re.compile(rf"^\[({_NAME})\](.*)$")
_MENTION = re.compile(rf"\[({_NAME})\]")


@dataclass(frozen=True)
class Character:
    name: str
    description: str
    line: int = 0  # 0: loaded from a character file, not defined in this story


@dataclass(frozen=True)
class Panel:
    index: int
    line: int
    prompt: str  # character names replaced by their descriptions, before any style
    caption: str
    characters: tuple[str, ...]  # in order of mention; () for [NC]


@dataclass
class Story:
    characters: dict[str, Character] = field(default_factory=dict)
    panels: list[Panel] = field(default_factory=list)
    id_length: int = 2

    def identity_panels(self, name: str) -> list[Panel]:
        """The character's first `id_length` panels that name it alone."""
        return [p for p in self.panels if p.characters == (name,)][: self.id_length]

    def new_characters(self) -> list[str]:
        """Characters defined in this story (they get identity panels), in order of definition."""
        return [c.name for c in self.characters.values() if c.line]


def parse_story(text: str, id_length: int = 2, known: dict[str, str] | None = None, where: str = "story") -> Story:
    """Parse a story; `known` maps characters loaded from a character file to their descriptions."""
    if id_length < 1:
        raise UsageError(f"--id-length must be at least 1, not {id_length}")
    story = Story(id_length=id_length)
    for name, description in (known or {}).items():
        story.characters[name] = Character(name, description)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        m = _DEFINITION.match(line)
        if m and m.group(1).strip() != NO_CHARACTER and m.group(1).strip() not in story.characters:
            name, description = m.group(1).strip(), m.group(2).strip()
            if not description:
                raise UsageError(f"{where} line {lineno}: character [{name}] has no description")
            if "#" in description or _MENTION.search(description):
                raise UsageError(f"{where} line {lineno}: the description of [{name}] may not hold '#' or "
                                 "another [Name]")
            story.characters[name] = Character(name, description, lineno)
            continue
        story.panels.append(_panel(line, lineno, len(story.panels), story, where))
    if not story.panels:
        raise UsageError(f"{where} has no panels (only character lines, comments or blank lines)")
    _check_identities(story, where)
    return story


def _panel(line: str, lineno: int, index: int, story: Story, where: str) -> Panel:
    body, caption = (line.rsplit("#", 1) + [""])[:2] if "#" in line else (line, "")
    names: list[str] = []
    nc = False
    for m in _MENTION.finditer(body):
        name = m.group(1).strip()
        if name == NO_CHARACTER:
            nc = True
        elif name not in story.characters:
            raise UsageError(f"{where} line {lineno}: undefined character [{name}] (define it first with a "
                             f"line '[{name}] description')")
        elif name not in names:
            names.append(name)
    if nc and names:
        raise UsageError(f"{where} line {lineno}: [NC] (no character) together with {', '.join(f'[{n}]' for n in names)}")
    prompt = _MENTION.sub(lambda m: "" if m.group(1).strip() == NO_CHARACTER
                          else story.characters[m.group(1).strip()].description, body)
    prompt = " ".join(prompt.split())
    if not prompt:
        raise UsageError(f"{where} line {lineno}: the panel has no text")
    caption = caption.strip() or " ".join(_MENTION.sub(lambda m: m.group(1).strip() if m.group(1).strip() != NO_CHARACTER
                                                       else "", body).split())
    return Panel(index, lineno, prompt, caption, tuple(names))


def _check_identities(story: Story, where: str) -> None:
    for name in story.new_characters():
        ids = story.identity_panels(name)
        if len(ids) < story.id_length:
            raise UsageError(f"{where}: [{name}] (line {story.characters[name].line}) has {len(ids)} panel(s) of "
                             f"its own, --id-length {story.id_length} needs {story.id_length} (add panels that "
                             "name it alone, or lower --id-length)")
        first, last = ids[0].index, ids[-1].index
        for p in story.panels[first:last + 1]:
            if not p.characters:
                raise UsageError(f"{where} line {p.line}: [NC] panel among the first {story.id_length} panels of "
                                 f"[{name}] (lines {ids[0].line}-{ids[-1].line}); move it after them")
