"""Procedural subjects as signed-distance fields plus shading, evaluated on whole frame stacks.

Every subject is a function of shape-local coordinates `(u, v)` (v points up, one unit is the
object's radius), time `tau` in [0, 1] and pixels per unit `px`, all broadcast over
`(T, H, W)`. It returns a `Field`: signed distance `d` (negative inside, in units), a
luminance factor for the base colour, a highlight amount (towards white), dark features
(eyes) and an alpha multiplier. Materials turn a Field into RGBA (see procedural.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rgbacli.data.captions import SUBJECTS

N_VARIANTS = 8  # shape variations per subject (ray counts, blob layouts, phases)
_TAU = 2.0 * math.pi


@dataclass
class Field:
    d: np.ndarray
    lum: np.ndarray | float = 1.0
    hi: np.ndarray | float = 0.0
    dark: np.ndarray | float = 0.0
    amul: np.ndarray | float = 1.0


def _len(x, y):
    return np.sqrt(x * x + y * y)


def _smin(a, b, k):
    """Smooth union of two distance fields (blend radius k)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _segment(x, y, ax, ay, bx, by):
    """Distance to the segment a–b."""
    pax, pay, bax, bay = x - ax, y - ay, bx - ax, by - ay
    h = np.clip((pax * bax + pay * bay) / (bax * bax + bay * bay), 0.0, 1.0)
    return _len(pax - bax * h, pay - bay * h)


def _spot(u, v, cx, cy, s):
    return np.exp(-((u - cx) ** 2 + (v - cy) ** 2) * (1.0 / (s * s)))


def _cov(d, px):
    """Anti-aliased coverage of a distance field (about one pixel of ramp)."""
    return np.clip(0.5 - d * px, 0.0, 1.0)


# --- subjects -------------------------------------------------------------------------------


def orb(u, v, tau, px, p):
    r2 = u * u + v * v
    z = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    lam = np.clip(-0.48 * u + 0.58 * v + 0.66 * z, 0.0, 1.0)
    rim = (1.0 - z) ** 4
    hi = 0.85 * _spot(u, v, -0.36, 0.42, 0.2) + 0.2 * rim
    return Field(np.sqrt(r2) - 1.0, 0.3 + 0.85 * lam, hi)


def bubble(u, v, tau, px, p):
    r = _len(u, v)
    swirl = np.sin(3.0 * np.arctan2(u, v) + 4.0 * r + p["phase"])
    lum = 0.95 + 0.12 * swirl
    hi = 0.95 * _spot(u, v, -0.4, 0.45, 0.17) + 0.55 * _spot(u, v, 0.42, -0.38, 0.1)
    hi = hi + 0.35 * np.clip((r - 0.82) / 0.18, 0.0, 1.0) ** 2  # thin bright film at the edge
    return Field(r - 1.0, lum, hi)


def star(u, v, tau, px, p):
    n = 5
    sector = _TAU / n
    ang = np.arctan2(u, v)  # 0 = straight up, so one tip points up
    a = np.mod(ang + sector / 2, sector) - sector / 2
    side = np.sign(a)
    a = np.abs(a)
    r = _len(u, v)
    fx, fy = r * np.cos(a), r * np.sin(a)  # folded: the tip lies on +x at (1, 0)
    ri = p["inner"]
    ix, iy = ri * math.cos(sector / 2), ri * math.sin(sector / 2)
    dist = _segment(fx, fy, 1.0, 0.0, ix, iy)
    inside = (ix - 1.0) * fy - iy * (fx - 1.0) > 0
    d = np.where(inside, -dist, dist) - 0.04
    # two bevelled facets per arm, lit from the upper left
    arm = ang - side * a
    facet = np.sin(arm + side * (math.pi / 2)) * -0.55 + np.cos(arm + side * (math.pi / 2)) * 0.65
    lum = (0.88 + 0.22 * facet) * (0.9 + 0.15 * (1.0 - np.clip(r, 0, 1)))
    hi = 0.35 * _spot(u, v, -0.1, 0.15, 0.25)
    return Field(d, lum, hi)


