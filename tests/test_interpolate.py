"""`rgba interpolate`: the semantic motion predictor (shapes, zero-initialised projections, the CLIP
loader), pinned keyframes, the pipeline's reuse of the t2v steps, determinism, the CLI and batch
forms, and `rgba train smp` lowering its loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_wan, tiny_wan, tiny_wan_inputs, write_test_preset
from rgbacli.errors import WeightsError
from rgbacli.models.attention import context_of, processors
from rgbacli.models.semantic_motion import (COND_KEY, ClipImageEncoder, SemanticMotionPredictor, SMPConfig,
                                            attach_smp, dit_sizes, interpolate_embeddings, load_smp, save_smp)
from rgbacli.pipelines.interpolate import InterpolatePipeline, KeyframePins
from rgbacli.seeding import seeded

SMALL = dict(encoder_dim=16, tokens=2, hidden=16, layers=1, heads=2, max_frames=8, encoder_channels=[8, 16])

SMP_SECTION = """
[motion_predictor]
format = "random"
seed = 3
config = {{ encoder_dim = 16, tokens = 2, hidden = 16, layers = 1, heads = 2, max_frames = 8, inner_dim = 16, dit_heads = 2, num_blocks = 2, encoder_channels = [8, 16] }}
{extra}
"""


def smp_preset(folder, name="test-interp", extra=""):
    path = write_test_preset(folder, name)
    path.write_text(path.read_text() + SMP_SECTION.format(extra=extra))
    return path


def small_smp(model, **kw):
    with seeded(0):
        return SemanticMotionPredictor(SMPConfig(**{**SMALL, **dit_sizes(model), **kw}))


def keyframe(x: int, size: int = 16, colour=(1.0, 0.0, 0.0)) -> np.ndarray:
    """(size, size, 4) float32: a disc of radius size/6 at (x, size/2) on transparency."""
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size, 4), np.float32)
    img[(xx - x) ** 2 + (yy - size // 2) ** 2 <= (size / 6) ** 2] = (*colour, 1.0)
    return img


# ----------------------------------------------------------------------------- the predictor


def test_interpolation_of_embeddings_is_linear_with_exact_ends():
    a, b = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    k = interpolate_embeddings(a, b, 5)
    assert k.shape == (2, 5, 3, 5)
    assert torch.equal(k[:, 0], a) and torch.allclose(k[:, -1], b)
    torch.testing.assert_close(k[:, 2], (a + b) / 2)


def test_smp_shapes_and_frame_limit():
    smp = small_smp(tiny_wan())
    a, b = torch.rand(3, 4, 16, 16), torch.rand(3, 4, 16, 16)
    assert smp.encode_images(a).shape == (3, 2, 16)
    assert smp.embed(a, b, 5).shape == (3, 5, 2, 16)  # (B, latent frames, tokens, hidden)
    with pytest.raises(ValueError, match="at most 8 latent frames, not 9"):
        smp.embed(a, b, 9)
    assert len(smp.cross) == 2 and all(torch.count_nonzero(c.to_out.weight) == 0 for c in smp.cross)


@pytest.mark.parametrize("query_pos", [0, 4])
def test_zero_initialised_smp_leaves_the_dit_output_exactly_unchanged(query_pos):
    model = tiny_wan()
    x, t, text = tiny_wan_inputs(b=2, frames=3)
    before = run_wan(model, x, t, text)
    smp = small_smp(model, query_pos=query_pos)
    attachment = attach_smp(model, smp)
    emb = smp.embed(torch.rand(2, 4, 16, 16), torch.rand(2, 4, 16, 16), 3).detach()
    with context_of(model).use(cond={COND_KEY: emb}):
        assert torch.equal(run_wan(model, x, t, text), before)
        with torch.no_grad():
            for c in smp.cross:
                c.to_out.weight.normal_(std=0.1)
        changed = run_wan(model, x, t, text)
    assert not torch.allclose(changed, before)
    attachment.remove()
    assert torch.equal(run_wan(model, x, t, text), before)
    assert all(not hasattr(p, "behaviours") for p in processors(model, "attn2"))  # diffusers' own processor back


def test_smp_refuses_a_dit_of_another_size():
    smp = small_smp(tiny_wan(), num_blocks=3)
    with pytest.raises(WeightsError, match="made for a DiT of width 16, 2 heads, 3 blocks; this one has 16, 2, 2"):
        attach_smp(tiny_wan(), smp)


def test_smp_file_round_trip(tmp_path):
    smp = small_smp(tiny_wan())
    with torch.no_grad():
        smp.cross[0].to_out.weight.normal_()
    save_smp(smp, tmp_path / "smp.safetensors", dtype=torch.float32)
    again = load_smp(tmp_path / "smp.safetensors")
    a, b = torch.rand(1, 4, 16, 16), torch.rand(1, 4, 16, 16)
    smp.eval().requires_grad_(False)
    with torch.no_grad():
        assert torch.equal(again.embed(a, b, 4), smp.embed(a, b, 4))
    assert torch.equal(again.cross[0].to_out.weight, smp.cross[0].to_out.weight)
    from rgbacli.weights.io import save_safetensors

    save_safetensors({"x": torch.zeros(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(WeightsError, match="is not a motion predictor file"):
        load_smp(tmp_path / "plain.safetensors")
    save_smp(smp, tmp_path / "half.safetensors")  # the default: half precision, loaded as float32
    half = load_smp(tmp_path / "half.safetensors")
    assert half.cross[0].to_out.weight.dtype == torch.float32
    torch.testing.assert_close(half.cross[0].to_out.weight, smp.cross[0].to_out.weight, atol=2e-3, rtol=1e-3)


def _tiny_clip(folder):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                             num_attention_heads=2, image_size=32, patch_size=8))
    model.save_pretrained(folder)
    return model.eval()


def test_clip_encoder_loads_from_local_files_and_gives_penultimate_states(tmp_path):
    pytest.importorskip("transformers")
    reference = _tiny_clip(tmp_path / "image_encoder")
    enc = ClipImageEncoder.load(tmp_path / "image_encoder")
    assert (enc.dim, enc.tokens) == (32, 17)
    rgba = torch.rand(2, 4, 40, 40)
    out = enc(rgba)
    assert out.shape == (2, 17, 32)
    x = rgba[:, :3] * rgba[:, 3:] + (1 - rgba[:, 3:])
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x - enc.mean) / enc.std
    with torch.no_grad():
        expected = reference(pixel_values=x, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(out, expected)
    smp = SemanticMotionPredictor(SMPConfig(encoder="clip", encoder_dim=32, tokens=17, hidden=16, layers=1, heads=2,
                                            max_frames=8, inner_dim=16, dit_heads=2, num_blocks=2), enc)
    assert smp.embed(rgba, rgba, 3).shape == (2, 3, 17, 16)
    assert not any(k.startswith("external") or "vision" in k for k in smp.state_dict())  # the tower is not ours to save
    with pytest.raises(WeightsError, match="has no config.json"):
        ClipImageEncoder.load(tmp_path / "missing")


def test_preset_with_clip_image_encoder_builds_the_predictor(tmp_path):
    pytest.importorskip("transformers")
    from rgbacli.engine import Engine

    _tiny_clip(tmp_path / "clip")
    path = write_test_preset(tmp_path, "clip-interp")
    path.write_text(path.read_text() + f"""
