"""Wan / Wan-Alpha VAE weight formats: tiny files built in each exact key layout, loaded back."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file

from rgbacli.errors import WeightsError
from rgbacli.models.rgba_vae import RGBAVAE
from rgbacli.train.vae_losses import VGG16Relu22, VGG_KEYS
from rgbacli.weights.wan_vae import (
    load_comfy_pair,
    load_wan_alpha_decoder,
    load_wan_alpha_full,
    load_wan_vae,
    merge_block_key_map,
    original_vae_key_map,
    to_original_vae_state,
    to_wan_alpha_state,
)

TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
            temperal_downsample=[False, True], scale_factor_temporal=2, scale_factor_spatial=4,
            latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on the shared 2-core machine, 2 OpenMP threads under load ran these
    tests ~20x slower (spin-waiting); restored afterwards for other modules."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _base(seed=0) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    return AutoencoderKLWan(**TINY).eval()


def _source_model(rank=4, seed=0) -> RGBAVAE:
    """A 'trained' tiny RGBA VAE: random base, random merge block, non-zero LoRAs."""
    m = RGBAVAE(_base(seed), lora_rank=rank, lora_alpha=1.0)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if ".lora_" in n or n.startswith("merge."):
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if ".lora_B." in n else 0.1))
    return m


def _clip():
    return torch.rand(1, 4, 5, 32, 32, generator=torch.Generator().manual_seed(0))


def test_full_wan21_key_map_matches_diffusers_conversion():
    m = original_vae_key_map()  # Wan 2.1 defaults: base_dim 96, dim_mult [1,2,4,4], 2 res blocks
    assert len(m) == len(set(m.values()))
    # pairs from diffusers' scripts/convert_wan_to_diffusers.py
    assert m["decoder.up_blocks.1.resnets.0.conv_shortcut.weight"] == "decoder.upsamples.4.shortcut.weight"
    assert m["decoder.up_blocks.2.upsamplers.0.resample.1.weight"] == "decoder.upsamples.11.resample.1.weight"
    assert m["decoder.up_blocks.3.resnets.2.conv2.bias"] == "decoder.upsamples.14.residual.6.bias"
    assert m["decoder.up_blocks.0.upsamplers.0.time_conv.weight"] == "decoder.upsamples.3.time_conv.weight"
    assert m["encoder.mid_block.attentions.0.to_qkv.weight"] == "encoder.middle.1.to_qkv.weight"
    assert m["encoder.down_blocks.5.time_conv.weight"] == "encoder.downsamples.5.time_conv.weight"
    assert m["encoder.down_blocks.0.norm1.gamma"] == "encoder.downsamples.0.residual.0.gamma"
    assert m["encoder.norm_out.gamma"] == "encoder.head.0.gamma" and m["quant_conv.bias"] == "conv1.bias"
    assert m["post_quant_conv.weight"] == "conv2.weight"


def test_wan_vae_pth_and_diffusers_dir(tmp_path):
    base = _base()
    orig = to_original_vae_state(base)
    assert "encoder.downsamples.0.residual.2.weight" in orig and "decoder.head.2.bias" in orig
    torch.save(orig, tmp_path / "Wan2.1_VAE.pth")
    got = load_wan_vae(tmp_path / "Wan2.1_VAE.pth", config=TINY)
    ref = base.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in got.state_dict().items())
    base.save_pretrained(tmp_path / "vae_dir")
    got2 = load_wan_vae(tmp_path / "vae_dir")
    assert all(torch.equal(v, ref[k]) for k, v in got2.state_dict().items())


def test_wan_vae_errors_name_the_key(tmp_path):
    orig = to_original_vae_state(_base())
    bad = dict(orig)
    bad["decoder.upsamples.99.residual.2.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected key 'decoder\.upsamples\.99\.residual\.2\.weight'"):
        load_wan_vae(tmp_path / "extra.pth", config=TINY)
    miss = dict(orig)
    del miss["encoder.middle.1.proj.bias"]
    torch.save(miss, tmp_path / "miss.pth")
    with pytest.raises(WeightsError, match=r"missing key 'encoder\.middle\.1\.proj\.bias'"):
        load_wan_vae(tmp_path / "miss.pth", config=TINY)
    with pytest.raises(WeightsError, match="not found"):
        load_wan_vae(tmp_path / "nope.pth")


def test_wan_alpha_decoder_bin(tmp_path):
    src = _source_model()
    sd = to_wan_alpha_state(src, include_merge=False)
    assert "vae_fgr.decoder.upsamples.0.residual.2.conv3D.lora_A.default.weight" in sd
    assert "vae_pha.decoder.upsamples.2.resample.1.lora_B.default.weight" in sd  # Conv2d: no .conv3D
    assert "vae_fgr.decoder.middle.1.to_qkv.lora_A.default.weight" in sd
    torch.save(sd, tmp_path / "decoder.bin")
    base = _base()  # the same frozen base
    model = load_wan_alpha_decoder(base, tmp_path / "decoder.bin")
    assert model.lora_rank == 4 and not model.encoder_ready
    z = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model.decode(z), src.decode(z), atol=1e-6)
        with pytest.raises(WeightsError, match="merge block"):
            model.encode(_clip())
    # with the merge block in a separate file, encode works and matches
    save_file({k: v for k, v in to_wan_alpha_state(src).items() if k.startswith("middle.")}, tmp_path / "m.safetensors")
    model = load_wan_alpha_decoder(_base(), tmp_path / "decoder.bin", merge_weights=tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.allclose(model.encode(_clip()), src.encode(_clip()), atol=1e-6)


def test_wan_alpha_decoder_bin_errors(tmp_path):
    sd = to_wan_alpha_state(_source_model(), include_merge=False)
    key = "vae_pha.decoder.head.2.conv3D.lora_B.default.weight"
    del sd[key]
    torch.save(sd, tmp_path / "d.bin")
    with pytest.raises(WeightsError, match=f"missing key '{key}'"):
        load_wan_alpha_decoder(_base(), tmp_path / "d.bin")
    sd[key] = torch.zeros(3, 4, 1, 1, 1)
    sd["vae_fgr.decoder.bogus.lora_A.default.weight"] = torch.zeros(4, 3, 1, 1, 1)
    torch.save(sd, tmp_path / "d.bin")
    with pytest.raises(WeightsError, match="unexpected key 'vae_fgr.decoder.bogus"):
        load_wan_alpha_decoder(_base(), tmp_path / "d.bin")


def test_wan_alpha_full_vae_bin(tmp_path):
    src = _source_model(seed=3)
    sd = to_wan_alpha_state(src, include_merge=True, include_base=True)
    assert "middle.block.conv1.weight" in sd and "middle.block.middle.3.to_qkv.weight" in sd
    assert "middle.block.middle.4.residual.6.bias" in sd and "middle.block.head.2.weight" in sd
    assert "vae_fgr.encoder.conv1.weight" in sd and "vae_fgr.conv2.weight" in sd
    assert "vae_fgr.decoder.conv1.conv3D.base_layer.weight" in sd
    assert not any(k.startswith("vae_fgr.encoder.head") for k in sd)
    torch.save(sd, tmp_path / "Wan-Alpha-VAE.bin")
    model = load_wan_alpha_full(_base(seed=99), tmp_path / "Wan-Alpha-VAE.bin")  # base weights come from the file
    x = _clip()
    with torch.no_grad():
        z = src.encode(x)
        assert torch.allclose(model.encode(x), z, atol=1e-6)
        assert torch.allclose(model.decode(z), src.decode(z), atol=1e-6)
    del sd["middle.block.head.0.gamma"]
    torch.save(sd, tmp_path / "bad.bin")
    with pytest.raises(WeightsError, match="missing key 'middle.block.head.0.gamma'"):
        load_wan_alpha_full(_base(), tmp_path / "bad.bin")
    assert len(merge_block_key_map()) == len(src.merge.state_dict())


def test_comfy_pair_loads_as_merged_decoders(tmp_path):
    src = _source_model(seed=5)
    z = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = src.decode(z)
        src.merge_lora()
    for adapter in ("rgb", "alpha"):
        full = AutoencoderKLWan(**TINY)
        sd = {k: v for k, v in src.base.state_dict().items() if not k.startswith("decoder.")}
        sd = {k: v for k, v in sd.items() if k in full.state_dict()}
        dec = {k.replace(".conv3D", ""): v for k, v in src.merged[adapter].state_dict().items()}
        sd.update({"decoder." + k: v for k, v in dec.items()})
        full.load_state_dict(sd, strict=True)
        save_file(to_original_vae_state(full), tmp_path / f"wan_alpha_2.1_vae_{adapter}_channel.safetensors")
    model = load_comfy_pair(tmp_path / "wan_alpha_2.1_vae_rgb_channel.safetensors",
                            tmp_path / "wan_alpha_2.1_vae_alpha_channel.safetensors", config=TINY)
    assert model.merged is not None and not model.has_lora and not model.encoder_ready
    with torch.no_grad():
        assert torch.allclose(model.decode(z), ref, atol=1e-5)


def test_vgg_loader(tmp_path):
    net = VGG16Relu22()
    sd = {k: v for k, v in net.state_dict().items()}
    sd["features.10.weight"] = torch.zeros(1)  # deeper torchvision layers are allowed and ignored
    save_file(sd, tmp_path / "vgg16.safetensors")
    got = VGG16Relu22.from_file(tmp_path / "vgg16.safetensors")
    assert all(torch.equal(got.state_dict()[k], net.state_dict()[k]) for k in VGG_KEYS)
    del sd["features.7.bias"]
    save_file(sd, tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="missing key 'features.7.bias'"):
        VGG16Relu22.from_file(tmp_path / "bad.safetensors")