def heart(u, v, tau, px, p):
    h, cy = 0.62, -0.25
    a = h / math.sqrt(2.0)
    qx = (u + (v - cy)) * (1.0 / math.sqrt(2.0))
    qy = ((v - cy) - u) * (1.0 / math.sqrt(2.0))
    ex, ey = np.abs(qx) - h, np.abs(qy) - h
    box = _len(np.maximum(ex, 0.0), np.maximum(ey, 0.0)) + np.minimum(np.maximum(ex, ey), 0.0)
    lobes = np.minimum(_len(u - a, v - cy - a), _len(u + a, v - cy - a)) - h
    d = np.minimum(box, lobes)
    depth = np.clip(-d / 0.35, 0.0, 1.0)
    lum = (0.82 + 0.2 * v - 0.08 * u) * (0.75 + 0.25 * depth)
    hi = 0.75 * _spot(u, v, -0.48, 0.5, 0.17) + 0.25 * _spot(u, v, 0.5, 0.45, 0.12)
    return Field(d, lum, hi)


def leaf(u, v, tau, px, p):
    bend = p["bend"]
    uu = u - bend * (v * v - 0.5)
    k, r = 0.75, 1.2
    blade = np.maximum(_len(uu - k, v) - r, _len(uu + k, v) - r)
    stem = _segment(u, v, 0.0, -0.85, 0.06, -1.28) - np.maximum(0.05, 0.5 / px)
    d = np.minimum(blade, stem)
    w = np.maximum(0.035, 0.6 / px)
    vein = np.exp(-((uu / w) ** 2)) * (np.abs(v) < 0.9)
    for vi in (-0.5, -0.15, 0.2, 0.5):
        vein = vein + 0.8 * np.exp(-(((v - vi - 0.6 * np.abs(uu)) / w) ** 2)) * (np.abs(uu) < 0.38)
    lum = (0.78 + 0.22 * v + 0.1 * uu) * (1.0 - 0.35 * np.clip(vein, 0.0, 1.0))
    hi = 0.25 * _spot(u, v, -0.22, 0.3, 0.3)
    return Field(d, lum, hi)


def ghost(u, v, tau, px, p):
    t = p["phase"] + _TAU * 2.0 * tau
    uu = u - 0.08 * np.sin(t) * np.clip(0.2 - v, 0.0, None)  # the tail sways
    head = _len(uu, v - 0.2) - 0.78
    hem = -0.92 + 0.12 * np.cos(uu * (_TAU / 0.52) + t)
    body = np.maximum(np.maximum(np.abs(uu) - 0.78, v - 0.2), (hem - v) * 0.8)
    d = np.minimum(head, body)
    eyes = np.minimum(_len((np.abs(u) - 0.28) / 0.13, (v - 0.3) / 0.2) - 1.0, 10.0) * 0.13
    mouth = (_len(u / 0.1, (v + 0.02) / 0.13) - 1.0) * 0.1
    dark = np.maximum(_cov(eyes, px), _cov(mouth, px))
    lum = 0.82 + 0.22 * np.clip(v, -1, 1)
    hi = 0.4 * _spot(u, v, -0.35, 0.65, 0.22)
    return Field(d, lum, hi, dark)