[image_encoder]
kind = "clip"
path = "{tmp_path / 'clip'}"

[motion_predictor]
format = "random"
config = {{ encoder = "clip", encoder_dim = 32, tokens = 17, hidden = 16, layers = 1, heads = 2, inner_dim = 16, dit_heads = 2, num_blocks = 2 }}
""")
    smp = Engine(str(path), device="cpu").component("motion_predictor")
    assert smp.embed(torch.rand(1, 4, 16, 16), torch.rand(1, 4, 16, 16), 3).shape == (1, 3, 17, 16)


# ----------------------------------------------------------------------------- pinned keyframes


def test_pins_hold_the_first_and_last_latent_frames():
    z0, z1 = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)  # two copies (alpha tokens)
    noise = torch.randn(1, 4, 10, 3, 3)
    pins = KeyframePins(z0, z1, noise, copies=2)
    x = torch.randn(1, 4, 10, 3, 3)
    out = pins.apply(x, torch.tensor(1.0), torch.tensor(0.0))  # the end of the schedule: the keyframes exactly
    v = out.unflatten(2, (2, 5))
    assert torch.equal(v[:, :, :, 0], z0) and torch.equal(v[:, :, :, -1], z1)
    assert torch.equal(v[:, :, :, 1:4], x.unflatten(2, (2, 5))[:, :, :, 1:4])  # inner frames untouched
    noisy = pins.apply(x, torch.tensor(0.25), torch.tensor(0.75)).unflatten(2, (2, 5))
    torch.testing.assert_close(noisy[:, :, :, 0], 0.75 * noise.unflatten(2, (2, 5))[:, :, :, 0] + 0.25 * z0)
    half = KeyframePins(z0, z1, noise, copies=2, strength=0.5).apply(x, torch.tensor(1.0), torch.tensor(0.0))
    torch.testing.assert_close(half.unflatten(2, (2, 5))[:, :, :, 0], (x.unflatten(2, (2, 5))[:, :, :, 0] + z0) / 2)
    assert torch.equal(KeyframePins(z0, z1, noise, 2, strength=0.0).apply(x, 1.0, 0.0), x)


def test_pinned_endpoints_decode_back_to_the_keyframes_on_the_tiny_model():
    """The shipped tiny model, SMP and guide off (the pins alone): frame 0 and frame T−1 decode back
    to A and B."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling

    engine = Engine("tiny", device="cpu")
    a, b = keyframe(18, 64), keyframe(46, 64)
    p = params_from_sampling(engine.preset.sampling, "a red orb", seed=0, frames=9, steps=6)
    # the decoder's own ends (the default writes A and B themselves: test_exact_keyframes_...)
    out = InterpolatePipeline(engine)(p, a, b, use_smp=False, guide=0.0, exact_keyframes=False).frames.numpy()
    assert out.shape == (9, 64, 64, 4)
    backend = engine.backend
    for frame, key, slack in ((out[0], a, 0.02), (out[-1], b, 0.12)):
        m, k = frame[..., 3] > 0.5, key[..., 3] > 0.5
        assert (m & k).sum() / (m | k).sum() > 0.9
        # the colour within the VAE's own round trip of the keyframe (held still) plus a slack: frame 0
        # is encoded and decoded alone; the last frame is decoded after the in-between ones
        # (measured: 0.10 vs a round trip of 0.10 for A; 0.22 vs 0.13 for B)
        still = torch.from_numpy(key).permute(2, 0, 1)[None, :, None].expand(-1, -1, 5, -1, -1).float()
        with torch.no_grad():
            trip = backend.decode(backend.encode(still))[0, :3, -1].permute(1, 2, 0).numpy()
        assert np.abs(frame[..., :3] - key[..., :3])[k].mean() < np.abs(trip - key[..., :3])[k].mean() + slack


