"""DoRA / LoRA merge: merged base weights reproduce peft's un-merged adapter output."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import WanTransformer3DModel

from rgbacli.errors import WeightsError
from rgbacli.models import dora
from rgbacli.models.wan_names import DORA_TARGETS, diffusers_to_wan, wan_to_diffusers


def tiny_wan(seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32,
    ).eval()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 2, 4, 4, generator=g)
    ctx = torch.randn(1, 3, 16, generator=g)
    return x, torch.tensor([500.0]), ctx


def run(model, x, t, ctx):
    with torch.no_grad():
        return model(x, t, ctx, return_dict=False)[0]


def randomise_adapter(model, dora_too: bool):
    g = torch.Generator().manual_seed(7)
    for module in model.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            for p in (module.lora_A["default"].weight, module.lora_B["default"].weight):
                p.data.copy_(torch.randn(p.shape, generator=g) * 0.2)
            if dora_too:
                m = module.lora_magnitude_vector["default"].weight
                m.data.mul_(1 + 0.3 * torch.rand(m.shape, generator=g))


def test_name_map_round_trip():
    assert wan_to_diffusers("blocks.3.self_attn.o") == "blocks.3.attn1.to_out.0"
    assert wan_to_diffusers("blocks.0.ffn.0") == "blocks.0.ffn.net.0.proj"
    assert wan_to_diffusers("blocks.0.norm3.weight") == "blocks.0.norm2.weight"
    assert wan_to_diffusers("head.head") == "proj_out"
    for name in DORA_TARGETS:
        assert wan_to_diffusers(diffusers_to_wan(f"blocks.1.{name}")) == f"blocks.1.{name}"


@pytest.mark.parametrize("alpha", [4, 8])
def test_dora_merge_matches_peft(alpha):
    base = tiny_wan()
    fresh = copy.deepcopy(base)
    dora.add_dora_adapter(base, rank=4, alpha=alpha)
    randomise_adapter(base, dora_too=True)
    x, t, ctx = inputs()
    expected = run(base, x, t, ctx)

    sd = dora.export_dora_state_dict(base)
    assert "blocks.1.self_attn.q.lora_A.default.weight" in sd
    assert "blocks.1.ffn.2.lora_magnitude_vector.default.weight" in sd
    assert ("blocks.0.cross_attn.o.alpha" in sd) == (alpha != 4)
    assert len([k for k in sd if k.endswith("lora_A.default.weight")]) == 2 * len(DORA_TARGETS)

    plain = run(fresh, x, t, ctx)
    merged = dora.merge_dora(fresh, {f"diffusion_model.{k}": v for k, v in sd.items()})
    assert len(merged) == 2 * len(DORA_TARGETS)
    out = run(fresh, x, t, ctx)
    assert (plain - expected).abs().max() > 1e-3  # the adapter really changes the output
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_lora_merge_matches_peft_in_kohya_layout():
    from peft import LoraConfig

    base = tiny_wan()
    fresh = copy.deepcopy(base)
    base.add_adapter(LoraConfig(r=4, lora_alpha=2, target_modules=list(DORA_TARGETS)))
    randomise_adapter(base, dora_too=False)
    x, t, ctx = inputs()
    expected = run(base, x, t, ctx)

    sd = {}
    for name, module in base.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            wan = "diffusion_model." + diffusers_to_wan(name)
            sd[f"{wan}.lora_down.weight"] = module.lora_A["default"].weight.detach().clone()
            sd[f"{wan}.lora_up.weight"] = module.lora_B["default"].weight.detach().clone()
            sd[f"{wan}.alpha"] = torch.tensor(2.0)
    sd["diffusion_model.blocks.0.self_attn.q.diff_b"] = torch.zeros(16)
    dora.merge_lora(fresh, sd, scale=1.0)
    torch.testing.assert_close(run(fresh, x, t, ctx), expected, atol=1e-5, rtol=1e-5)


def test_lora_diffusers_names_and_files(tmp_path):
    from safetensors.torch import save_file

    model = tiny_wan()
    w0 = model.blocks[0].attn1.to_q.weight.detach().clone()
    a, b = torch.randn(2, 16), torch.randn(16, 2)
    path = tmp_path / "l.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": a,
               "transformer.blocks.0.attn1.to_q.lora_B.weight": b}, str(path))
    dora.merge_lora(model, path, scale=0.5)
    torch.testing.assert_close(model.blocks[0].attn1.to_q.weight, w0 + 0.5 * b @ a)
    pt = tmp_path / "l.pt"
    torch.save({"blocks.0.self_attn.k.lora_A.default.weight": a, "blocks.0.self_attn.k.lora_B.default.weight": b}, pt)
    assert dora.merge_adapter(model, pt) == ["blocks.0.attn1.to_k"]


def test_errors_name_the_key():
    model = tiny_wan()
    a, b, m = torch.zeros(4, 16), torch.zeros(16, 4), torch.ones(16)
    good = {"blocks.0.self_attn.q.lora_A.default.weight": a, "blocks.0.self_attn.q.lora_B.default.weight": b,
            "blocks.0.self_attn.q.lora_magnitude_vector.default.weight": m}
    with pytest.raises(WeightsError, match="blocks.0.self_attn.q.bogus"):
        dora.merge_dora(model, {**good, "blocks.0.self_attn.q.bogus": a})
    with pytest.raises(WeightsError, match="blocks.9.self_attn.q"):
        dora.merge_dora(model, {k.replace("blocks.0", "blocks.9"): v for k, v in good.items()})
    with pytest.raises(WeightsError, match="lora_magnitude_vector"):
        dora.merge_dora(model, {k: v for k, v in good.items() if "magnitude" not in k})
    with pytest.raises(WeightsError, match="lora_B"):
        dora.merge_dora(model, {k: v for k, v in good.items() if "lora_B" not in k})
    with pytest.raises(WeightsError, match=r"blocks\.1\.attn1\.to_q"):  # block 1 lacks a target block 0 has
        dora.merge_dora(model, {**good, "blocks.1.self_attn.k.lora_A.default.weight": a,
                                "blocks.1.self_attn.k.lora_B.default.weight": b,
                                "blocks.1.self_attn.k.lora_magnitude_vector.default.weight": m,
                                "blocks.0.self_attn.k.lora_A.default.weight": a,
                                "blocks.0.self_attn.k.lora_B.default.weight": b,
                                "blocks.0.self_attn.k.lora_magnitude_vector.default.weight": m})
    with pytest.raises(WeightsError, match="does not exist"):
        dora.merge_dora(model, "/nonexistent/t2v.safetensors")
