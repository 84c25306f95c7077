"""Motion-free guidance: frame-masked Wan self-attention, the guidance plan and combine formula."""

from __future__ import annotations

import torch
from conftest import run_wan as run, tiny_wan, tiny_wan_inputs as batch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from rgbacli.models.attention import Behaviour, FrameLayout, WanStagedProcessor, attach, frame_mask
from rgbacli.models.motion_free import apply_motion_free_dropout, enable_motion_free, motion_free_guidance
from rgbacli.pipelines.guidance import GuidancePlan


def test_staged_processor_equals_diffusers():
    model = tiny_wan()
    x, t, ctx = batch()
    expected = run(model, x, t, ctx)
    noop = attach(model, lambda _i: Behaviour(), "attn1")  # staged attn1, no change to any step
    noop2 = attach(model, lambda _i: Behaviour(), "attn2")
    assert isinstance(model.blocks[0].attn1.processor, WanStagedProcessor)
    torch.testing.assert_close(run(model, x, t, ctx), expected, atol=1e-6, rtol=1e-6)
    ctl = enable_motion_free(model)  # no flags set: still the plain model
    torch.testing.assert_close(run(model, x, t, ctx), expected, atol=1e-6, rtol=1e-6)
    ctl.remove()
    noop.remove()
    noop2.remove()
    assert isinstance(model.blocks[0].attn1.processor, WanAttnProcessor)  # diffusers' own, back again


def test_motion_off_blocks_cross_frame_attention():
    model = tiny_wan()
    ctl = enable_motion_free(model)
    x, t, ctx = batch()
    with ctl.motion_off([False, True]), ctl.capture() as procs:
        explicit = run(model, x, t, ctx)
    probs = procs[0].last_attention_probs  # (B, H, S, S), S = 3 frames × 4 tokens
    ids = FrameLayout(3, 4).frame_ids()
    cross = ids[:, None] != ids[None, :]
    assert probs[1][:, cross].abs().max() == 0  # motion off: exactly zero across frames
    assert probs[0][:, cross].min() > 0  # motion on: every cross-frame pair gets weight
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))

    with ctl.motion_off([False, True]):  # the regrouped fast path gives the same answer
        fast = run(model, x, t, ctx)
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)
    # Motion-on sample is the plain model; motion off changes the other.
    ctl_free = run(model, x, t, ctx)
    torch.testing.assert_close(fast[0], ctl_free[0], atol=1e-5, rtol=1e-5)
    assert (fast[1] - ctl_free[1]).abs().max() > 1e-4


def test_motion_off_frames_are_independent_end_to_end():
    model = tiny_wan()
    ctl = enable_motion_free(model)
    x, t, ctx = batch(b=1)
    y = x.clone()
    y[:, :, 2] += 1.0  # change only the last frame
    with ctl.motion_off(True):
        a, b = run(model, x, t, ctx), run(model, y, t, ctx)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2], atol=1e-5, rtol=1e-5)
    a, b = run(model, x, t, ctx), run(model, y, t, ctx)
    assert (a[:, :, :2] - b[:, :, :2]).abs().max() > 1e-4  # with motion, frames interact


def test_dense_mask_shape_and_doubled_layout():
    layout = FrameLayout(frames=2, tokens_per_frame=3, copies=2)
    mask = frame_mask(layout, torch.tensor([True, False]))
    assert mask.shape == (2, 1, 12, 12) and mask.dtype == torch.bool
    assert mask[1].all()
    # RGB frame 0 (tokens 0-2) sees alpha frame 0 (tokens 6-8) but not frame 1 of either copy.
    assert mask[0, 0, 0, 6:9].all() and not mask[0, 0, 0, 3:6].any() and not mask[0, 0, 0, 9:].any()


def test_guidance_formula_and_plan():
    g = torch.Generator().manual_seed(0)
    e00, eTM, e0M = (torch.randn(2, 3, generator=g) for _ in range(3))
    expected = e00 + 7.5 * (eTM - e0M) + 1.2 * (e0M - e00)
    torch.testing.assert_close(motion_free_guidance(e00, eTM, e0M, 7.5, 1.2), expected)

    assert GuidancePlan.build(1.0).num_passes == 1
    assert GuidancePlan.build(1.0, 1.0).num_passes == 1
    cfg = GuidancePlan.build(5.0)
    assert cfg.num_passes == 2 and not cfg.uses_motion_off
    mfg = GuidancePlan.build(7.5, 1.2)
    assert mfg.num_passes == 3 and mfg.uses_motion_off
    assert [(p.text, p.motion) for p in mfg.passes] == [(True, True), (False, True), (False, False)]

    latents, cond, uncond = torch.randn(2, 4, 3, 4, 4), torch.ones(2, 3, 16), torch.zeros(1, 3, 16)
    extra = torch.arange(2.0).view(2, 1)  # extra conditioning (e.g. image embeddings), one row per sample
    batch = mfg.expand(latents, cond, uncond, {"image": extra})
    x, ctx, off = batch.latents, batch.text, batch.motion_off
    assert x.shape[0] == ctx.shape[0] == 6 and off.tolist() == [False, False, False, False, True, True]
    assert ctx[:2].eq(1).all() and ctx[2:].eq(0).all()
    assert batch.cond["image"].flatten().tolist() == [0, 1, 0, 1, 0, 1]  # replicated for every pass
    pred = torch.cat([eTM, e0M, e00])
    torch.testing.assert_close(mfg.combine(pred), expected, atol=1e-5, rtol=1e-5)
    pred2 = torch.cat([eTM, e00])  # text CFG: e0 + λ(ec − e0)
    torch.testing.assert_close(cfg.combine(pred2), e00 + 5.0 * (eTM - e00), atol=1e-5, rtol=1e-5)


def test_motion_free_dropout_makes_stills():
    clips = torch.randn(8, 4, 5, 2, 2)
    out, off = apply_motion_free_dropout(clips, 0.5, torch.Generator().manual_seed(0))
    assert off.dtype == torch.bool and 0 < int(off.sum()) < 8
    for i in range(8):
        if off[i]:
            assert (out[i] == out[i][:, :1]).all()
        else:
            assert torch.equal(out[i], clips[i])
    _, none = apply_motion_free_dropout(clips, 0.0, torch.Generator().manual_seed(3))
    assert not none.any()
