"""Composable attention: behaviours attach openly, compose, detach to the exact previous state, and
each computes what the hand-written formula says."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import run_wan as run, tiny_wan, tiny_wan_inputs as inputs
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

from rgbacli.models.alpha_tokens import AlphaLoRA, AlphaTokens, AlphaTokenTransformer
from rgbacli.models.attention import (AttentionContext, Behaviour, ExternalKV, ExtraCrossAttention, FrameLayout,
                                      WanStagedProcessor, apply_wan_rotary, attach, context_of, processors)
from rgbacli.models.motion_free import FrameMask


class ScaleOutput(Behaviour):
    """Multiplies the output projection's result: easy to predict when composed."""

    def __init__(self, factor: float):
        self.factor = factor

    def linear(self, call, name, x, out):
        return out * self.factor if name == "to_out" else out


def test_attach_composes_and_detach_restores_the_exact_processor():
    model = tiny_wan()
    x, t, ctx = inputs()
    original = processors(model, "attn1")
    plain = run(model, x, t, ctx)
    a = attach(model, lambda _i: ScaleOutput(0.0), "attn1")  # self-attention switched off in every block
    no_self = run(model, x, t, ctx)
    assert (no_self - plain).abs().max() > 1e-3
    b = attach(model, lambda _i: ScaleOutput(2.0), "attn1")  # joins A: nothing replaced
    assert processors(model)[0].behaviours == [a.entries[0][2], b.entries[0][2]]
    torch.testing.assert_close(run(model, x, t, ctx), no_self)  # 0 · 2 = 0: both apply
    a.remove()
    doubled = run(model, x, t, ctx)  # B alone
    assert isinstance(processors(model)[0], WanStagedProcessor) and len(processors(model)[0].behaviours) == 1
    assert (doubled - plain).abs().max() > 1e-3
    b.remove()
    assert all(p is q for p, q in zip(processors(model, "attn1"), original))  # diffusers' own objects again
    assert all(isinstance(p, WanAttnProcessor) for p in processors(model, "attn1"))
    torch.testing.assert_close(run(model, x, t, ctx), plain, atol=0, rtol=0)


def test_only_named_blocks_get_the_behaviour():
    model = tiny_wan()
    attachment = attach(model, lambda _i: ScaleOutput(0.0), "attn2", blocks=[1])
    assert isinstance(processors(model, "attn2")[0], WanAttnProcessor)
    assert isinstance(processors(model, "attn2")[1], WanStagedProcessor)
    attachment.remove()
    with pytest.raises(ValueError, match="attn2"):
        attach(CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                           out_channels=4, time_embed_dim=8, text_embed_dim=16, num_layers=1,
                                           sample_width=4, sample_height=4, sample_frames=5, patch_size=2),
               lambda _i: Behaviour(), "attn2")


def test_context_values_are_restored_after_use():
    ctx = AttentionContext()
    with ctx.use(step=3, motion_off=torch.tensor([True])):
        with ctx.use(step=4):
            assert ctx.values["step"] == 4
        assert ctx.values["step"] == 3
    assert ctx.values == {}


# ----------------------------------------------------------------------------- hand-computed references
def _rms(x, norm):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


def _heads(x, h):
    return x.unflatten(-1, (h, -1))  # (B, S, H, D)


