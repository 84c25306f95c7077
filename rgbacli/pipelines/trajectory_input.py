"""Trajectories for `rgba generate --trajectory/--path`: parsing, resampling, scaling (no torch: batch
planning uses it).

Input forms (each object one path):
- Tora's text file: one ``x,y`` per line on a 256×256 canvas (blank lines and ``#`` comments skipped);
- JSON: ``{"canvas": [w, h], "objects": [[[x, y], ...], ...]}``, or without ``canvas`` points
  normalised to 0–1; a point may carry a frame index as a third value ``[x, y, frame]``;
- ``--path "x1,y1 x2,y2 ..."`` in output pixels.

Each path is resampled to the clip's frame count (Tora's rule, :func:`rgbacli.models.tora.resample_points`;
with frame indices: linear between keyed frames, held before the first and after the last) and
scaled to the output size. The methods (rgbacli/pipelines/trajectory.py): ``tora`` (the preset's
trained `trajectory` adapter) and ``noise`` (Wan-Alpha v2's noise-mean shift, training-free).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from rgbacli.errors import UsageError

TORA_CANVAS = (256.0, 256.0)
MAX_OBJECTS = {"tora": 4, "noise": 4, "tora+noise": 4}
METHODS = ("tora", "noise", "tora+noise")  # tora+noise: the adapter, sampling from the path-shifted noise
ADAPTER_METHODS = {"tora", "tora+noise"}  # those that put motion latents in cond (and take --trajectory-guidance)
NOISE_METHODS = {"noise", "tora+noise"}  # those that shift the initial noise along the paths
DEFAULT_NOISE_SHIFT = 0.05  # Wan-Alpha v2's README value; a preset may set sampling.trajectory_shift
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+|nan|inf|infinity)(?:[eE][-+]?\d+)?"
_POINT = re.compile(rf"\s*({_NUM})\s*[, ]\s*({_NUM})\s*", re.IGNORECASE)


@dataclass
class Trajectory:
    """One object's path as given: points (N, 2) on ``canvas`` (w, h), optional frame index per point."""

    points: list[tuple[float, float]]
    canvas: tuple[float, float]
    source: str
    frames: list[int] | None = None

    def check(self) -> None:
        if len(self.points) < 2:
            raise UsageError(f"{self.source}: a trajectory needs at least 2 points, got {len(self.points)}")
        w, h = self.canvas
        for i, (x, y) in enumerate(self.points):
            if not (math.isfinite(x) and math.isfinite(y)):
                raise UsageError(f"{self.source}: point {i + 1} ({x}, {y}) is not a finite number")
            if not (0 <= x <= w and 0 <= y <= h):
                raise UsageError(f"{self.source}: point {i + 1} ({x:g}, {y:g}) is outside the {w:g}x{h:g} canvas")
        if self.frames is not None:
            if any(b <= a for a, b in zip(self.frames, self.frames[1:])):
                raise UsageError(f"{self.source}: frame indices must increase")
            if self.frames[0] < 0:
                raise UsageError(f"{self.source}: frame indices must be 0 or more")

    def to_output(self, frames: int, width: int, height: int) -> list[list[float]]:
        """(frames, 2) points in output pixels (pixel column j has x = j)."""
        self.check()
        if self.frames is None:
            out = resample_points(self.points, frames)
        else:
            out = []
            keys = self.frames
            for t in range(frames):
                t = min(max(t, keys[0]), keys[-1])
                j = next(i for i in range(1, len(keys)) if t <= keys[i] or i == len(keys) - 1)
                f = (t - keys[j - 1]) / (keys[j] - keys[j - 1])
                (x0, y0), (x1, y1) = self.points[j - 1], self.points[j]
                out.append((x0 + f * (x1 - x0), y0 + f * (y1 - y0)))
        sx, sy = width / self.canvas[0], height / self.canvas[1]
        return [[x * sx, y * sy] for x, y in out]


