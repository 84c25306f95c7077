"""Masked text cross-attention: padded text tokens get no attention, and the mask survives save/load."""

from __future__ import annotations

import torch
from conftest import tiny_wan
from diffusers import WanTransformer3DModel

from rgbacli.models.alpha_tokens import AlphaTokenTransformer
from rgbacli.models.attention import processors
from rgbacli.models.text_mask import TextKeyMask, enable_text_mask, text_key_mask
from rgbacli.weights.own import load_model, save_model


def inputs(lengths=(5, 2), pad_to=8, seed=1):
    """Video latents, timesteps and zero-padded text with the given number of real tokens per row."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    ctx = torch.zeros(b, pad_to, 16)
    for i, n in enumerate(lengths):
        ctx[i, :n] = torch.randn(n, 16, generator=g)
    return torch.randn(b, 4, 3, 4, 4, generator=g), torch.full((b,), 600.0), ctx


def run(model, x, t, ctx):
    with torch.no_grad():
        return model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]


def test_key_mask_from_zero_rows():
    ctx = torch.zeros(3, 4, 2)
    ctx[0, :2] = 1.0
    ctx[1, 3, 1] = -0.5  # a token may sit anywhere; only all-zero rows are padding
    mask = text_key_mask(ctx)
    assert mask.tolist() == [[True, True, False, False], [False, False, False, True], [True] * 4]  # empty row: all


def test_padding_has_no_effect_with_the_mask():
    """Per sample, padded text gives the same output as the same tokens without any padding."""
    x, t, ctx = inputs()
    plain = tiny_wan()
    unmasked = run(plain, x, t, ctx)
    model = tiny_wan()
    enable_text_mask(model)
    masked = run(model, x, t, ctx)
    for i, n in enumerate((5, 2)):
        alone = run(model, x[i:i + 1], t[i:i + 1], ctx[i:i + 1, :n])
        torch.testing.assert_close(masked[i:i + 1], alone, atol=1e-5, rtol=1e-5)
        # the plain Wan model does depend on the padding, so the check above can fail
        assert (run(plain, x[i:i + 1], t[i:i + 1], ctx[i:i + 1, :n]) - unmasked[i:i + 1]).abs().max() > 1e-3
    assert any(isinstance(b, TextKeyMask) for b in processors(model, "attn2")[0].behaviours)


def test_empty_prompt_keeps_plain_attention():
    """An all-padding (unconditional) row attends to its padding as before: finite and unchanged."""
    x, t, ctx = inputs(lengths=(0,))
    expected = run(tiny_wan(), x, t, ctx)
    model = tiny_wan()
    enable_text_mask(model)
    out = run(model, x, t, ctx)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_mask_is_saved_and_restored(tmp_path):
    x, t, ctx = inputs()
    model = tiny_wan()
    enable_text_mask(model)
    expected = run(model, x, t, ctx)
    save_model(model, tmp_path / "dit.safetensors", text_mask=True)
    loaded = load_model(WanTransformer3DModel, tmp_path / "dit.safetensors")
    assert any(isinstance(b, TextKeyMask) for b in processors(loaded, "attn2")[1].behaviours)
    torch.testing.assert_close(run(loaded, x, t, ctx), expected, atol=1e-6, rtol=1e-6)
    save_model(tiny_wan(), tmp_path / "plain.safetensors")
    plain = load_model(WanTransformer3DModel, tmp_path / "plain.safetensors")
    assert not hasattr(processors(plain, "attn2")[1], "behaviours")  # diffusers' own processor


def test_mask_applies_under_alpha_tokens():
    """The TransPixar wrapper calls the base model positionally; the mask is still read."""
    x, t, ctx = inputs(lengths=(3,))
    base = tiny_wan()
    enable_text_mask(base)
    wrapped = AlphaTokenTransformer(base, rank=2, lora_alpha=2.0)
    doubled = torch.cat([x, x], dim=2)
    with torch.no_grad():
        padded = wrapped(doubled, t, ctx)
        trimmed = wrapped(doubled, t, ctx[:, :3])
    torch.testing.assert_close(padded, trimmed, atol=1e-5, rtol=1e-5)