def _softmax_attention(q, k, v, mask):
    """Reference attention on (B, S, H, D) heads with a (B, 1|H, Sq, Sk) boolean mask."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


def _lora(x, w, b, lora, name, start):
    """Linear with the alpha-token LoRA on rows `start:` written out: x·Wᵀ + b (+ s·x·Aᵀ·Bᵀ)."""
    out = x @ w.T + b
    delta = (x @ lora.lora_A[name].weight.T @ lora.lora_B[name].weight.T) * lora.scaling
    out[:, start:] += delta[:, start:]
    return out


def test_frame_mask_and_alpha_tokens_together_equal_the_formula():
    torch.manual_seed(0)
    attn = WanAttention(dim=16, heads=2, dim_head=8, eps=1e-6, processor=WanAttnProcessor()).eval()
    lora = AlphaLoRA(attn, rank=3, lora_alpha=3.0)
    for p in lora.parameters():
        torch.nn.init.normal_(p, std=0.3)
    context = AttentionContext(copies=2, layout=FrameLayout(frames=2, tokens_per_frame=3, copies=2))
    proc = WanStagedProcessor("attn1", 0, context, previous=attn.processor)
    proc.behaviours = [FrameMask(), AlphaTokens(lora)]
    attn.set_processor(proc)
    x = torch.randn(2, 12, 16)  # [RGB: 2 frames × 3 tokens ; alpha: the same grid]
    with torch.no_grad(), context.use(motion_off=torch.tensor([True, False])):
        got = attn(x, None, None, None)

        def proj(layer, name, inp):
            return _lora(inp, layer.weight, layer.bias, lora, name, 6)

        q = _heads(_rms(proj(attn.to_q, "to_q", x), attn.norm_q), 2)
        k = _heads(_rms(proj(attn.to_k, "to_k", x), attn.norm_k), 2)
        v = _heads(proj(attn.to_v, "to_v", x), 2)
        frame = torch.tensor([0, 0, 0, 1, 1, 1] * 2)  # RGB frame f and alpha frame f: one group
        same = frame[:, None] == frame[None, :]
        mask = torch.stack([same, torch.ones_like(same)])[:, None]  # sample 0 motion off, sample 1 on
        out = _softmax_attention(q, k, v, mask).flatten(2)
        expected = proj(attn.to_out[0], "to_out", out)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the frame mask did something: sample 0 differs from an unmasked computation
    free = proj(attn.to_out[0], "to_out", _softmax_attention(q, k, v, None).flatten(2))
    assert (free[0] - expected[0]).abs().max() > 1e-3
    torch.testing.assert_close(free[1], expected[1], atol=1e-5, rtol=1e-5)


def test_external_kv_appends_tokens_after_rope():
    torch.manual_seed(1)
    attn = WanAttention(dim=16, heads=2, dim_head=8, eps=1e-6, processor=WanAttnProcessor()).eval()
    extra_k, extra_v = torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8)
    extra_mask = torch.ones(1, 4, 5, dtype=torch.bool)
    extra_mask[:, 0, 2:] = False  # query 0 sees only the first two bank tokens
    context = AttentionContext()
    proc = WanStagedProcessor("attn1", 0, context, previous=attn.processor)
    proc.behaviours = [ExternalKV(lambda call, k, v: (extra_k, extra_v, extra_mask))]
    attn.set_processor(proc)
    x = torch.randn(1, 4, 16)
    angles = torch.randn(1, 4, 1, 8)
    rope = (angles.cos(), angles.sin())
    with torch.no_grad():
        got = attn(x, None, None, rope)
        q = apply_wan_rotary(_heads(_rms(x @ attn.to_q.weight.T + attn.to_q.bias, attn.norm_q), 2), *rope)
        k = apply_wan_rotary(_heads(_rms(x @ attn.to_k.weight.T + attn.to_k.bias, attn.norm_k), 2), *rope)
        v = _heads(x @ attn.to_v.weight.T + attn.to_v.bias, 2)
        mask = torch.cat([torch.ones(1, 4, 4, dtype=torch.bool), extra_mask], dim=-1)[:, None]
        out = _softmax_attention(q, torch.cat([k, extra_k], 1), torch.cat([v, extra_v], 1), mask)
        expected = attn.to_out[0](out.flatten(2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_extra_cross_attention_zero_init_is_a_no_op_and_matches_diffusers_i2v():
    torch.manual_seed(2)
    i2v = WanAttention(dim=16, heads=2, dim_head=8, eps=1e-6, added_kv_proj_dim=16, cross_attention_dim_head=8,
                       processor=WanAttnProcessor()).eval()
    text, image, x = torch.randn(1, 512, 16), torch.randn(1, 7, 16), torch.randn(1, 6, 16)
    with torch.no_grad():
        reference = i2v(x, torch.cat([image, text], dim=1), None, None)  # diffusers: text + image K/V, summed
        plain = WanAttention(dim=16, heads=2, dim_head=8, eps=1e-6, cross_attention_dim_head=8,
                             processor=WanAttnProcessor()).eval()
        plain.load_state_dict({k: v for k, v in i2v.state_dict().items() if "add_" not in k and "added" not in k})
        text_only = plain(x, text, None, None)

        context = AttentionContext()
        extra = ExtraCrossAttention(cond_dim=16, inner_dim=16, heads=2, key="image")
        proc = WanStagedProcessor("attn2", 0, context, previous=plain.processor)
        proc.behaviours = [extra]
        plain.set_processor(proc)
        with context.use(cond={"image": image}):
            assert torch.equal(plain(x, text, None, None), text_only)  # zero-initialised output: exactly the base
            extra.to_k.load_state_dict(i2v.add_k_proj.state_dict())
            extra.to_v.load_state_dict(i2v.add_v_proj.state_dict())
            extra.norm_k.load_state_dict(i2v.norm_added_k.state_dict())
            extra.to_out.weight.copy_(torch.eye(16))
            extra.to_out.bias.zero_()
            got = plain(x, text, None, None)
        assert torch.equal(plain(x, text, None, None), text_only)  # no cond given: nothing added
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


def test_extra_cross_attention_per_frame_sets():
    """With one embedding set per latent frame, frame f's tokens see only set f."""
    torch.manual_seed(3)
    attn = WanAttention(dim=16, heads=2, dim_head=8, eps=1e-6, cross_attention_dim_head=8,
                        processor=WanAttnProcessor()).eval()
    extra = ExtraCrossAttention(cond_dim=12, inner_dim=16, heads=2, key="smp", zero_init=False)
    context = AttentionContext(layout=FrameLayout(frames=2, tokens_per_frame=3))
    proc = WanStagedProcessor("attn2", 0, context, previous=attn.processor)
    proc.behaviours = [extra]
    attn.set_processor(proc)
    x, text, sets = torch.randn(1, 6, 16), torch.randn(1, 4, 16), torch.randn(1, 2, 5, 12)
    with torch.no_grad(), context.use(cond={"smp": sets}):
        a = attn(x, text, None, None)
        changed = sets.clone()
        changed[:, 1] += 1.0  # only frame 1's set
        with context.use(cond={"smp": changed}):
            b = attn(x, text, None, None)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # frame 0 untouched
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-4


