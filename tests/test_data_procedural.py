"""Procedural RGBA data: determinism, ground truth, alpha properties, captions, splits."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from rgbacli.data import (
    COLOURS,
    HELDOUT_SEED_BASE,
    MOTIONS,
    SUBJECTS,
    ClipSpec,
    ObjectSpec,
    ProceduralDataset,
    caption_for,
    caption_vocabulary,
    make_clip,
    sample_spec,
)
from rgbacli.data.captions import (ATTRIBUTE_PHRASES, MATERIAL_WORDS, MOTION_WORDS, STOPWORDS, SUBJECT_WORDS,
                                   leave_out)


def _one(subject="orb", material="solid", colour="red", motion="still", speed="normal", **kw):
    kw.setdefault("radius", 0.14)
    kw.setdefault("pos", (0.5, 0.5))
    return ClipSpec((ObjectSpec(subject, material, colour, motion, speed, **kw),))


def _centroid(mask):
    """(T, 2) alpha-weighted (x, y) in pixel-index units."""
    t, h, w = mask.shape
    total = mask.sum(axis=(1, 2))
    x = (mask * np.arange(w)[None, None, :]).sum(axis=(1, 2)) / total
    y = (mask * np.arange(h)[None, :, None]).sum(axis=(1, 2)) / total
    return np.stack([x, y], axis=1)


def test_shapes_and_dtypes():
    s = make_clip(3)
    n = len(s.objects)
    assert s.rgba.shape == (17, 64, 64, 4) and s.rgba.dtype == np.float32
    assert s.masks.shape == (n, 17, 64, 64) and s.track.shape == (n, 17, 2)
    assert s.fps == 8 and s.seed == 3
    small = make_clip(3, size=32, frames=5)
    assert small.rgba.shape == (5, 32, 32, 4)
    assert make_clip(3, frames=1).rgba.shape == (1, 64, 64, 4)


def test_deterministic_per_seed():
    a, b, c = make_clip(11), make_clip(11), make_clip(12)
    assert np.array_equal(a.rgba, b.rgba) and a.caption == b.caption
    assert np.array_equal(a.track, b.track) and np.array_equal(a.masks, b.masks)
    assert a.objects == b.objects
    assert not np.array_equal(a.rgba, c.rgba) or a.caption != c.caption


def test_alpha_range_soft_edges_and_straight_colour():
    empty = []
    for seed in range(20):
        s = make_clip(seed)
        assert np.isfinite(s.rgba).all()
        assert s.rgba.min() >= 0.0 and s.rgba.max() <= 1.0
        a = s.rgba[..., 3]
        assert (a > 0.99).any() or s.objects[0].material != "solid" or len(s.objects) > 1
        assert ((a > 0.02) & (a < 0.98)).any(), "no soft edge / semi-transparent pixels"
        empty.append((a == 0).mean())
        # straight alpha: fully transparent pixels carry no colour
        assert np.all(s.rgba[..., :3][a == 0] == 0)
    assert min(empty) > 0.05 and np.mean(empty) > 0.4, "background should be transparent"


@pytest.mark.parametrize("subject", ["orb", "star", "heart", "leaf", "ghost", "jellyfish", "bubble", "spark", "flame"])
def test_track_is_alpha_centroid_for_solid_objects(subject):
    for motion in ("right", "up", "spin", "pulse", "bounce"):
        if motion == "spin" and subject in ("orb", "bubble"):
            continue
        s = make_clip(0, spec=_one(subject, "solid", "green", motion, radius=0.12))
        err = np.linalg.norm(_centroid(s.masks[0]) - s.track[0], axis=1)
        assert err.max() < 1.0, f"{subject}/{motion}: centroid off by {err.max():.2f}px"


@pytest.mark.parametrize("motion,axis,sign", [("up", 1, -1), ("down", 1, 1), ("left", 0, -1), ("right", 0, 1)])
def test_direction_words_match_displacement(motion, axis, sign):
    for speed in ("slow", "normal", "fast"):
        s = make_clip(1, spec=_one("star", "solid", "blue", motion, speed, radius=0.1))
        disp = s.track[0, -1] - s.track[0, 0]
        assert np.sign(disp[axis]) == sign
        assert abs(disp[axis]) > 5 * abs(disp[1 - axis])
        # the rendered mask moves the same way
        c = _centroid(s.masks[0])
        assert np.sign(c[-1, axis] - c[0, axis]) == sign
    travel = {sp: abs(np.diff(make_clip(1, spec=_one("star", "solid", "blue", motion, sp, radius=0.1)).track[0, [0, -1], axis])[0])
              for sp in ("slow", "normal", "fast")}
    assert travel["slow"] < travel["normal"] < travel["fast"]
    assert travel["normal"] >= 24.0, "normal-speed travel must stay learnable at 64 px"


def test_still_has_no_displacement_and_bounce_moves():
    s = make_clip(5, spec=_one("ghost", "solid", "white", "still"))
    assert np.abs(s.track[0] - s.track[0, 0]).max() < 1e-4
    c = _centroid(s.masks[0])
    assert np.abs(c - c[0]).max() < 1.0
    b = make_clip(5, spec=_one("orb", "solid", "red", "bounce", radius=0.1))
    assert np.ptp(b.track[0, :, 1]) > 20 and np.ptp(b.track[0, :, 0]) < 1e-4


def test_spin_and_pulse_change_the_object():
    spin = make_clip(2, spec=_one("star", "solid", "yellow", "spin"))
    assert np.abs(spin.masks[0, 0] - spin.masks[0, 2]).mean() > 0.01
    pulse = make_clip(2, spec=_one("orb", "solid", "yellow", "pulse"))
    area = pulse.masks[0].sum(axis=(1, 2))
    assert area.max() / area.min() > 1.8


def test_translucent_materials_have_lower_alpha_than_solid():
    def mean_alpha(subject, material):
        s = make_clip(4, spec=_one(subject, material, "cyan", "still", radius=0.18))
        solid = make_clip(4, spec=_one(subject, "solid", "cyan", "still", radius=0.18))
        inside = solid.masks[0] > 0.5
        return s.masks[0][inside].mean()

    assert mean_alpha("bubble", "glass") < 0.75
    assert mean_alpha("ghost", "glass") < 0.75
    assert mean_alpha("orb", "smoky") < 0.85
    assert mean_alpha("orb", "solid") > 0.95
    glow = make_clip(4, spec=_one("orb", "glowing", "cyan", "still", radius=0.15))
    solid = make_clip(4, spec=_one("orb", "solid", "cyan", "still", radius=0.15))
    assert (glow.masks[0] > 0.05).sum() > 1.3 * (solid.masks[0] > 0.05).sum(), "glow needs a halo"


def test_colour_table_hues():
    hues = {name: c.hue for name, c in COLOURS.items()}
    assert hues["white"] is None
    assert hues["red"] < 10 and 20 < hues["orange"] < 40 and 45 < hues["yellow"] < 65
    assert 100 < hues["green"] < 140 and 170 < hues["cyan"] < 200 and 215 < hues["blue"] < 240
    assert 260 < hues["purple"] < 290 and 310 < hues["pink"] < 345


def test_rendered_colour_follows_the_table():
    for name in ("red", "green", "blue", "yellow"):
        s = make_clip(0, spec=_one("heart", "solid", name, "still", radius=0.18))
        a = s.rgba[..., 3] > 0.9
        mean = s.rgba[..., :3][a].mean(axis=0)
        assert np.argmax(mean) == np.argmax(COLOURS[name].rgb) or name == "yellow"


def test_captions_mention_subject_colour_motion():
    for seed in range(300):
        s = make_clip(seed, size=16, frames=2)
        cap = s.caption
        words = set(re.split(r"[^a-z]+", cap))
        for o in s.objects:
            assert o.colour in words, cap
            assert any(w in cap for w in SUBJECT_WORDS[o.subject]), cap
            if o.material != "solid":
                assert any(w in cap for w in MATERIAL_WORDS[o.material] if w), cap
            if o.motion != "still":
                assert any(w in cap for w in MOTION_WORDS[o.motion] if w), cap


def test_two_object_captions_describe_both():
    rng = np.random.default_rng(0)
    for _ in range(50):
        spec = sample_spec(rng, n_objects=2)
        a, b = spec.objects
        assert (a.subject, a.colour) != (b.subject, b.colour)
        cap = caption_for(spec, rng)
        assert a.colour in cap and b.colour in cap
    s = make_clip(0, spec=spec)
    assert s.masks.shape[0] == 2 and s.track.shape[0] == 2


def test_leave_out_removes_exactly_the_named_attributes():
    """Short captions ("a glass jellyfish"): the named attribute's words go, the subject stays."""
    for seed in range(300):
        s = make_clip(seed, size=16, frames=2)
        no_colour = leave_out(s.caption, ["colour"])
        no_rest = leave_out(s.caption, ["material", "motion"])
        for o in s.objects:
            assert any(w in no_colour for w in SUBJECT_WORDS[o.subject]), (s.caption, no_colour)
            assert o.colour not in set(re.split(r"[^a-z]+", no_colour)), no_colour
            assert o.colour in no_rest, (s.caption, no_rest)
            assert not any(re.search(rf"\b{re.escape(p)}\b", no_rest)
                           for p in ATTRIBUTE_PHRASES["material"] + ATTRIBUTE_PHRASES["motion"]), no_rest
        assert "  " not in no_colour and not no_rest.endswith((",", " is", " that"))
    assert leave_out("an opaque red heart that is spinning quickly", ["material", "motion"]) == "a red heart"
    assert leave_out("a yellow orb drifting to the left", ["colour"]) == "an orb drifting to the left"
    assert leave_out("a blue orb is bouncing", ["motion"]) == "a blue orb"
    assert leave_out("a red heart made of glass, slowly drifting left", ["material", "motion"]) == "a red heart"