def _square(x: int, size: int = 32, half: int = 4) -> torch.Tensor:
    """(1, 4, size, size) a sharp white square centred at column x."""
    out = torch.zeros(1, 4, size, size)
    out[:, :, size // 2 - half:size // 2 + half, x - half:x + half] = 1.0
    return out


def test_carry_keyframes_writes_the_keyframes_and_carries_their_detail_along_the_track():
    """A blurred decode of a square moving 1 px a frame: the ends become A and B exactly (B over the
    held frames), frame 1 gets A's sharp edges moved 1 px, the middle (beyond the reach) is as
    decoded, and strength 0 changes nothing."""
    from rgbacli.pipelines.interpolate import carry_keyframes

    t, held = 9, 2
    blur = torch.nn.functional.avg_pool2d
    xs = [10 + k for k in range(t - held)] + [10 + t - held - 1] * held  # the last `held` frames hold still
    sharp = torch.cat([_square(x) for x in xs])  # (T, 4, H, W)
    decoded = blur(sharp, 3, 1, 1).permute(0, 2, 3, 1)  # (T, H, W, 4) straight, soft edges
    a, b = _square(xs[0]), _square(xs[-1])
    out = carry_keyframes(decoded, a, b, 1.0, held=held, reach=0.25)
    assert torch.equal(out[0], a[0].permute(1, 2, 0))
    for k in range(t - held, t):
        assert torch.equal(out[k], b[0].permute(1, 2, 0))
    truth1 = sharp[1, 3]
    before, after = (decoded[1, ..., 3] - truth1).abs().mean(), (out[1, ..., 3] - truth1).abs().mean()
    # frame 1 has weight 1 − 1/(0.25·8) = 0.5: half its blur replaced by A's edges moved 1 px (unmoved,
    # they would add error where the square left)
    assert float(after) <= 0.5 * float(before) + 1e-5
    mid = t // 2  # 4: beyond 0.25 · 8 = 2 frames from A and from the held group (7)
    assert torch.equal(out[mid], decoded[mid])
    assert torch.equal(carry_keyframes(decoded, a, b, 0.0, held=held), decoded)
    half = carry_keyframes(decoded, a, b, 0.5, held=held)
    torch.testing.assert_close(half[0, ..., 3], (decoded[0, ..., 3] + a[0, 3]) / 2, atol=1e-5, rtol=0)


def test_exact_keyframes_on_the_tiny_model():
    """By default the written clip starts on A and ends on B exactly (tiny: B over the last 2 frames,
    the last latent frame's group); --no-exact-keyframes keeps the decoder's ends, which the VAE
    blurs; the in-between frames far from the ends are the same clip."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling

    engine = Engine("tiny", device="cpu")
    a, b = keyframe(18, 64), keyframe(46, 64)
    p = params_from_sampling(engine.preset.sampling, "a red orb", seed=0, frames=9, steps=4)
    pipe = InterpolatePipeline(engine)
    exact = pipe(p, a, b, use_smp=False).frames
    decoded = pipe(p, a, b, use_smp=False, exact_keyframes=False).frames
    assert torch.equal(exact[0], torch.from_numpy(a)) and not torch.equal(decoded[0], torch.from_numpy(a))
    for k in (-2, -1):
        assert torch.equal(exact[k], torch.from_numpy(b))
    assert torch.equal(exact[4], decoded[4])


def test_free_keyframes_without_smp_is_exactly_text_to_video(tmp_path):
    """The reused t2v steps: strength 0, no guide and no predictor give the t2v pipeline's clip, bit
    for bit, with the first-order solver the pins need (Euler for the flow presets)."""
    from dataclasses import replace

    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.t2v import TextToRGBAPipeline

    engine = Engine(str(smp_preset(tmp_path)), device="cpu")
    p = params_from_sampling(engine.preset.sampling, "a red orb", seed=5, solver="unipc")
    ours = InterpolatePipeline(engine)(p, keyframe(4), keyframe(12), keyframe_strength=0.0, use_smp=False, guide=0.0)
    assert ours.params.solver == "euler"
    assert torch.equal(ours.frames, TextToRGBAPipeline(engine)(replace(p, solver="euler")).frames)


def test_the_guide_replaces_its_steps_without_running_the_dit_for_them(tmp_path):
    """--guide G skips G of the steps (sampling starts from the guide at the next step's noise
    level): the DiT runs steps·(1 − G) times, and a different clip comes out than from noise."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling

    engine = Engine(str(smp_preset(tmp_path)), device="cpu")
    p = params_from_sampling(engine.preset.sampling, "", seed=1, steps=4)
    calls = []
    hook = engine.backend.transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        frames = {}
        for guide, forwards in ((0.0, 4), (0.5, 2), (1.0, 0)):
            calls.clear()
            frames[guide] = InterpolatePipeline(engine)(p, keyframe(4), keyframe(12), use_smp=False, guide=guide).frames
            assert len(calls) == forwards, guide
    finally:
        hook.remove()
    assert not torch.equal(frames[0.0], frames[0.5]) and not torch.equal(frames[0.5], frames[1.0])


def test_moving_crossfade_guide_slides_the_object_between_the_keyframes():
    """The motion guide: frame 0 is A and the last B exactly; the middle frame holds one object at
    the midpoint of the two alpha centroids (not two half-strength ghosts, as a crossfade would)."""
    from rgbacli.pipelines.interpolate import centroid, moving_crossfade

    a = torch.zeros(1, 4, 32, 32)
    a[:, :, 12:18, 2:8] = 1.0  # a white square on the left (centre x 4.5)
    b = torch.zeros(1, 4, 32, 32)
    b[:, :, 12:18, 22:28] = 1.0  # on the right (centre x 24.5)
    clip = moving_crossfade(a, b, 5)
    assert clip.shape == (1, 4, 5, 32, 32)
    assert torch.allclose(clip[:, :, 0], a) and torch.allclose(clip[:, :, -1], b, atol=1e-6)
    mid = clip[:, 3, 2]
    assert torch.allclose(centroid(mid), torch.tensor([[14.5, 14.5]]), atol=1e-4)
    assert float(mid.max()) > 0.99 and float(mid[0, :, :10].max()) == 0.0  # one whole object, nothing left behind


def test_interpolation_is_deterministic_and_the_smp_acts(tmp_path):
    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling

    engine = Engine(str(smp_preset(tmp_path)), device="cpu")
    p = params_from_sampling(engine.preset.sampling, "", seed=2)
    pipe = InterpolatePipeline(engine)
    one = pipe(p, keyframe(4), keyframe(12))
    two = pipe(p, keyframe(4), keyframe(12))
    off = pipe(p, keyframe(4), keyframe(12), use_smp=False)
    assert one.smp and not off.smp
    assert torch.equal(one.frames, two.frames)
    assert not torch.equal(one.frames, off.frames)
    transformer = engine.backend.transformer
    assert all(not hasattr(p, "behaviours") or not p.behaviours for p in processors(transformer, "attn2"))


# ----------------------------------------------------------------------------- CLI and batch


def _write_keyframes(tmp_path, size=16):
    from rgbacli.media import Clip, write_clip

    for name, x in (("a.png", 4), ("b.png", 12)):
        write_clip(Clip((keyframe(x, size) * 255).astype(np.uint8)[None]), tmp_path / name)


def test_cli_interpolate_writes_a_clip_and_json(cli, tmp_path):
    preset = smp_preset(tmp_path)
    _write_keyframes(tmp_path)
    r = cli("interpolate", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out.mkv", "--preset", preset,
            "--frames", "5", "--json", "--seed", "3")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["frames"] == 5 and doc["size"] == "16x16" and doc["smp"] is True and doc["seed"] == 3
    from rgbacli.media import read_clip

    clip = read_clip(tmp_path / "out.mkv")
    assert clip.frames.shape == (5, 16, 16, 4)
    r2 = cli("interpolate", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "again.mkv", "--preset", preset,
             "--frames", "5", "--seed", "3")
    assert r2.returncode == 0
    np.testing.assert_array_equal(read_clip(tmp_path / "again.mkv").frames, clip.frames)  # same seed, same bytes
    r3 = cli("interpolate", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out.mkv", "--preset", preset)
    assert r3.returncode == 1 and "already exists" in r3.stderr and r3.stderr.count("\n") == 1
    assert doc["exact_keyframes"] is True and doc["endpoint_alpha_iou"] == [1.0, 1.0]
    assert doc["endpoint_rgb_error"] == [0.0, 0.0]
    r4 = cli("interpolate", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "raw.mkv", "--preset", preset,
             "--frames", "5", "--seed", "3", "--no-exact-keyframes", "--json")
    assert r4.returncode == 0, r4.stderr
    raw = json.loads(r4.stdout)
    assert raw["exact_keyframes"] is False and raw["endpoint_rgb_error"][0] > 0
    assert not np.array_equal(read_clip(tmp_path / "raw.mkv").frames[0], clip.frames[0])


@pytest.mark.parametrize("args, code, needle", [
    (["--frames", "2"], 2, "--frames must be at least 3"),
    (["--keyframe-strength", "1.5"], 2, "--keyframe-strength must be between 0 and 1, not 1.5"),
    (["--guide", "-0.1"], 2, "--guide must be between 0 and 1, not -0.1"),
    (["--size", "18x16"], 2, "--size is 18x16: preset 'test-interp' needs width and height that are positive "
                             "multiples of 4"),
    (["--size", "big"], 2, "bad size 'big'"),
])
def test_cli_interpolate_bad_options_are_one_line_and_write_nothing(cli, tmp_path, args, code, needle):
    preset = smp_preset(tmp_path)
    _write_keyframes(tmp_path)
    r = cli("interpolate", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out.mkv", "--preset", preset,
            *args)
    assert r.returncode == code, r.stderr
    assert needle in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out.mkv").exists()


def test_cli_interpolate_bad_keyframes(cli, tmp_path):
    preset = smp_preset(tmp_path)
    _write_keyframes(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    for a, needle in (("missing.png", "missing.png: no such file or directory"),
                      ("broken.png", "broken.png: unreadable or corrupt image")):
        r = cli("interpolate", tmp_path / a, tmp_path / "b.png", "-o", tmp_path / "out.mkv", "--preset", preset)
        assert r.returncode == 1 and needle in r.stderr and r.stderr.count("\n") == 1
    r = cli("interpolate", tmp_path / "a.png", "-o", tmp_path / "out.mkv", "--preset", preset)
    assert r.returncode == 2 and "give keyframes A and B" in r.stderr
    assert not (tmp_path / "out.mkv").exists()


def test_cli_interpolate_batch_through_the_runner(cli, tmp_path):
    preset = smp_preset(tmp_path)
    _write_keyframes(tmp_path)
    items = [{"a": "a.png", "b": "b.png", "prompt": "a red orb", "frames": 5, "output": str(tmp_path / "one.mkv")},
             {"a": "b.png", "b": "a.png", "frames": 3},
             {"a": "a.png"},
             {"a": "a.png", "b": "missing.png"},
             {"a": "a.png", "b": "b.png", "frames": 3, "exact_keyframes": "yes"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    r = cli("interpolate", "--batch", tmp_path / "pairs.jsonl", "-o", str(tmp_path / "out-{index}.mkv"),
            "--preset", preset, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [e["status"] for e in doc["items"]] == ["ok", "ok", "failed", "failed", "failed"]
    assert doc["items"][2]["error"] == "line 3: missing or empty 'b'"
    assert doc["items"][4]["error"] == "line 5: 'exact_keyframes' must be true or false"
    assert "missing.png: no such file or directory" in doc["items"][3]["error"]
    assert (tmp_path / "one.mkv").exists() and (tmp_path / "out-1.mkv").exists()
    assert not (tmp_path / "out-3.mkv").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["ok"] == 2 and manifest["kind"] == "interpolate"
    again = cli("interpolate", "--batch", tmp_path / "pairs.jsonl", "-o", str(tmp_path / "out-{index}.mkv"),
                "--preset", preset, "--json", "--resume")
    assert [e.get("skipped", False) for e in json.loads(again.stdout)["items"][:2]] == [True, True]


# ----------------------------------------------------------------------------- training


def test_a_few_smp_training_steps_lower_its_loss(tmp_path):
    from rgbacli.data import ProceduralDataset
    from rgbacli.engine import Engine
    from rgbacli.train.smp import SMPTrainConfig, encode_keyframe_set, eval_smp_loss, train_smp

    engine = Engine(str(write_test_preset(tmp_path)), device="cpu")
    backend, text = engine.backend, engine.component("text_encoder")
    data = encode_keyframe_set(backend, ProceduralDataset(size=16, frames=5), 8)
    assert data.latents.shape == (8, 4, 3, 8, 8) and data.keyframes.shape == (8, 2, 4, 16, 16)
    smp = small_smp(backend.transformer)
    before = eval_smp_loss(backend, text, smp, data, n=8)
    assert before == pytest.approx(eval_smp_loss(backend, text, None, data, n=8))  # zero-init: the base DiT's loss
    cfg = SMPTrainConfig(steps=40, minutes=5, lr=3e-3, warmup=1, batch=4, ckpt_every=1000)
    result = train_smp(backend, text, smp, data, cfg, tmp_path / "ckpt.safetensors")
    after = eval_smp_loss(backend, text, smp, data, n=8)
    assert result["steps"] == 40 and after < before * 0.97
    assert all(not p.requires_grad for p in backend.transformer.parameters())
    assert all(not hasattr(p, "behaviours") or not p.behaviours for p in processors(backend.transformer, "attn2"))


def test_guided_input_is_the_flow_input_at_zero_share_and_leads_to_the_clip():
    """A guided sample holds `mu` of the guide on the inner frames (the pinned ends stay the clip's),
    its target leads back to the clip (x_t − t·v = z), and at mu 0 it is the plain flow input exactly."""
    from rgbacli.train.flow import noisy_input
    from rgbacli.train.smp import guided_input

    g = torch.Generator().manual_seed(0)
    z, guide, noise = (torch.randn(3, 4, 2 * 5, 2, 2, generator=g) for _ in range(3))  # two copies of 5 frames
    t = torch.tensor([0.7, 0.3, 0.05])
    x0, v0 = noisy_input(z, noise, t)
    x, v = guided_input(z, guide, noise, t, torch.zeros(3), copies=2)
    assert torch.equal(x, x0) and torch.equal(v, v0)
    mu = torch.tensor([1.0, 0.4, 0.0])
    x, v = guided_input(z, guide, noise, t, mu, copies=2)
    tt = t.view(-1, 1, 1, 1, 1)
    assert torch.allclose(x - tt * v, z, atol=1e-5)  # the velocity leads to the clip itself
    clean = (x - tt * noise) / (1 - tt)  # what the noisy sample holds
    for f in (0, 4, 5, 9):  # each copy's pinned first and last frames: the clip's
        assert torch.allclose(clean[:, :, f], z[:, :, f], atol=1e-5)
    assert torch.allclose(clean[0, :, 1:4], guide[0, :, 1:4], atol=1e-5)  # mu 1: the guide
    assert torch.allclose(clean[1, :, 6:9], z[1, :, 6:9] + 0.4 * (guide - z)[1, :, 6:9], atol=1e-5)


def test_guide_share_is_the_path_of_an_exact_sampler_from_the_noised_guide():
    """Euler steps whose velocity leads exactly to the clip, started from the guide noised to the first
    level, hold guide_share(σ) of the guide at every later level σ (what the guided samples train on)."""
    from rgbacli.train.smp import guide_share, guided_levels

    levels = guided_levels(16, 3.0)
    assert len(levels) == 8 and levels[0] == pytest.approx(0.7254, abs=1e-4)  # step 8 of 16, shift 3
    g = torch.Generator().manual_seed(1)
    z, guide, noise = (torch.randn(1, 4, 3, 2, 2, generator=g) for _ in range(3))
    x = levels[0] * noise + (1 - levels[0]) * guide
    for s, s_next in zip(levels, levels[1:]):
        x = x + (s_next - s) * (x - z) / s  # v = (x − z) / σ: the exact prediction of the clip
        mu = float(guide_share(torch.tensor(s_next), levels[0]))
        expected = s_next * noise + (1 - s_next) * (z + mu * (guide - z))
        assert torch.allclose(x, expected, atol=1e-4), s_next
    assert float(guide_share(torch.tensor(levels[0]), levels[0])) == pytest.approx(1.0)


def test_guided_levels_are_the_noise_levels_interpolate_runs_the_dit_at(tmp_path):
    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.train.smp import guided_levels

    engine = Engine(str(smp_preset(tmp_path)), device="cpu")
    p = params_from_sampling(engine.preset.sampling, "", seed=1, steps=6)
    seen = []
    hook = engine.backend.transformer.register_forward_pre_hook(
        lambda m, args, kw: seen.append(float(kw.get("timestep", args[1] if len(args) > 1 else None)[0])),
        with_kwargs=True)
    try:
        InterpolatePipeline(engine)(p, keyframe(4), keyframe(12), guide=0.5)
    finally:
        hook.remove()
    levels = guided_levels(6, p.shift, p.solver, guide=0.5)
    assert len(levels) == 3 and seen == pytest.approx([1000 * s for s in levels], rel=1e-4)


def test_keyframe_set_holds_the_guides_and_an_old_cache_gets_them(tmp_path):
    from rgbacli.data import ProceduralDataset
    from rgbacli.engine import Engine
    from rgbacli.pipelines.interpolate import guide_latents
    from rgbacli.train.smp import KeyframeSet, encode_keyframe_set, keyframe_cache

    engine = Engine(str(write_test_preset(tmp_path)), device="cpu")
    backend = engine.backend
    data = encode_keyframe_set(backend, ProceduralDataset(size=16, frames=5), 3)
    k = data.keyframes[1:2].float() / 255
    assert data.guides.shape == data.latents.shape
    assert torch.allclose(data.guides[1:2], guide_latents(backend, k[:, 0], k[:, 1], 5, 3), atol=1e-5)  # as interpolate does
    assert not torch.equal(data.guides, data.latents)
    path = tmp_path / "smp_latents.safetensors"
    KeyframeSet(data.latents, data.masks, data.keyframes, data.captions).save(path)  # a cache from before guides
    assert KeyframeSet.load(path).guides is None
    again = keyframe_cache(path, backend, 3, 16, 5)
    assert torch.allclose(again.guides, data.guides, atol=1e-6) and torch.equal(again.latents, data.latents)
    assert KeyframeSet.load(path).guides is not None  # written back: encoded once


def test_guided_smp_training_lowers_the_loss_where_interpolate_samples(tmp_path):
    from rgbacli.data import ProceduralDataset
    from rgbacli.engine import Engine
    from rgbacli.train.smp import SMPTrainConfig, encode_keyframe_set, eval_smp_loss, guided_levels, train_smp

    engine = Engine(str(write_test_preset(tmp_path)), device="cpu")
    backend, text = engine.backend, engine.component("text_encoder")
    data = encode_keyframe_set(backend, ProceduralDataset(size=16, frames=5), 8)
    levels = guided_levels(8, 3.0)
    smp = small_smp(backend.transformer)
    before = eval_smp_loss(backend, text, smp, data, n=8, levels=levels)
    assert before != pytest.approx(eval_smp_loss(backend, text, smp, data, n=8))  # another regime than the plain loss
    cfg = SMPTrainConfig(steps=40, minutes=5, lr=3e-3, warmup=1, batch=4, ckpt_every=1000, guided=1.0,
                         guided_levels=levels)
    train_smp(backend, text, smp, data, cfg, tmp_path / "ckpt.safetensors")
    assert eval_smp_loss(backend, text, smp, data, n=8, levels=levels) < before * 0.97


def test_cli_train_smp_reports_plain_and_guided_losses_on_training_and_heldout_clips(tmp_path, cli):
    r = cli("train", "smp", "--out", tmp_path, "--clips", "4", "--steps", "2", "--guided", "0.5", "--json",
            "--threads", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["steps"] == 2 and doc["clips"] == 4 and doc["guided"] == 0.5
    for part in ("", "heldout_"):
        for kind in ("loss", "guided_loss"):
            assert doc[f"eval_{part}{kind}_before"] > 0 and doc[f"eval_{part}{kind}"] > 0
        # the guide's errors are in the guided samples' targets: the base DiT alone does worse there
        assert doc[f"eval_{part}guided_loss_before"] > doc[f"eval_{part}loss_before"]
    smp = load_smp(tmp_path / "smp.safetensors")
    assert smp.config.query_pos == 4 and len(smp.cross) == 6


def test_cli_train_smp_rejects_a_guided_share_outside_0_1(tmp_path, cli):
    r = cli("train", "smp", "--out", tmp_path / "run", "--guided", "1.5")
    assert r.returncode == 2 and r.stderr.strip() == "rgba: error: --guided must be between 0 and 1, not 1.5"
    assert not (tmp_path / "run").exists()


def test_shipped_tiny_smp_fits_the_tiny_dit():
    from rgbacli.engine import Engine

    engine = Engine("tiny", device="cpu")
    smp = engine.component("motion_predictor")
    emb = smp.embed(torch.from_numpy(keyframe(18, 64)).permute(2, 0, 1)[None],
                    torch.from_numpy(keyframe(46, 64)).permute(2, 0, 1)[None], 9)
    assert emb.shape == (1, 9, smp.config.tokens, smp.config.hidden) and torch.isfinite(emb).all()
    attach_smp(engine.backend.transformer, smp).remove()  # sizes match the shipped DiT
    assert any(torch.count_nonzero(c.to_out.weight) > 0 for c in smp.cross)  # trained: no longer the zero init
