"""The TransPixar backend on CogVideoX end to end: alpha tokens, 3-D RoPE, DDIM v-prediction, CogVideoX VAE."""

from __future__ import annotations

import json

import torch

from rgbacli.engine import Engine
from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

TRANSFORMER = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
                   text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
                   temporal_compression_ratio=4, max_text_seq_length=24, use_rotary_positional_embeddings=True)
VAE = dict(block_out_channels=[8, 16, 16, 16], down_block_types=["CogVideoXDownBlock3D"] * 4,
           up_block_types=["CogVideoXUpBlock3D"] * 4, latent_channels=4, layers_per_block=1, norm_num_groups=4,
           temporal_compression_ratio=4)


def _table(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"


def write_cog_preset(tmp_path, solver="cogvideox-ddim", adapter_std=0.05, extra=""):
    """A random CogVideoX + alpha-token preset (adapter file in TransPixar's layout)."""
    from diffusers import CogVideoXTransformer3DModel

    from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights

    torch.manual_seed(0)
    dit = AlphaTokenTransformer(CogVideoXTransformer3DModel(**TRANSFORMER), rank=2, lora_alpha=2.0)
    with torch.no_grad():
        for p in dit.adapter_parameters():
            p.normal_(std=adapter_std) if adapter_std else p.zero_()
    save_alpha_token_weights(dit, tmp_path / "cogvideox_rgba_lora.safetensors")
    preset = tmp_path / "cog.toml"
    preset.write_text(f"""
name = "cog-test"
backend = "alpha-tokens"
family = "cogvideox"
[text_encoder]
kind = "tiny"
format = "random"
config = {{ width = 32, layers = 1, heads = 2, max_len = 24 }}
[transformer]
format = "random"
config = {_table(TRANSFORMER)}
adapters = [{{ kind = "alpha-tokens", path = "cogvideox_rgba_lora.safetensors", rank = 2, alpha = 2.0 }}]
[vae]
format = "random"
config = {_table(VAE)}
[sampling]
width = 64
height = 64
frames = 9
steps = 2
guidance = 2.0
shift = 1.0
solver = "{solver}"
{extra}
""")
    return preset


def test_transpixar_cogvideox_generate(tmp_path):
    eng = Engine(str(write_cog_preset(tmp_path)), device="cpu")
    assert (eng.component("vae").temporal_factor, eng.component("vae").spatial_factor) == (4, 8)
    seen = []
    eng.component("transformer").base.register_forward_hook(
        lambda m, a, k, o: seen.append((k["hidden_states"] if "hidden_states" in k else a[0]).shape), with_kwargs=True)
    out = TextToRGBAPipeline(eng)(params_from_preset(eng, "a red orb"))
    assert out.frames.shape == (9, 64, 64, 4)
    # CogVideoX takes (B, F, C, H, W): 3 RGB + 3 alpha latent frames, CFG doubles the batch
    assert seen[0][:2] == (2, 6)
    alpha = out.frames[..., 3]
    assert 0.0 <= float(alpha.min()) and float(alpha.max()) <= 1.0 and float(alpha.std()) > 0


def test_sampler_matches_cogvideox_pipeline(tmp_path):
    """CogVideoXDPMScheduler (trailing), dynamic CFG, guidance 6: our loop on the alpha-token
    backend gives CogVideoXPipeline's final latents (same DiT, embeddings, noise, generator)."""
    from rgbacli.parity import cogvideox_pipeline_latents
    from rgbacli.pipelines.guidance import GuidancePlan

    eng = Engine(str(write_cog_preset(tmp_path, "cogvideox-dpm", adapter_std=0.05)), device="cpu")
    pipe = TextToRGBAPipeline(eng)
    p = params_from_preset(eng, "a red orb", steps=4, guidance=6.0, dynamic_cfg=True)
    plan = GuidancePlan.build(p.guidance)
    g = torch.Generator().manual_seed(0)
    text, uncond = torch.randn(1, 24, 32, generator=g), torch.randn(1, 24, 32, generator=g)
    latents = pipe.prepare_latents(p, [7])
    ours = pipe.denoise(latents, text, uncond, p, plan, seeds=[7])
    ref_gen = torch.Generator().manual_seed(7)
    torch.randn(latents[0].numel() // 2, generator=ref_gen)  # the initial noise the seed drew
    with torch.no_grad():
        ref = cogvideox_pipeline_latents(eng.component("transformer"), latents, text, uncond, 4, 6.0, True, ref_gen)
    assert (ours - ref).abs().max() <= 1e-5
    static = pipe.denoise(latents, text, uncond, params_from_preset(eng, "a red orb", steps=4, guidance=6.0), plan,
                          seeds=[7])
    assert (static - ours).abs().max() > 1e-3  # dynamic CFG changes the result
