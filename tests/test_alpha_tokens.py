"""TransPixar alpha tokens on tiny Wan and CogVideoX DiTs."""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed

from rgbacli.errors import WeightsError
from rgbacli.models.alpha_tokens import (
    AlphaTokenTransformer,
    alpha_token_state_dict,
    double_noise,
    load_alpha_token_weights,
    save_alpha_token_weights,
)
from rgbacli.models.attention import AttnCall, context_of, processors
from rgbacli.models.motion_free import enable_motion_free

F_RGB, TEXT = 2, 3


def tiny(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "wan":
        base = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32,
        )
    else:
        base = CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
            text_embed_dim=16, num_layers=2, sample_width=4, sample_height=4, sample_frames=5, patch_size=2,
            max_text_seq_length=TEXT, use_rotary_positional_embeddings=True,
        )
    return AlphaTokenTransformer(base.eval(), rank=4, lora_alpha=4.0)


def call(model, x, seed=1):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(x.shape[0], TEXT, 16, generator=g)
    kwargs = {}
    if model.kind == "cogvideox":
        kwargs["image_rotary_emb"] = get_3d_rotary_pos_embed(16, ((0, 0), (2, 2)), (2, 2), x.shape[2] // 2)
    with torch.no_grad():
        return model(x, torch.full((x.shape[0],), 300.0), ctx, **kwargs)


def noise(b=1, seed=2):
    return double_noise(torch.randn(b, 4, F_RGB, 4, 4, generator=torch.Generator().manual_seed(seed)))


def randomise(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    for p in model.adapter_parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("kind", ["wan", "cogvideox"])
def test_shapes_and_zero_init_symmetry(kind):
    model = tiny(kind)
    x = noise(b=2)
    assert torch.equal(model.rgb_half(x), model.alpha_half(x))
    out = call(model, x)
    assert out.shape == (2, 4, 2 * F_RGB, 4, 4)
    # Zero domain embedding and zero LoRA B, same noise and same positions: the halves agree.
    torch.testing.assert_close(model.alpha_half(out), model.rgb_half(out), atol=1e-5, rtol=1e-5)
    randomise(model)
    out = call(model, x)
    assert (model.alpha_half(out) - model.rgb_half(out)).abs().max() > 1e-3


def test_wan_rope_alpha_half_copies_rgb_positions():
    model = tiny("wan")
    x = noise()
    cos, sin = model.base.rope(x)
    n = cos.shape[1] // 2
    assert torch.equal(cos[:, n:], cos[:, :n]) and torch.equal(sin[:, n:], sin[:, :n])
    model.remove()
    ref_cos, _ = model.base.rope(model.rgb_half(x))  # the RGB-only positions
    assert torch.equal(cos[:, :n], ref_cos)
    assert not torch.equal(model.base.rope(x)[0][:, n:], ref_cos)  # unhooked: a continuation


@pytest.mark.parametrize("kind", ["wan", "cogvideox"])
def test_lora_touches_only_alpha_token_projections(kind):
    model = tiny(kind)
    randomise(model)
    attn, proc, behaviour = model.blocks[0].attn1, processors(model)[0], model.behaviours[0]
    x = torch.randn(1, 10, attn.to_q.in_features)
    call = AttnCall(attn, 0, "attn1", context_of(model), None, 0, 10)  # Wan layout: video rows 0..9
    for name in ("to_q", "to_k", "to_v", "to_out"):
        layer = attn.to_out[0] if name == "to_out" else getattr(attn, name)
        with torch.no_grad():
            base = layer(x)
            adapted = behaviour.lora.apply(name, base, x, 5)
            assert torch.equal(proc._linear(call, attn, name, x), adapted)  # alpha rows start at 10 // 2
        assert torch.equal(adapted[:, :5], base[:, :5])  # RGB rows: base weights exactly
        assert (adapted[:, 5:] - base[:, 5:]).abs().min() > 0  # alpha rows: changed


def test_cogvideox_boolean_mask_blocks_text_to_alpha():
    model = tiny("cogvideox")
    randomise(model)
    x = noise()
    fast = call(model, x)
    with context_of(model).capturing():
        explicit = call(model, x)
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)  # SDPA bool mask == explicit mask
    probs = processors(model)[1].last_attention_probs  # (B, H, S, S) over [text ; RGB ; alpha]
    n = (probs.shape[-1] - TEXT) // 2
    alpha = slice(TEXT + n, None)
    assert probs[:, :, :TEXT, alpha].abs().max() == 0  # text → alpha: blocked exactly
    assert probs[:, :, TEXT:TEXT + n, alpha].min() > 0  # RGB → alpha: allowed
    assert probs[:, :, TEXT + n:, :TEXT].min() > 0  # alpha → text: allowed
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


def test_wan_alpha_tokens_with_motion_free():
    model = tiny("wan")
    ctl = enable_motion_free(model)
    x = noise()
    y = x.clone()
    y[:, :, [1, 3]] += 1.0  # last frame of both halves
    with ctl.motion_off(True):
        a, b = call(model, x), call(model, y)
    torch.testing.assert_close(a[:, :, [0, 2]], b[:, :, [0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.alpha_half(a), model.rgb_half(a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["wan", "cogvideox"])
def test_weights_round_trip_and_errors(kind, tmp_path):
    model = tiny(kind)
    randomise(model)
    path = save_alpha_token_weights(model, tmp_path / "rgba_lora.safetensors")
    sd = alpha_token_state_dict(model)
    blocks = "transformer_blocks" if kind == "cogvideox" else "blocks"
    assert f"transformer.{blocks}.1.attn1.to_out.0.lora_B.weight" in sd and sd["domain_emb"].shape == (1, 1, 16 if kind == "wan" else 32)
    assert len(sd) == 2 * 4 * 2 + 1

    fresh = tiny(kind)  # same base weights, untrained adapter
    load_alpha_token_weights(fresh, path)
    x = noise()
    torch.testing.assert_close(call(fresh, x), call(model, x))

    bad = dict(sd)
    bad["transformer.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="transformer.extra.weight"):
        load_alpha_token_weights(fresh, bad)
    missing = {k: v for k, v in sd.items() if "1.attn1.to_k.lora_A" not in k}
    with pytest.raises(WeightsError, match=rf"{blocks}\.1\.attn1\.to_k\.lora_A"):
        load_alpha_token_weights(fresh, missing)
    wrong_rank = {**sd, f"transformer.{blocks}.0.attn1.to_q.lora_A.weight": torch.zeros(8, sd["domain_emb"].numel())}
    with pytest.raises(WeightsError, match="to_q.lora_A"):
        load_alpha_token_weights(fresh, wrong_rank)