def test_caption_words_are_all_in_the_vocabulary():
    vocab = set(caption_vocabulary())
    assert not (vocab & STOPWORDS)
    seen = set()
    for seed in range(2000):
        rng = np.random.default_rng(seed)
        cap = caption_for(sample_spec(rng), rng)
        seen.update(w for w in re.split(r"[^a-z]+", cap.lower()) if w)
    assert seen <= vocab, seen - vocab
    assert len(vocab - seen) <= 3, f"vocabulary words never generated: {vocab - seen}"


def test_spec_sampling_covers_everything():
    rng = np.random.default_rng(1)
    objs = [o for _ in range(600) for o in sample_spec(rng).objects]
    assert {o.subject for o in objs} == set(SUBJECTS)
    assert {o.motion for o in objs} == set(MOTIONS)
    assert {o.colour for o in objs} == set(COLOURS)


def test_heldout_split_is_disjoint():
    train = ProceduralDataset("train", length=1000)
    held = ProceduralDataset("heldout", length=1000)
    assert max(train.seed(i) for i in range(len(train))) < HELDOUT_SEED_BASE
    assert min(held.seed(i) for i in range(len(held))) >= HELDOUT_SEED_BASE
    assert len(ProceduralDataset("train")) == HELDOUT_SEED_BASE
    with pytest.raises(ValueError):
        ProceduralDataset("train", length=10, base=HELDOUT_SEED_BASE - 5)
    with pytest.raises(ValueError):
        ProceduralDataset("test")
    with pytest.raises(IndexError):
        train[1000]
    assert train[3].seed == 3 and held[3].seed == HELDOUT_SEED_BASE + 3


def test_collate_batches_video_tensors():
    ds = ProceduralDataset("train", length=4, size=32, frames=5)
    batch = ProceduralDataset.collate([ds[i] for i in range(3)])
    assert tuple(batch["video"].shape) == (3, 4, 5, 32, 32)
    assert len(batch["captions"]) == 3 and batch["seeds"] == [0, 1, 2]


def test_invalid_spec_rejected():
    with pytest.raises(ValueError, match="unknown colour"):
        ObjectSpec("orb", "solid", "mauve", "still")


def test_generation_is_fast():
    make_clip(0)
    t = time.perf_counter()
    for seed in range(50):
        make_clip(seed)
    per_clip = (time.perf_counter() - t) / 50
    assert per_clip < 0.05, f"{per_clip * 1000:.1f} ms per clip"