def test_extra_cross_attention_query_position():
    """Wan's cross-attention queries carry no position (RoPE is in self-attention only): without
    query_pos, two tokens with the same content get the same extra output wherever they sit; with
    it, they differ by where they are, the same in every frame, and the features are the sin/cos
    of the normalised token centres."""
    torch.manual_seed(4)
    rows, cols, frames = 2, 3, 2
    layout = FrameLayout(frames=frames, tokens_per_frame=rows * cols, grid=(rows, cols))
    x = torch.randn(1, 1, 16).expand(1, frames * rows * cols, 16).contiguous()  # every token alike
    text, sets = torch.randn(1, 4, 16), torch.randn(1, frames, 5, 12)
    outs = {}
    for qp in (0, 3):
        attn = WanAttention(dim=16, heads=2, dim_head=8, eps=1e-6, cross_attention_dim_head=8,
                            processor=WanAttnProcessor()).eval()
        extra = ExtraCrossAttention(cond_dim=12, inner_dim=16, heads=2, key="smp", zero_init=False, query_pos=qp)
        context = AttentionContext(layout=layout)
        proc = WanStagedProcessor("attn2", 0, context, previous=attn.processor)
        proc.behaviours = [extra]
        attn.set_processor(proc)
        with torch.no_grad(), context.use(cond={"smp": sets[:, :1].expand(-1, frames, -1, -1)}):
            outs[qp] = attn(x, text, None, None)
    same = outs[0][0, :rows * cols]
    assert torch.allclose(same, same[:1].expand_as(same), atol=1e-6)  # no position: all tokens alike
    placed = outs[3][0]
    assert (placed[:rows * cols] - placed[:1]).abs().amax(-1)[1:].min() > 1e-4  # each position its own output
    torch.testing.assert_close(placed[:rows * cols], placed[rows * cols:])  # same set, same places: frames alike
    feat = extra.position_features(rows, cols)
    assert feat.shape == (rows * cols, 12)
    torch.testing.assert_close(feat[4, [0, 3]], torch.tensor([math.sin(math.pi * 0.5), math.cos(math.pi * 0.5)]))
    with pytest.raises(ValueError, match="needs the token grid"):
        context.layout = FrameLayout(frames=frames, tokens_per_frame=rows * cols)
        with torch.no_grad(), context.use(cond={"smp": sets}):
            attn(x, text, None, None)


