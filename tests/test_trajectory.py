"""Trajectories (#19): parsing and Tora's resampling, motion maps, the fusers and their key layout,
the noise shift, batch items and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import run_wan, tiny_wan, tiny_wan_inputs, write_test_preset
from rgbacli.errors import UsageError, WeightsError
from rgbacli.models.attention import context_of
from rgbacli.models.noise_shift import path_mask, shift_noise
from rgbacli.models.tora import (COLORWHEEL, ToraAdapter, attach_tora, dense_flow, flow_to_rgb, motion_sigma,
                                 sparse_flow)
from rgbacli.pipelines.trajectory_input import (choose_method, load_trajectory_file, parse_path_option,
                                                parse_tora_text, resample_points, resolve, trajectories_from_json)
from rgbacli.presets import load_preset


# --------------------------------------------------------------------------- resampling (Tora's rules)
def test_more_points_than_frames_stride_subsample_keeping_the_last():
    pts = [(i, 2 * i) for i in range(20)]
    # 20 // 5 = stride 4: points 0, 4, 8, 12, then the last point (19) as the last frame
    assert resample_points(pts, 5) == [(0, 0), (4, 8), (8, 16), (12, 24), (19, 38)]
    assert resample_points(pts, 20) == [(float(i), 2.0 * i) for i in range(20)]


def test_fewer_points_than_frames_interpolate_with_earlier_segments_taking_the_remainder():
    # 3 points → 8 frames: 5 extra points over 2 segments, 3 on the first, 2 on the second
    out = resample_points([(0, 0), (8, 0), (8, 6)], 8)
    assert out == [(0, 0), (2, 0), (4, 0), (6, 0), (8, 0), (8, 2), (8, 4), (8, 6)]


def test_points_are_scaled_from_the_tora_canvas_to_the_output():
    traj = parse_tora_text("0,128\n256,128\n", "t.txt")
    out = traj.to_output(3, 64, 32)
    assert out == [[0.0, 16.0], [32.0, 16.0], [64.0, 16.0]]


def test_json_canvas_normalised_and_frame_indices(tmp_path):
    f = tmp_path / "two.json"
    f.write_text(json.dumps({"canvas": [100, 50], "objects": [[[0, 0], [100, 50]], [[50, 25, 0], [50, 0, 4]]]}))
    a, b = load_trajectory_file(str(f))
    assert a.to_output(3, 200, 100) == [[0, 0], [100, 50], [200, 100]]
    # keyed frames: linear between frame 0 and 4, held after the last key
    assert [p[1] for p in b.to_output(6, 100, 50)] == [25.0, 18.75, 12.5, 6.25, 0.0, 0.0]
    (n,) = trajectories_from_json({"objects": [[[0.25, 0.5], [0.75, 0.5]]]}, "x")
    assert n.to_output(2, 64, 64) == [[16.0, 32.0], [48.0, 32.0]]


def test_path_option_is_in_output_pixels():
    assert parse_path_option("8,32 56,32", 64, 64).to_output(3, 64, 64) == [[8, 32], [32, 32], [56, 32]]


@pytest.mark.parametrize("text, message", [
    ("10,10\n", "t.txt: a trajectory needs at least 2 points, got 1"),
    ("10,10\nnan,3\n", "t.txt: point 2 (nan, 3.0) is not a finite number"),
    ("10,10\n20,inf\n", "t.txt: point 2 (20.0, inf) is not a finite number"),
    ("10,10\n300,20\n", "t.txt: point 2 (300, 20) is outside the 256x256 canvas"),
    ("10,10\n# ok\n\n12;x\n", "t.txt line 4: expected 'x,y', got '12;x'"),
])
def test_every_bad_tora_file_is_one_line(text, message):
    with pytest.raises(UsageError) as e:
        parse_tora_text(text, "t.txt")
    assert str(e.value) == message


@pytest.mark.parametrize("doc, message", [
    ({"objects": [[[0.1, 0.1], [1.5, 0.2]]]}, "j object 1: point 2 (1.5, 0.2) is outside the 1x1 canvas"),
    ({"objects": [[[0.1, 0.1], [0.2]]]}, "j object 1 point 2: expected [x, y] or [x, y, frame], got [0.2]"),
    ({"objects": [[[0.1, 0.1, 0], [0.2, 0.2]]]}, "j object 1: give a frame index for every point or for none"),
    ({"objects": [[[0.1, 0.1, 3], [0.2, 0.2, 1]]]}, "j object 1: frame indices must increase"),
    ({"canvas": [0, 5], "objects": [[[0, 0], [0, 1]]]}, "j: canvas must be positive, got [0, 5]"),
    ({"objects": []}, "j: 'objects' must be a non-empty list of point lists"),
    ({"objs": []}, "j: expected {\"objects\": [[[x, y], ...], ...]}"),
])
def test_every_bad_json_is_one_line(doc, message):
    with pytest.raises(UsageError) as e:
        trajectories_from_json(doc, "j")
    assert str(e.value) == message


def test_too_many_objects_and_presets_without_a_method():
    many = [parse_path_option("1,1 2,2", 64, 64)] * 5
    with pytest.raises(UsageError, match="5 trajectories given; --trajectory-method tora supports at most 4"):
        resolve(many, 17, 64, 64, "tora")
    with pytest.raises(UsageError, match="preset 'transpixar-cogvideox-5b' has no trajectory method"):
        choose_method(load_preset("transpixar-cogvideox-5b"), None)
    with pytest.raises(UsageError, match="preset 'wan-alpha-14b' has no trajectory adapter"):
        choose_method(load_preset("wan-alpha-14b"), "tora")
    assert choose_method(load_preset("wan-alpha-14b"), None) == "noise"
    assert choose_method(load_preset("tora-cogvideox-5b"), None) == "tora"
    with pytest.raises(UsageError, match="unknown --trajectory-method 'magic'"):
        choose_method(load_preset("tiny"), "magic")
    assert choose_method(load_preset("tiny"), "tora+noise") == "tora+noise"
    with pytest.raises(UsageError, match="preset 'wan-alpha-14b' has no trajectory adapter"):
        choose_method(load_preset("wan-alpha-14b"), "tora+noise")
    with pytest.raises(UsageError, match="--trajectory-method noise needs a Wan preset, not 'tora-cogvideox-5b'"):
        choose_method(load_preset("tora-cogvideox-5b"), "tora+noise")


# --------------------------------------------------------------------------- motion maps
def test_single_moving_point_gives_its_displacement_and_colour():
    track = torch.tensor([[10.0 + 3 * i, 20.0] for i in range(4)])  # 3 px right per frame
    flow = sparse_flow([track], 32, 48, sigma=2.0)
    assert flow.shape == (4, 2, 32, 48)
    assert torch.all(flow[0] == 0)
    for i in range(3):  # at frame i+1 the pixel of point i holds p_{i+1} − p_i (Gaussian centre weight 1)
        assert flow[i + 1, :, 20, 10 + 3 * i].tolist() == [3.0, 0.0]
        assert flow[i + 1, 0, 20, 10 + 3 * i + 2] == pytest.approx(3 * math.exp(-0.5))  # one σ away
    rgb = flow_to_rgb(flow)
    # rightward motion at the clip's max norm: atan2(−0, −1) = −π → the wheel's first colour, red (as
    # torchvision's flow_to_image); zero motion → white
    assert rgb[1, :, 20, 10].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert COLORWHEEL[0].tolist() == [255.0, 0.0, 0.0] and COLORWHEEL[-1].tolist() == [255.0, 0.0, 43.0]
    assert rgb[0].min() == 1.0 and rgb[1, :, 0, 40].tolist() == [1.0, 1.0, 1.0]
    # half the max displacement: halfway to white
    half = flow_to_rgb(torch.stack([flow[1], flow[1] / 2]))
    assert half[1, :, 20, 10].tolist() == pytest.approx([1.0, 0.5, 0.5])


def test_upward_motion_colour_and_dense_flow():
    flow = torch.zeros(2, 2, 4, 4)
    flow[1, 1] = -1.0  # up (y decreases)
    # atan2(1, 0)/π = 0.5 → fk = 0.75·54 = 40.5: halfway between wheel colours 40 and 41
    expected = (COLORWHEEL[40] + COLORWHEEL[41]) / 2 / 255
    assert flow_to_rgb(flow)[1, :, 0, 0].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    masks = torch.zeros(1, 3, 8, 8)
    masks[0, :, 2:4, 2:4] = 1
    tracks = torch.tensor([[[3.0, 3.0], [5.0, 4.0], [5.0, 4.0]]])
    d = dense_flow(masks, tracks)
    assert d[1, :, 2, 2].tolist() == [2.0, 1.0] and d[1, :, 6, 6].tolist() == [0.0, 0.0] and torch.all(d[2] == 0)


def test_sigma_scales_from_tora_and_keeps_one_latent_cell():
    assert motion_sigma(480, 720) == pytest.approx(10.0)
    assert motion_sigma(960, 1440) == pytest.approx(20.0)
    assert motion_sigma(64, 64, spatial_factor=4) == 4.0


# --------------------------------------------------------------------------- extractor and fusers
def _motion(b=2, frames=3, seed=5):
    return torch.randn(b, 4, frames, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_zero_initialised_fusers_leave_the_output_unchanged_exactly():
    model = tiny_wan()
    x, t, ctx = tiny_wan_inputs()
    before = run_wan(model, x, t, ctx)
    adapter, attachment = attach_tora(model, latent_channels=4, channels=8, nums_rb=2)
    assert len(adapter.fuser) == 2 and len(adapter.traj_extractor.body) == 4
    with context_of(model).use(cond={"motion": _motion()}):
        assert torch.equal(run_wan(model, x, t, ctx), before)
    for fuser in adapter.fuser:  # trained fusers move it; no motion in cond leaves it as it was
        torch.nn.init.normal_(fuser.flow_gamma_temporal.weight, std=0.1)
        torch.nn.init.normal_(fuser.flow_beta_temporal.weight, std=0.1)
    with context_of(model).use(cond={"motion": _motion()}):
        moved = run_wan(model, x, t, ctx)
    assert (moved - before).abs().max() > 1e-3
    assert torch.equal(run_wan(model, x, t, ctx), before)
    attachment.remove()
    with context_of(model).use(cond={"motion": _motion()}):
        assert torch.equal(run_wan(model, x, t, ctx), before)


def test_trajectory_guidance_plan_and_the_passes_without_the_adapter():
    """λJ adds one pass, the conditional one with the fusers off (per sample: its own rows of the batch),
    and combines as ε + (λJ − 1)(ε − ε_∅J) on top of text CFG."""
    from rgbacli.pipelines.guidance import GuidancePlan

    assert GuidancePlan.build(5.0, None, 1.0) == GuidancePlan.build(5.0)  # λJ = 1: no extra pass
    plan = GuidancePlan.build(5.0, None, 3.0)
    assert [(p.text, p.motion, p.trajectory, p.weight) for p in plan.passes] == [
        (True, True, True, 7.0), (False, True, True, -4.0), (True, True, False, -2.0)]
    g = torch.Generator().manual_seed(0)
    e_c, e_u, e_j = (torch.randn(2, 3, generator=g) for _ in range(3))
    expected = e_u + 5.0 * (e_c - e_u) + 2.0 * (e_c - e_j)
    torch.testing.assert_close(plan.combine(torch.cat([e_c, e_u, e_j])), expected, atol=1e-5, rtol=1e-5)
    batch = plan.expand(torch.zeros(2, 4, 3, 4, 4), torch.ones(2, 3, 16), torch.zeros(1, 3, 16))
    assert batch.trajectory_off.tolist() == [False, False, False, False, True, True]
    only = GuidancePlan.build(1.0, None, 2.5)
    assert [(p.trajectory, p.weight) for p in only.passes] == [(True, 2.5), (False, -1.5)]
    from rgbacli.pipelines.params import GenerateParams

    for bad in (-1.0, float("nan")):
        with pytest.raises(UsageError, match="--trajectory-guidance must be a finite number ≥ 0"):
            GenerateParams(prompt="x", trajectory_guidance=bad).validate()

    model = tiny_wan()
    x, t, ctx = tiny_wan_inputs()
    before = run_wan(model, x, t, ctx)
    adapter, _ = attach_tora(model, latent_channels=4, channels=8, nums_rb=2)
    for fuser in adapter.fuser:
        torch.nn.init.normal_(fuser.flow_beta_temporal.weight, std=0.1)
    with context_of(model).use(cond={"motion": _motion()}):
        moved = run_wan(model, x, t, ctx)
        with context_of(model).use(trajectory_off=torch.tensor([False, True])):
            mixed = run_wan(model, x, t, ctx)
    assert (moved - before).abs().max() > 1e-3
    torch.testing.assert_close(mixed[0], moved[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[1], before[1], atol=1e-6, rtol=0)


def _tora_file(tmp_path, extra=None, drop=None):
    """A tiny file in Tora's diffusers layout: `traj_extractor.*`, `fuser.{i}.*`, plus base DiT keys
    (a full Tora transformer holds both) and no BatchNorm counters."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    ref = ToraAdapter(latent_channels=4, patch=2, num_blocks=2, width=16, channels=8, nums_rb=2, groups=16)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.2)
    sd = {k: v.clone() for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k in list(sd):
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 0.5
    sd["patch_embedding.weight"] = torch.zeros(16, 4, 1, 2, 2)  # a base key: ignored by the adapter
    if drop:
        sd.pop(drop)
    sd.update(extra or {})
    path = tmp_path / "tora.safetensors"
    save_file(sd, str(path))
    own = ref.state_dict()
    ref.load_state_dict({k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}, strict=False)
    return path, ref.eval()


def test_adapter_loads_in_toras_key_layout(tmp_path):
    from rgbacli.components import ADAPTERS, BuildContext

    path, ref = _tora_file(tmp_path)
    keys = set(ref.state_dict())
    assert {"traj_extractor.conv_in.weight", "traj_extractor.body.3.block2.bias", "traj_extractor.body.0.bn1.running_mean",
            "fuser.1.flow_gamma_spatial.weight", "fuser.0.flow_beta_temporal.weight",
            "fuser.1.flow_cond_norm.weight"} <= keys
    model = tiny_wan()
    x, t, ctx = tiny_wan_inputs()
    before = run_wan(model, x, t, ctx)
    ADAPTERS.get("trajectory", "test")(model, {}, path, BuildContext(load_preset("tiny")))
    loaded = model.tora.state_dict()
    for k, v in ref.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded[k], v), k
    with context_of(model).use(cond={"motion": _motion()}):
        moved = run_wan(model, x, t, ctx)
    assert (moved - before).abs().max() > 1e-3
    # the same maths by hand: fuser i on block i's self-attention input
    feats = ref.traj_extractor(_motion())
    assert len(feats) == 2 and feats[0].shape == (2 * 3, 8, 2, 2)