def flame(u, v, tau, px, p):
    t = _TAU * 2.0 * tau + p["phase"]
    c, rb = -0.42, 0.58
    s = np.clip((v - c) / 1.6, 0.0, 1.0)
    sway = 0.17 * s**1.5 * np.sin(3.2 * v - t) + 0.04 * np.sin(9.0 * v - 2.0 * t)
    uu = u - sway
    tip = 1.15 + 0.12 * np.sin(1.5 * t + 1.0)
    base = _len(uu, (v - c) * 1.1) - rb
    s = np.clip((v - c) / (tip - c), 0.0, 1.0)
    lick = 1.0 + 0.18 * np.sin(11.0 * s - 1.7 * t) * s  # flickering tongues along the sides
    width = rb * (1.0 - s) ** 1.25 * lick
    taper = np.maximum((np.abs(uu) - width) * 0.75, v - tip)
    d = np.where(v < c, base, np.minimum(base, taper))
    core = np.clip(1.0 - (uu / 0.26) ** 2 - ((v - c - 0.02) / 0.45) ** 2, 0.0, 1.0)
    lum = 0.75 + 0.45 * s
    return Field(d, lum, 0.7 * core + 0.1 * (1.0 - s))


def smoke(u, v, tau, px, p):
    grow = 1.0 + 0.12 * tau
    d = None
    for bx, by, br in p["blobs"]:
        bd = _len(u - bx * grow, v - by * grow) - br * grow
        d = bd if d is None else _smin(d, bd, 0.12)
    depth = np.clip(-d / 0.4, 0.0, 1.0)
    lum = (0.8 + 0.22 * np.clip(v, -1, 1)) * (0.85 + 0.15 * depth)
    return Field(d, lum, 0.15 * _spot(u, v, -0.3, 0.45, 0.35))


def spark(u, v, tau, px, p):
    n = p["rays"]
    sector = _TAU / n
    ang = np.arctan2(u, v) + p["phase"]
    idx = np.floor((ang + sector / 2) / sector)
    a = ang - idx * sector
    r = _len(u, v)
    fx, fy = r * np.cos(a), r * np.sin(a)
    length = (0.98 + 0.06 * np.sin(_TAU * 3.0 * tau + p["phase"])) * np.where(np.mod(idx, 2) == 0, 1.0, 0.72)
    along = np.clip((fx - 0.25) / (length - 0.25), 0.0, 1.0)
    w = np.maximum(0.1 * (1.0 - along) + 0.025, 0.45 / px)
    ray = _segment(fx, fy, 0.25, 0.0, length, 0.0) - w
    tip = _len(fx - length - 0.12, fy) - np.maximum(0.07, 0.6 / px)
    d = np.minimum(np.minimum(ray, tip), r - 0.22)
    return Field(d, 1.0, 0.75 * np.exp(-r / 0.22))


def jellyfish(u, v, tau, px, p):
    t = _TAU * 2.0 * tau + p["phase"]
    pulse = np.sin(t)
    rx, ry = 1.0 + 0.06 * pulse, 0.9 - 0.05 * pulse
    un = u / rx
    ell = (_len(un, v / ry) - 1.0) * np.minimum(rx, ry)
    under = -0.03 + 0.24 * np.clip(1.0 - un * un, 0.0, None) + 0.04 * np.cos(un * (5.0 * math.pi))
    bell = np.maximum(ell, under - v)
    v0, length = 0.15, p["length"]
    along = np.clip((v0 - v) / (v0 + length), 0.0, 1.0)
    minw = 0.5 / px
    tent = None
    for i, x0 in enumerate(np.linspace(-0.68, 0.68, p["tentacles"])):
        x = x0 * rx * (1.0 + 0.2 * along) + 0.17 * along * np.sin(4.5 * (v0 - v) - 1.5 * t + p["offsets"][i])
        w = np.maximum(0.06 * (1.0 - 0.6 * along), minw)
        di = np.maximum(np.abs(u - x) * 0.85 - w, -length - v)
        tent = di if tent is None else np.minimum(tent, di)
    arm_len = 0.6 * length
    for x0 in (-0.16, 0.16):
        x = x0 + 0.08 * np.sin(3.5 * (v0 - v) - 1.2 * t + 10 * x0)
        w = np.maximum(0.1 + 0.035 * np.sin(18.0 * v + 10 * x0), minw)
        tent = np.minimum(tent, np.maximum(np.abs(u - x) * 0.85 - w, -arm_len - v))
    tent = np.maximum(tent, v - v0)
    d = np.minimum(bell, tent)
    on_bell = bell <= tent
    inner = np.clip(1.0 - _len(un / 0.55, (v - 0.32) / 0.38), 0.0, 1.0)
    lum = np.where(on_bell, 0.78 + 0.3 * np.clip(v, 0.0, 1.0), 1.05)
    hi = 0.3 * inner * on_bell + 0.6 * _spot(u, v, -0.38, 0.62, 0.18)
    return Field(d, lum, hi, 0.0, np.where(on_bell, 1.0, 0.8))