def test_alpha_tokens_and_motion_free_share_the_processors():
    """Wrapping for alpha tokens, then enabling motion-free guidance: one staged processor per block
    carries both behaviours; removing motion-free guidance leaves the alpha tokens."""
    model = AlphaTokenTransformer(tiny_wan(), rank=2, lora_alpha=2.0)
    from rgbacli.models.motion_free import enable_motion_free

    mf = enable_motion_free(model)
    kinds = [type(b).__name__ for b in processors(model)[0].behaviours]
    assert kinds == ["AlphaTokens", "FrameMask"]
    assert context_of(model).copies == 2
    mf.remove()
    assert [type(b).__name__ for b in processors(model)[0].behaviours] == ["AlphaTokens"]
    model.remove()
    assert all(isinstance(p, WanAttnProcessor) for p in processors(model.base))
    assert context_of(model.base).copies == 1


def test_motion_off_with_a_story_bank_keeps_bank_tokens_visible():
    """Frame mask + external K/V: own tokens of other frames are blocked, bank tokens are not."""
    torch.manual_seed(4)
    attn = WanAttention(dim=16, heads=2, dim_head=8, eps=1e-6, processor=WanAttnProcessor()).eval()
    bank_k, bank_v = torch.randn(1, 3, 2, 8), torch.randn(1, 3, 2, 8)
    context = AttentionContext(layout=FrameLayout(frames=2, tokens_per_frame=2))
    proc = WanStagedProcessor("attn1", 0, context, previous=attn.processor)
    proc.behaviours = [FrameMask(), ExternalKV(lambda call, k, v: (bank_k, bank_v, None))]
    attn.set_processor(proc)
    x = torch.randn(1, 4, 16)
    with torch.no_grad(), context.use(motion_off=torch.tensor([True])):
        got = attn(x, None, None, None)
        q = _heads(_rms(x @ attn.to_q.weight.T + attn.to_q.bias, attn.norm_q), 2)
        k = _heads(_rms(x @ attn.to_k.weight.T + attn.to_k.bias, attn.norm_k), 2)
        v = _heads(x @ attn.to_v.weight.T + attn.to_v.bias, 2)
        frame = torch.tensor([0, 0, 1, 1])
        own = frame[:, None] == frame[None, :]
        mask = torch.cat([own, torch.ones(4, 3, dtype=torch.bool)], dim=-1)[None, None]
        expected = attn.to_out[0](_softmax_attention(q, torch.cat([k, bank_k], 1), torch.cat([v, bank_v], 1),
                                                     mask).flatten(2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cogvideox_staged_processor_equals_diffusers():
    from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

    torch.manual_seed(5)
    model = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                        time_embed_dim=8, text_embed_dim=16, num_layers=2, sample_width=4,
                                        sample_height=4, sample_frames=5, patch_size=2, max_text_seq_length=3,
                                        use_rotary_positional_embeddings=True).eval()
    assert isinstance(processors(model)[0], CogVideoXAttnProcessor2_0)
    wrapped = AlphaTokenTransformer(model, rank=2, lora_alpha=2.0)  # zero LoRA B: the plain model's maths
    x = torch.randn(1, 4, 4, 4, 4)
    text = torch.randn(1, 3, 16)
    t = torch.full((1,), 300.0)
    rope = wrapped.rgb_rotary(2, 4, 4, "cpu")
    with torch.no_grad():
        staged = model(x.transpose(1, 2), text, t, image_rotary_emb=tuple(torch.cat([r, r]) for r in rope),
                       return_dict=False)[0]
        wrapped.remove()
        # the alpha-token mask still blocks text → alpha, so compare a model call with the mask's
        # behaviour turned off: text_attends_alpha=True
        wrapped = AlphaTokenTransformer(model, rank=2, lora_alpha=2.0, text_attends_alpha=True)
        with_mask_off = model(x.transpose(1, 2), text, t, image_rotary_emb=tuple(torch.cat([r, r]) for r in rope),
                              return_dict=False)[0]
        wrapped.remove()
        reference = model(x.transpose(1, 2), text, t, image_rotary_emb=tuple(torch.cat([r, r]) for r in rope),
                          return_dict=False)[0]
    torch.testing.assert_close(with_mask_off, reference, atol=1e-5, rtol=1e-5)
    assert (staged - reference).abs().max() > 1e-5  # the text→alpha mask changes the text-conditioned result
