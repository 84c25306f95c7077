"""Time: which source frame each output frame shows (fps resampling, start offset, loop/hold)."""

from __future__ import annotations

import math
from typing import Iterable, Literal

import numpy as np

Fit = Literal["loop", "hold"]
FITS = ("loop", "hold")
_EPS = 1e-6  # absorbs float error in t·src/out so exact multiples land on their frame


def source_index(t: int, n_src: int, src_fps: float, out_fps: float, start: int = 0, fit: Fit = "loop") -> int | None:
    """Source frame shown at output frame t, or None before `start`.

    Resampling picks the source frame on screen at the output frame's timestamp
    (t / out_fps); past the end the source loops or holds its last frame. Stills show frame 0.
    """
    local = t - start
    if local < 0:
        return None
    if n_src == 1:
        return 0
    s = math.floor(local * src_fps / out_fps + _EPS)
    if s < n_src:
        return s
    return s % n_src if fit == "loop" else n_src - 1


def length_in_output(n_src: int, src_fps: float, out_fps: float) -> int:
    """How many output frames a clip of n_src frames spans at out_fps (a still spans one)."""
    if n_src <= 1:
        return 1
    return max(1, math.ceil(n_src * out_fps / src_fps - _EPS))


class Track:
    """One lazily decoded input on the output timeline (a layer or the background).

    Frames are pulled forward from `frames` as the timeline needs them and cached, because a
    track that ends before the output does loops over (or holds) what it has shown. The
    frame count is learned when the iterator runs out, unless given.
    """

    def __init__(self, frames: Iterable[np.ndarray], src_fps: float, out_fps: float, *, start: int = 0,
                 fit: Fit = "loop", n_frames: int | None = None, keep: bool = True):
        self.it = iter(frames)
        self.src_fps, self.out_fps, self.start, self.fit = src_fps, out_fps, start, fit
        self.n: int | None = None
        self.n_hint = n_frames
        self.cache: list[np.ndarray | None] = []
        self.keep = keep  # False when this track can never loop: only its newest frame is kept

    def _raw(self, t: int) -> int:
        return math.floor((t - self.start) * self.src_fps / self.out_fps + _EPS)

    def _pull(self, s: int) -> bool:
        """Decode up to source frame s; False (and n learned) if the source ends first."""
        while self.n is None and len(self.cache) <= s:
            try:
                frame = next(self.it)
            except StopIteration:
                self.n = len(self.cache)
                return False
            if not self.keep and self.cache:
                self.cache[-1] = None  # only the newest frame is still needed
            self.cache.append(frame)
        return s < len(self.cache)

    def declared_end(self) -> int | None:
        """Output frame where this track's own frames end, from the declared count (None: unknown)."""
        n = self.n if self.n is not None else self.n_hint
        return None if n is None else self.start + length_in_output(n, self.src_fps, self.out_fps)

    def length(self) -> int | None:
        """Output frames spanned from `start` (None while the source is still being read)."""
        return None if self.n is None else length_in_output(self.n, self.src_fps, self.out_fps)

    def ended(self, t: int) -> bool:
        """True when output frame t is past this track's own frames (looping/holding from here)."""
        if t < self.start:
            return False
        raw = self._raw(t)
        if self.n is None:
            self._pull(raw)
        if self.n is None:
            return False
        return t - self.start >= length_in_output(self.n, self.src_fps, self.out_fps)

    def frame(self, t: int) -> np.ndarray | None:
        """The frame this track shows at output frame t (None before its start)."""
        if t < self.start:
            return None
        if self.n is None:
            self._pull(self._raw(t))
        if self.n == 0:
            return None
        s = source_index(t, self.n if self.n is not None else len(self.cache), self.src_fps, self.out_fps,
                         self.start, self.fit) if self.n is not None else self._raw(t)
        frame = self.cache[s]
        if frame is None:
            # Declared longer than it really was (a header that over-promised by a frame or
            # two), so frames that were not kept are needed for a loop: hold the last one.
            frame = self.cache[-1]
        return frame

    def release(self) -> None:
        """Stop caching past frames: this track will never loop (e.g. the longest background)."""
        if self.keep:
            self.keep = False
            for i in range(len(self.cache) - 1):
                self.cache[i] = None


def plan_caching(tracks: list[Track]) -> None:
    """Let tracks that can never loop drop old frames (saves memory and page faults).

    With every length declared, the output ends at the latest track end; a track that reaches
    it never loops, and one that holds needs only its last frame. Unknown lengths keep all.
    """
    ends = [tr.declared_end() for tr in tracks]
    if any(e is None for e in ends):
        return
    last = max(ends)
    for tr, end in zip(tracks, ends):
        if end >= last or tr.fit == "hold":
            tr.keep = False