def test_adapter_file_errors_are_one_line(tmp_path):
    from rgbacli.components import ADAPTERS, BuildContext

    path, _ = _tora_file(tmp_path, drop="fuser.1.flow_beta_spatial.bias")
    with pytest.raises(WeightsError, match="missing key 'fuser.1.flow_beta_spatial.bias'"):
        ADAPTERS.get("trajectory", "t")(tiny_wan(), {}, path, BuildContext(load_preset("tiny")))
    path, _ = _tora_file(tmp_path, extra={"fuser.0.flow_gamma_spatial.weight": torch.zeros(5, 8, 3, 3)})
    with pytest.raises(WeightsError, match=r"key 'fuser.0.flow_gamma_spatial.weight' has shape \(5, 8, 3, 3\)"):
        ADAPTERS.get("trajectory", "t")(tiny_wan(), {}, path, BuildContext(load_preset("tiny")))


def test_fusers_under_alpha_tokens_give_both_copies_the_same_modulation():
    from rgbacli.models.tora import MotionFuser

    adapter = ToraAdapter(latent_channels=4, patch=2, num_blocks=1, width=16, channels=8, nums_rb=1, groups=4)
    fuser: MotionFuser = adapter.fuser[0]
    torch.nn.init.normal_(fuser.flow_beta_temporal.weight)
    feat = torch.randn(2 * 3, 8, 2, 2)
    h = torch.zeros(2, 2 * 3 * 4, 16)  # zero tokens: the output is β alone
    out = fuser.fuse(h, feat, frames=3, copies=2)
    assert torch.equal(out[:, :12], out[:, 12:]) and out.abs().max() > 0