SHAPES = {
    "jellyfish": jellyfish, "bubble": bubble, "orb": orb, "star": star, "heart": heart,
    "leaf": leaf, "ghost": ghost, "flame": flame, "smoke": smoke, "spark": spark,
}
assert set(SHAPES) == set(SUBJECTS)


@lru_cache(maxsize=None)
def variant_params(subject: str, variant: int) -> dict:
    """Deterministic per-variant shape parameters (ray counts, blob layout, wave phases)."""
    rng = np.random.default_rng([SUBJECTS.index(subject), int(variant), 7])
    p = {"phase": float(rng.uniform(0, _TAU))}
    if subject == "star":
        p["inner"] = float(rng.uniform(0.42, 0.52))
    elif subject == "leaf":
        p["bend"] = float(rng.uniform(-0.15, 0.15))
    elif subject == "spark":
        p["rays"] = int(rng.choice([8, 10, 12]))
    elif subject == "jellyfish":
        p["tentacles"] = int(rng.integers(4, 7))
        p["length"] = float(rng.uniform(1.15, 1.45))
        p["offsets"] = tuple(float(x) for x in rng.uniform(0, _TAU, 6))
    elif subject == "smoke":
        # a cartoon puff: a flat-ish row of lobes with bigger lobes on top
        base = [(-0.55, -0.22, 0.4), (0.0, -0.28, 0.44), (0.55, -0.2, 0.4), (-0.25, 0.22, 0.5), (0.3, 0.2, 0.46)]
        if rng.random() < 0.5:
            base.append((0.02, 0.5, 0.36))
        arr = np.array(base) + rng.uniform(-0.07, 0.07, (len(base), 3))
        bx, by, radii = arr[:, 0], arr[:, 1], arr[:, 2]
        w = radii**2
        bx, by = bx - (bx * w).sum() / w.sum(), by - (by * w).sum() / w.sum()
        p["blobs"] = tuple((float(x), float(y), float(r)) for x, y, r in zip(bx, by, radii))
    return p


@lru_cache(maxsize=None)
def calibration(subject: str, variant: int) -> tuple[float, float, float]:
    """(cu, cv, reach): the shape's coverage centroid (averaged over the clip) and the distance
    from it to the farthest covered point. Shapes are drawn re-centred on the centroid so the
    ground-truth track is the alpha centroid; `reach` sizes the evaluation window."""
    n = 161
    g = np.linspace(-2.6, 2.6, n, dtype=np.float32)
    px = np.float32((n - 1) / 5.2)
    u, v = g[None, None, :], -g[None, :, None]
    tau = np.linspace(0.0, 1.0, 4, dtype=np.float32)[:, None, None]
    f = SHAPES[subject](u, v, tau, px, variant_params(subject, variant))
    cov = np.broadcast_to(_cov(f.d, px), (4, n, n))
    total = cov.sum()
    cu = float((cov * u).sum() / total)
    cv = float((cov * v).sum() / total)
    covered = cov.max(axis=0) > 0.01
    uu, vv = np.broadcast_to(u[0], (n, n)), np.broadcast_to(v[0], (n, n))
    reach = float(np.sqrt((uu[covered] - cu) ** 2 + (vv[covered] - cv) ** 2).max()) + 0.15
    return cu, cv, reach