def resample_points(points, frames: int) -> list[tuple[float, float]]:
    """Tora's rule (sat/utils/flow_utils.py), N points → `frames` points:

    - at least as many points as frames: every ``N // frames``-th point, the last point kept as the
      last frame;
    - fewer: the ``frames − N`` extra points spread over the ``N − 1`` segments (earlier segments take
      the remainder), each segment linearly interpolated. Tora truncates interpolated points to
      integers on its 256 canvas; here they stay floats (sub-pixel paths at 64 px)."""
    points = [(float(x), float(y)) for x, y in points]
    n = len(points)
    if n < 2:
        raise ValueError("a trajectory needs at least 2 points")
    if frames < 1:
        raise ValueError("frames must be at least 1")
    if frames == 1:
        return points[:1]
    if n >= frames:
        return points[:: n // frames][: frames - 1] + points[-1:]
    extra, segments = frames - n, n - 1
    per = [extra // segments + (1 if i < extra % segments else 0) for i in range(segments)]
    out = []
    for i in range(segments):
        (x0, y0), (x1, y1) = points[i], points[i + 1]
        out.append(points[i])
        k = per[i]
        out += [(x0 + (j + 1) / (k + 1) * (x1 - x0), y0 + (j + 1) / (k + 1) * (y1 - y0)) for j in range(k)]
    return out + points[-1:]


def _number_pair(text: str, where: str) -> tuple[float, float]:
    m = _POINT.fullmatch(text)
    if not m:
        raise UsageError(f"{where}: expected 'x,y', got {text.strip()[:40]!r}")
    return float(m.group(1)), float(m.group(2))


def parse_tora_text(text: str, source: str) -> Trajectory:
    """Tora's format: one ``x,y`` per line on a 256×256 canvas."""
    points = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            points.append(_number_pair(line, f"{source} line {lineno}"))
    traj = Trajectory(points, TORA_CANVAS, source)
    traj.check()
    return traj


def parse_json(text: str, source: str) -> list[Trajectory]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{source} line {e.lineno}: invalid JSON ({e.msg})") from None
    return trajectories_from_json(doc, source)


def trajectories_from_json(doc, source: str) -> list[Trajectory]:
    """``{"canvas": [w, h], "objects": [...]}``, ``{"objects": ...}`` normalised, or a bare list of objects."""
    if isinstance(doc, list):
        doc = {"objects": doc}
    if not isinstance(doc, dict) or "objects" not in doc:
        raise UsageError(f"{source}: expected {{\"objects\": [[[x, y], ...], ...]}}")
    unknown = sorted(set(doc) - {"canvas", "objects"})
    if unknown:
        raise UsageError(f"{source}: unknown key '{unknown[0]}' (use canvas, objects)")
    canvas = doc.get("canvas", [1.0, 1.0])
    try:
        cw, ch = (float(v) for v in canvas)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: canvas must be [width, height]") from None
    if not (cw > 0 and ch > 0 and math.isfinite(cw) and math.isfinite(ch)):
        raise UsageError(f"{source}: canvas must be positive, got {canvas}")
    objects = doc["objects"]
    if not isinstance(objects, list) or not objects:
        raise UsageError(f"{source}: 'objects' must be a non-empty list of point lists")
    out = []
    for k, obj in enumerate(objects):
        where = f"{source} object {k + 1}"
        if not isinstance(obj, list):
            raise UsageError(f"{where}: expected a list of [x, y] points")
        points, frames = [], []
        for i, p in enumerate(obj):
            if not isinstance(p, (list, tuple)) or len(p) not in (2, 3) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in p):
                raise UsageError(f"{where} point {i + 1}: expected [x, y] or [x, y, frame], got {json.dumps(p)[:40]}")
            points.append((float(p[0]), float(p[1])))
            frames.append(p[2] if len(p) == 3 else None)
        if any(f is not None for f in frames) and any(f is None for f in frames):
            raise UsageError(f"{where}: give a frame index for every point or for none")
        if frames and frames[0] is not None:
            if any(float(f) != int(f) for f in frames):
                raise UsageError(f"{where}: frame indices must be whole numbers")
            keyed = [int(f) for f in frames]
        else:
            keyed = None
        traj = Trajectory(points, (cw, ch), where, keyed)
        traj.check()
        out.append(traj)
    return out


def load_trajectory_file(path: str) -> list[Trajectory]:
    """A Tora text file (one object) or a JSON file (one or more objects)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UsageError(f"trajectory file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read trajectory file {path}: {getattr(e, 'strerror', None) or e}") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        return parse_json(text, path)
    return [parse_tora_text(text, path)]


def parse_path_option(text: str, width: int, height: int) -> Trajectory:
    """``--path "x1,y1 x2,y2 ..."`` in output pixels."""
    parts = [t for t in re.split(r"\s+", text.strip()) if t]
    points = [_number_pair(t, f"--path point {i + 1}") for i, t in enumerate(parts)]
    traj = Trajectory(points, (float(width), float(height)), "--path")
    traj.check()
    return traj


def item_trajectories(value, where: str) -> list[Trajectory]:
    """A batch item's ``trajectory``: a file, a list of files, or an inline JSON document."""
    if isinstance(value, str):
        return load_trajectory_file(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [t for v in value for t in load_trajectory_file(v)]
    if isinstance(value, (dict, list)):
        return trajectories_from_json(value, where)
    raise UsageError(f"{where}: expected a file name, a list of file names or {{\"objects\": ...}}")


def resolve(trajectories: list[Trajectory], frames: int, width: int, height: int, method: str) -> list[list]:
    """Every object's path in output pixels, (objects, frames, 2), checked against the method's limit."""
    limit = MAX_OBJECTS[method]
    if len(trajectories) > limit:
        raise UsageError(f"{len(trajectories)} trajectories given; --trajectory-method {method} supports at most {limit}")
    return [t.to_output(frames, width, height) for t in trajectories]


def choose_method(preset, method: str | None) -> str:
    """``tora`` where the preset has a trajectory adapter (the default there), ``noise`` for Wan-family
    presets; anything else is one line naming the preset."""
    adapters = [a.get("kind") for a in preset.components.get("transformer", {}).get("adapters", [])]
    has_tora = "trajectory" in adapters
    has_noise = preset.family == "wan"
    if method is not None and method not in METHODS:
        raise UsageError(f"unknown --trajectory-method {method!r} (choose from {', '.join(METHODS)})")
    if method is None:
        method = "tora" if has_tora else "noise" if has_noise else None
    if method is None:
        raise UsageError(f"preset '{preset.name}' has no trajectory method (no trajectory adapter; the noise method "
                         "needs a Wan preset)")
    if method in ADAPTER_METHODS and not has_tora:
        raise UsageError(f"preset '{preset.name}' has no trajectory adapter: use --trajectory-method noise or a preset "
                         "with one (tiny, tora-cogvideox-5b)")
    if method in NOISE_METHODS and not has_noise:
        raise UsageError(f"--trajectory-method noise needs a Wan preset, not '{preset.name}' ({preset.family})")
    return method