# --------------------------------------------------------------------------- noise shift
def test_noise_shift_is_zero_on_the_path_and_full_far_from_it():
    track = torch.tensor([[2.0 + 4 * i, 6.0] for i in range(9)])  # pixels; latent cells = (p + 0.5)/4 − 0.5
    mask = path_mask([track], latent_frames=5, temporal_factor=2, spatial_factor=4, grid=(4, 8), sigma=(1.0, 1.0))
    assert mask.shape == (5, 4, 8)
    # latent frame k sits at pixel frame 2k: x = 2 + 8k px → cell 0.125 + 2k
    assert mask.argmax(dim=2)[:, 1].tolist() == [0, 2, 4, 6, 7]
    noise = torch.zeros(1, 3, 10, 4, 8)  # alpha tokens: two copies of 5 frames
    out = shift_noise(noise, mask, 0.5)
    assert torch.allclose(out[0, 0, :5], (1 - mask) * 0.5) and torch.equal(out[:, :, :5], out[:, :, 5:])
    with pytest.raises(UsageError, match="does not fit latents of 7 frames"):
        shift_noise(torch.zeros(1, 3, 7, 4, 8), mask, 0.5)


# --------------------------------------------------------------------------- batch and CLI
def test_batch_items_carry_their_own_trajectory(tmp_path):
    from rgbacli.batch.plan import plan_generate

    f = tmp_path / "a.txt"
    f.write_text("0,0\n256,256\n")
    text = "\n".join([json.dumps({"prompt": "a red orb", "trajectory": str(f)}),
                      json.dumps({"prompt": "a blue orb", "trajectory": {"objects": [[[0, 0.5], [1, 0.5]]]}}),
                      json.dumps({"prompt": "x", "trajectory": {"objects": [[[0, 0]]]}}),
                      "a plain one"])
    sampling = {"frames": 3, "width": 16, "height": 16}
    jobs = plan_generate(text, str(tmp_path / "{index}.mov"), 0, {"trajectory_method": "noise"}, sampling, {})
    assert jobs[0].params["trajectory"] == [[[0, 0], [8, 8], [16, 16]]]
    assert jobs[1].params["trajectory"] == [[[0, 8], [8, 8], [16, 8]]]
    assert jobs[2].error == "line 3: line 3 trajectory object 1: a trajectory needs at least 2 points, got 1"
    assert jobs[3].params["trajectory"] is None and jobs[3].error is None
    jobs = plan_generate(text, str(tmp_path / "{index}.mov"), 0, {"trajectory_error": "preset 'p' has no trajectory "
                                                                   "method"}, sampling, {})
    assert jobs[0].error == "line 1: preset 'p' has no trajectory method" and jobs[3].error is None


def test_cli_trajectory_errors_exit_2_and_write_nothing(cli, tmp_path):
    preset = write_test_preset(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("1,1\n2,x\n")
    out = tmp_path / "o.webm"
    cases = [
        (["--trajectory", bad], f"{bad} line 2: expected 'x,y', got '2,x'"),
        (["--trajectory", tmp_path / "none.txt"], f"trajectory file {tmp_path / 'none.txt'} does not exist"),
        (["--path", "1,1"], "--path: a trajectory needs at least 2 points, got 1"),
        (["--path", "1,1 99,1"], "--path: point 2 (99, 1) is outside the 16x16 canvas"),
        (["--path", "1,1 2,2", "--trajectory-method", "tora"], "preset 'test-tiny' has no trajectory adapter"),
        (["--trajectory-method", "noise"], "--trajectory-method needs --trajectory FILE or --path"),
        (["--trajectory-guidance", "2"], "--trajectory-guidance needs --trajectory FILE or --path"),
        (["--path", "1,1 2,2", "--trajectory-guidance", "2"],
         "--trajectory-guidance guides Tora's adapter: use --trajectory-method tora or tora+noise"),
        (["--path", "1,1 2,2", "--trajectory-guidance", "2", "--trajectory-method", "tora+noise"],
         "preset 'test-tiny' has no trajectory adapter"),
    ]
    for extra, message in cases:
        r = cli("generate", "a red orb", "--preset", preset, "-o", out, *extra)
        assert r.returncode == 2, (extra, r.stderr)
        assert r.stderr.strip().splitlines() == [f"rgba: error: {message}"] or message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not out.exists()


def test_cli_noise_trajectory_is_deterministic_and_previews_the_path(cli, tmp_path):
    preset = write_test_preset(tmp_path)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.webm"
        r = cli("generate", "a red orb", "--preset", preset, "-o", out, "--path", "2,8 14,8", "--json", "--preview")
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["trajectory_method"] == "noise" and summary["trajectory_error_px"] >= 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    from PIL import Image

    sheet = np.asarray(Image.open(tmp_path / "a.sheet.png").convert("RGB"))
    yellow = (sheet[..., 0] > 200) & (sheet[..., 1] > 180) & (sheet[..., 2] < 80)
    assert yellow.any()  # the requested path is drawn


@pytest.mark.parametrize("kind", ["wan", "cogvideox"])
def test_tora_composes_with_alpha_tokens(kind):
    """RGBA + trajectory (tora-cogvideox-5b): the fusers join the alpha-token processors; zero-initialised
    they change nothing, trained they move both halves."""
    from test_alpha_tokens import F_RGB, call, noise, randomise, tiny

    model = tiny(kind)
    randomise(model)
    x = noise()
    before = call(model, x)
    adapter, _ = attach_tora(model, latent_channels=4, channels=8, nums_rb=1)
    motion = torch.randn(1, 4, F_RGB, 4, 4, generator=torch.Generator().manual_seed(9))
    with context_of(model).use(cond={"motion": motion}):
        assert torch.equal(call(model, x), before)
        for fuser in adapter.fuser:
            torch.nn.init.normal_(fuser.flow_beta_temporal.weight, std=0.2)
        moved = call(model, x)
    diff = (moved - before).abs()
    assert diff[:, :, :F_RGB].max() > 1e-3 and diff[:, :, F_RGB:].max() > 1e-3
    assert torch.equal(call(model, x), before)  # no motion in cond


def test_shipped_tiny_adapter_steers_the_object_along_a_path():
    """The tiny preset's trained trajectory adapter: tora is its default method, and the object follows a
    held-out left→right line far closer than the same prompt and seed without it."""
    from rgbacli.engine import Engine
    from rgbacli.media.preview import centroid_tracks
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset
    from rgbacli.pipelines.trajectory import TrajectoryPipeline

    engine = Engine("tiny", device="cpu")
    assert choose_method(engine.preset, None) == "tora"
    path = np.array(parse_path_option("14,32 50,32", 64, 64).to_output(17, 64, 64))
    p = params_from_preset(engine, "a red orb", seed=1, steps=8)
    plain = TextToRGBAPipeline(engine)(p).frames.numpy()
    p.trajectory, p.trajectory_method = [path.tolist()], "tora"
    steered = TrajectoryPipeline(engine)(p).frames.numpy()

    def err(frames):
        return float(np.linalg.norm(centroid_tracks(frames[..., 3], path[None])[0] - path, axis=-1).mean())

    assert err(steered) < 0.6 * err(plain), (err(steered), err(plain))


def test_tora_plus_noise_samples_the_shifted_noise_with_the_adapter():
    """tora+noise = the noise method's initial latents and the tora method's motion latents, together."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.t2v import params_from_preset
    from rgbacli.pipelines.trajectory import TrajectoryPipeline

    engine = Engine("tiny", device="cpu")
    path = parse_path_option("14,32 50,32", 64, 64).to_output(5, 64, 64)
    out, first = {}, {}
    for method in ("tora", "noise", "tora+noise"):
        p = params_from_preset(engine, "a red orb", seed=3, steps=2, frames=5)
        p.trajectory, p.trajectory_method = [path], method
        pipe = TrajectoryPipeline(engine)
        first[method] = pipe.prepare_latents(p, [3])
        out[method] = pipe(p).frames.numpy()
    assert torch.equal(first["tora+noise"], first["noise"]) and not torch.equal(first["tora"], first["noise"])
    assert not np.array_equal(out["tora+noise"], out["noise"]) and not np.array_equal(out["tora+noise"], out["tora"])


def test_trajectory_guidance_in_the_pipeline():
    """--trajectory-guidance 1 (None: the preset default, 3 on tiny) is the plain tora run, bit for bit; 3 runs one more pass per step and moves
    the clip; the noise method ignores a preset's default."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.t2v import params_from_preset
    from rgbacli.pipelines.trajectory import TrajectoryPipeline

    engine = Engine("tiny", device="cpu")
    path = parse_path_option("14,32 50,32", 64, 64).to_output(5, 64, 64)
    runs = {}
    for method, w in (("tora", None), ("tora", 1.0), ("tora", 3.0), ("noise", 3.0)):
        p = params_from_preset(engine, "a red orb", seed=3, steps=2, frames=5, trajectory_guidance=w or 1.0)
        p.trajectory, p.trajectory_method = [path], method
        runs[method, w] = TrajectoryPipeline(engine)(p)
    assert np.array_equal(runs["tora", None].frames.numpy(), runs["tora", 1.0].frames.numpy())
    assert runs["tora", 3.0].passes_per_step == runs["tora", 1.0].passes_per_step + 1
    assert not np.array_equal(runs["tora", 3.0].frames.numpy(), runs["tora", 1.0].frames.numpy())
    assert runs["noise", 3.0].passes_per_step == runs["tora", 1.0].passes_per_step
