"""Training stages: a few steps lower the loss (tiny sizes, fixed batches), checkpoints resume."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from rgbacli.models.dora import add_dora_adapter, export_dora_state_dict
from rgbacli.models.position_embedding import attach_position_embedding
from rgbacli.models.rgba_vae import RGBAVAE
from rgbacli.models.text_encoder import TinyTextEncoder
from rgbacli.backends import WanAlphaBackend
from rgbacli.models.attention import processors
from rgbacli.models.text_mask import TextKeyMask, enable_text_mask
from rgbacli.train.base_vae import (BaseVAEConfig, cropped, decode_unclamped, init_latent_scale, new_base_vae,
                                    object_crops, object_weights, train_base_vae, uniform_colour_error)
from rgbacli.train.loop import LoopConfig, lr_at
from rgbacli.train.dit import DiTTrainConfig, eval_loss, shorten, train_dit
from rgbacli.train.latents import LatentSet, encode_procedural, latent_object_mask
from rgbacli.train.rgba_vae_stage import RGBAVAEConfig, train_rgba_vae

VAE = dict(base_dim=4, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[], temperal_downsample=[True],
           scale_factor_temporal=2, scale_factor_spatial=2)
DIT = dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
           text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)


class FixedClips:
    """The same small batch every time, so a few steps must lower the loss."""

    def __init__(self, b=2, t=5, size=16):
        from rgbacli.data import make_clip

        clips = [make_clip(seed, size=size, frames=t) for seed in range(b)]
        self.rgba = torch.stack([c.video_tensor() for c in clips]).float()
        self.captions = [c.caption for c in clips]

    def batch(self, n, window=None):
        x = self.rgba if window is None else self.rgba[:, :, :window]
        return x, self.captions


def _latents(n=4):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, 4, 3, 8, 8, generator=gen)
    caps = ["a red orb drifting left", "a blue star", "a glass jellyfish", "a green leaf spinning"][:n]
    masks = torch.zeros(n, 1, 3, 8, 8)
    masks[:, :, :, 2:5, 3:6] = 1.0  # an object on 9 of 64 cells
    still = z[:1, :, :1].expand(1, 4, 3, 8, 8).clone()
    return LatentSet(z, caps, still, caps[:1], masks, masks[:1].clone())


def test_base_vae_steps_lower_loss_and_resume(tmp_path):
    torch.manual_seed(0)
    vae = new_base_vae(VAE)
    src = FixedClips()
    x = src.rgba[:, :3] * 2 - 1

    def l1():
        with torch.no_grad():
            return (decode_unclamped(vae, vae.encode(x).latent_dist.mean) - x).abs().mean().item()

    init_latent_scale(vae, x)  # what train_base_vae does first (idempotent), so `before` is comparable
    before = l1()
    cfg = BaseVAEConfig(steps=12, minutes=5, batch=2, lr=3e-3, ckpt_every=6, warmup=1, image_steps=0)
    out = train_base_vae(vae, src, cfg, tmp_path / "ck.safetensors")
    assert out["steps"] == 12 and l1() < before * 0.9
    # resume restores the weights (a fresh model resumed at the end step equals the trained one) and
    # continues from the checkpoint's step count
    vae2 = new_base_vae(VAE)
    out2 = train_base_vae(vae2, src, BaseVAEConfig(steps=12, minutes=5, batch=2), tmp_path / "ck.safetensors",
                          resume=True)
    assert out2["steps"] == 12
    trained = dict(vae.named_parameters())
    assert all(torch.equal(p, trained[n]) for n, p in vae2.named_parameters())
    out3 = train_base_vae(vae2, src, BaseVAEConfig(steps=14, minutes=5, batch=2), tmp_path / "ck.safetensors",
                          resume=True)
    assert out3["steps"] == 14
    from rgbacli.errors import RgbaError

    with pytest.raises(RgbaError, match="nothing to resume"):
        train_base_vae(new_base_vae(VAE), src, BaseVAEConfig(steps=2, minutes=5, batch=2),
                       tmp_path / "none.safetensors", resume=True)


def test_latent_scale_init_gives_unit_posterior_mean():
    torch.manual_seed(0)
    vae = new_base_vae(VAE)
    x = FixedClips(b=4, t=1).rgba[:, :3] * 2 - 1
    with torch.no_grad():
        faint = vae.encode(x).latent_dist
        init_latent_scale(vae, x)
        scaled = vae.encode(x).latent_dist
    assert faint.mean.std() < 0.5
    per_channel = scaled.mean.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.std(1), torch.ones(4), atol=1e-4)
    assert per_channel.mean(1).abs().max() < 1e-4
    assert torch.equal(scaled.logvar, faint.logvar)  # only the mean half is rescaled


def test_object_weights_favour_object_pixels_at_mean_one():
    alpha = torch.zeros(2, 1, 3, 8, 8)
    alpha[:, :, :, 2:4, 2:4] = 1.0  # objects on 1/16 of the pixels
    w = object_weights(alpha, 10.0)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    assert torch.allclose(w[alpha > 0] / w[alpha == 0].max(), torch.tensor(11.0))
    assert torch.equal(object_weights(alpha, 0.0), torch.ones_like(alpha))
    err = torch.zeros_like(alpha)
    err[alpha > 0] = 1.0  # an error on the objects only counts 11x more than the same error elsewhere
    assert (object_weights(alpha, 10.0) * err).mean() > 5 * err.mean()


def test_object_crops_keep_the_object_in_one_window_per_clip():
    rgba = torch.zeros(3, 4, 5, 64, 64)
    rgba[0, :, :, 50:54, 2:6] = 1.0  # an object in a corner, still
    for t in range(5):  # an object moving right along row 20
        rgba[1, :, t, 20:24, 10 + 8 * t:14 + 8 * t] = 1.0
    rgba[1, :3] = torch.rand(3, 5, 64, 64)  # colour everywhere: the window must be the same for every frame
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        crops = object_crops(rgba, 32, gen)
        assert crops.shape == (3, 4, 5, 32, 32)
        assert crops[0, 3].sum() > 0 and crops[1, 3].sum() > 0  # the object is in view
        assert crops[2, 3].sum() == 0  # an empty clip still gives a (random) window
        # one window per clip: find it in the source by its first frame, then every frame matches it
        src = rgba[1, :3]
        hits = [(y, x) for y in range(33) for x in range(33)
                if torch.equal(src[:, 0, y:y + 32, x:x + 32], crops[1, :3, 0])]
        assert len(hits) == 1
        y, x = hits[0]
        assert torch.equal(crops[1], rgba[1, :, :, y:y + 32, x:x + 32])
    assert object_crops(rgba, 64, gen) is rgba


def test_crop_schedule_gives_whole_frames_to_both_causal_paths():
    full = [s for s in range(16) if not cropped(s, 32, 4)]
    assert full == [6, 7, 14, 15]  # a single-frame step (odd) and a video step (even) in every 8
    assert not any(cropped(s, 0, 4) for s in range(16))


def test_lr_schedule_warms_up_then_decays_to_the_floor_with_the_clock():
    cfg = LoopConfig(steps=1000, minutes=10.0, lr=1e-3, warmup=10, decay=0.1)
    assert lr_at(cfg, 0, 0.0) == 1e-4  # warm-up
    assert abs(lr_at(cfg, 10, 0.0) - 1e-3) < 1e-6  # peak once warm
    assert abs(lr_at(cfg, 500, 0.0) - 0.55e-3) < 1e-9  # half the steps: halfway down the cosine
    assert abs(lr_at(cfg, 20, 300.0) - 0.55e-3) < 1e-9  # half the minutes, same
    assert abs(lr_at(cfg, 1000, 0.0) - 1e-4) < 1e-12
    assert lr_at(LoopConfig(lr=1e-3, warmup=1, decay=1.0), 99, 500.0) == 1e-3  # decay 1: constant


def test_object_psnr_is_perfect_for_identity_and_low_for_a_flat_vae(monkeypatch):
    import rgbacli.train.base_vae as bv

    class PassThrough:
        def encode(self, x):
            return type("E", (), {"latent_dist": type("D", (), {"mode": lambda _s: x})()})()

    monkeypatch.setattr(bv, "decode_unclamped", lambda vae, z: z)
    assert bv.object_psnr(PassThrough(), n=2) == 100.0  # exact reconstruction hits the 1e-10 floor
    monkeypatch.setattr(bv, "decode_unclamped", lambda vae, z: torch.full_like(z, -1.0))  # objects gone
    assert bv.object_psnr(PassThrough(), n=2) < 15


def test_uniform_colour_error_separates_a_colour_blind_vae(monkeypatch):
    import rgbacli.train.base_vae as bv

    class PassThrough:  # encode returns the pixels; decode_unclamped is patched per case below
        def encode(self, x):
            return type("E", (), {"latent_dist": type("D", (), {"mode": lambda _s: x})()})()

    monkeypatch.setattr(bv, "decode_unclamped", lambda vae, z: z)
    assert uniform_colour_error(PassThrough()) == 0.0
    monkeypatch.setattr(bv, "decode_unclamped", lambda vae, z: z.mean(1, keepdim=True).expand_as(z))
    assert uniform_colour_error(PassThrough()) > 0.2  # luminance only: what the first tiny VAE learned


def test_rgba_vae_stage_lowers_loss():
    torch.manual_seed(0)
    model = RGBAVAE.from_config(VAE, lora_rank=2, lora_alpha=2)
    src = FixedClips()

    def rec_err():
        with torch.no_grad():
            return (model.decode(model.encode(src.rgba)) - src.rgba).abs().mean().item()

    before = rec_err()
    base_before = {k: v.clone() for k, v in model.base.encoder.state_dict().items()}
    train_rgba_vae(model, src, RGBAVAEConfig(steps=10, minutes=5, batch=2, image_batch=2, lr=3e-3, warmup=1),
                   __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "ck.safetensors")
    assert rec_err() < before
    for k, v in model.base.encoder.state_dict().items():  # the Wan encoder stays frozen
        assert torch.equal(v, base_before[k]), k


def test_base_dit_and_dora_steps_lower_loss(tmp_path):
    torch.manual_seed(0)
    data = _latents()
    text = TinyTextEncoder(width=32, layers=1, heads=2)
    dit = WanTransformer3DModel(**DIT)
    attach_position_embedding(dit, frames=4, rows=4, cols=4, init_std=0.3)
    enable_text_mask(dit)  # as the tiny recipe trains it
    params = {**{f"dit.{k}": p for k, p in dit.named_parameters()}, **{f"t.{k}": p for k, p in text.named_parameters()}}
    backend = WanAlphaBackend(dit)
    before = eval_loss(backend, text, data, n=4)
    cfg = DiTTrainConfig(steps=25, minutes=5, batch=4, lr=3e-3, warmup=1, p_motion_free=0.3, p_short=0.3)
    train_dit(backend, text, data, params, cfg, tmp_path / "dit.safetensors")
    mid = eval_loss(backend, text, data, n=4)
    assert mid < before

    # stage 4: DoRA only, on top of the trained base, with the object-weighted loss; exported in the
    # Wan-Alpha layout and merged back
    dit.requires_grad_(False)
    text.requires_grad_(False)
    add_dora_adapter(dit, rank=2, alpha=2.0)
    trainable = {k: p for k, p in dit.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in k for k in trainable)
    weighted = DiTTrainConfig(**{**cfg.__dict__, "object_weight": 4.0})
    unmasked = LatentSet(data.latents, data.captions, data.still, data.still_captions)
    with pytest.raises(ValueError, match="object masks"):
        train_dit(backend, text, unmasked, trainable, weighted, tmp_path / "no.safetensors")
    mid_weighted = eval_loss(backend, text, data, n=4, object_weight=4.0)
    assert mid_weighted != mid  # the masks count
    train_dit(backend, text, data, trainable, weighted, tmp_path / "dora.safetensors")
    assert eval_loss(backend, text, data, n=4, object_weight=4.0) < mid_weighted
    sd = export_dora_state_dict(dit)
    assert any(k.startswith("blocks.0.self_attn.q.lora_magnitude_vector") for k in sd)
    assert any(k.startswith("blocks.0.cross_attn.q.lora_magnitude_vector") for k in sd)
    assert any(isinstance(b, TextKeyMask) for b in processors(dit, "attn2")[0].behaviours)  # peft kept it


def test_latent_object_mask_marks_every_cell_the_object_touches():
    alpha = torch.zeros(1, 1, 5, 16, 16)
    alpha[:, :, :, 1:3, 9:11] = 1.0  # a small object in the top-right quarter
    alpha[:, :, 4, 13, 2] = 0.1  # a faint pixel in the last frame only
    m = latent_object_mask(alpha, (3, 4, 4))
    assert m.shape == (1, 1, 3, 4, 4)
    want = torch.zeros(3, 4, 4)
    want[:, 0, 2] = 1.0  # rows 1-2, cols 9-10 → cell (0, 2) in every latent frame
    want[-1, 3, 0] = 0.1  # the faint pixel keeps its alpha, in the last latent frame only
    assert torch.equal(m[0, 0], want)
    two = latent_object_mask(alpha, (6, 4, 4), copies=2)  # alpha tokens: [RGB frames ; alpha frames]
    assert torch.equal(two[:, :, :3], m) and torch.equal(two[:, :, 3:], m)


def test_encoded_latents_keep_object_masks_through_save_and_load(tmp_path):
    pool = torch.nn.AvgPool3d((1, 4, 4))  # a stand-in encoder with the tiny VAE's 4x spatial factor

    data = encode_procedural(lambda x: pool(x)[:, :, ::2], 6, seed0=3, size=32, frames=5, still_fraction=0.5,
                             batch=4)
    assert data.latents.shape == (6, 4, 3, 8, 8) and data.masks.shape == (6, 1, 3, 8, 8)
    assert data.still_masks.shape == (len(data.still_captions), 1, 3, 8, 8)
    # The mask is the pooled alpha: where the latent's alpha channel (an average) shows anything,
    # the mask (a max) is at least as large.
    assert torch.all(data.masks[:, 0] >= data.latents[:, 3] - 1e-6)
    assert 0 < float((data.masks > 0).float().mean()) < 0.9
    data.save(tmp_path / "set.safetensors")
    back = LatentSet.load(tmp_path / "set.safetensors")
    assert torch.allclose(back.masks, data.masks, atol=1e-3) and back.captions == data.captions
    LatentSet(data.latents, data.captions, data.still, data.still_captions).save(tmp_path / "old.safetensors")
    assert LatentSet.load(tmp_path / "old.safetensors").masks is None  # caches from before masks still load


def test_short_captions_leave_out_at_least_one_attribute_deterministically():
    cap = "a glass blue jellyfish slowly drifting upward"
    short = [shorten(cap, torch.Generator().manual_seed(s)) for s in range(40)]
    assert short == [shorten(cap, torch.Generator().manual_seed(s)) for s in range(40)]
    assert all(s != cap and "jellyfish" in s for s in short)
    assert {"a glass jellyfish", "a blue jellyfish slowly drifting upward", "a jellyfish"} <= set(short)


def test_merge_block_starts_in_the_base_latent_space():
    """After init_merge_from_encoder_head, encode() equals the base VAE's posterior mean of the
    hard-rendered RGB (normalised), so the RGB decoder and an RGB-trained DiT work from step 0."""
    from rgbacli.models.rgba_vae import hard_render

    torch.manual_seed(0)
    m = RGBAVAE.from_config(VAE, lora_rank=2, lora_alpha=2).init_merge_from_encoder_head().eval()
    x = FixedClips(b=1).rgba
    with torch.no_grad():
        z = m.denormalize(m.encode(x))
        ref = m.base.encode(hard_render(x, "black") * 2 - 1).latent_dist.mean
        x2 = x.clone()
        x2[:, 3] = x2[:, 3] * 0.5  # alpha changes that keep α>0 are invisible at init (alpha branch is zero)
        z2 = m.denormalize(m.encode(x2))
    assert torch.allclose(z, ref, atol=1e-4)
    assert torch.allclose(z, z2, atol=1e-5)


def test_train_latents_builds_a_stage_cache_ahead_of_time(tmp_path, cli):
    import json

    from rgbacli.train.latents import LatentSet
    from rgbacli.weights.own import save_model

    torch.manual_seed(0)
    vae = new_base_vae(VAE)
    save_model(vae, tmp_path / "base_vae.safetensors")
    r = cli("train", "latents", "base-dit", "--out", tmp_path, "--clips", "3", "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["clips"] == 3
    data = LatentSet.load(tmp_path / "rgb_latents.safetensors")
    assert data.latents.shape == (3, 4, 9, 32, 32)  # 17x64x64 through 2x temporal / 2x spatial
    assert len(data.captions) == 3 and torch.isfinite(data.latents).all()
    assert data.masks.shape == (3, 1, 9, 32, 32) and 0 < float(data.masks.mean()) < 0.5

    r = cli("train", "latents", "base-dit", "--out", tmp_path, "--clips", "5")  # cache kept, size mismatch said
    assert r.returncode == 0 and "holds 3 clips, not 5" in r.stderr
    assert LatentSet.load(tmp_path / "rgb_latents.safetensors").latents.shape[0] == 3

    r = cli("train", "latents", "alpha-tokens", "--out", tmp_path, "--clips", "2", "--threads", "1")
    assert r.returncode == 0, r.stderr
    tokens = LatentSet.load(tmp_path / "alpha_token_latents.safetensors")
    assert tokens.latents.shape == (2, 4, 18, 32, 32) and tokens.masks.shape == (2, 1, 18, 32, 32)
    assert torch.equal(tokens.masks[:, :, :9], tokens.masks[:, :, 9:])  # [RGB ; alpha]: the same mask twice
    assert 0 < float(tokens.masks.mean()) < 0.5

    r = cli("train", "latents", "dora", "--out", tmp_path, "--clips", "3")
    assert r.returncode == 1 and "vae.safetensors is missing" in r.stderr and "rgba train rgba-vae" in r.stderr
    r = cli("train", "latents", "sideways", "--out", tmp_path)
    assert r.returncode == 2 and "unknown stage 'sideways'" in r.stderr


def test_dora_stage_asks_to_re_encode_a_cache_without_object_masks(tmp_path):
    from rgbacli.errors import RgbaError
    from rgbacli.train.recipe import stage_dora

    d = _latents()
    LatentSet(d.latents, d.captions, d.still, d.still_captions).save(tmp_path / "rgba_latents.safetensors")
    with pytest.raises(RgbaError, match="encoded without object masks.*delete it"):
        stage_dora(tmp_path, 0.1, False, 4, lambda *a: None)


def _run_decoder_stage(stage, run):
    """A fresh tiny RGBA VAE saved in `run`, one short decoder stage on it: (before, after, result, clip)."""
    torch.manual_seed(0)
    RGBAVAE.from_config(VAE, lora_rank=2, lora_alpha=2).save(run / "vae.safetensors")
    before = RGBAVAE.load(run / "vae.safetensors").eval()
    out = stage(run, minutes=0.05, resume=False, folder=None, log=lambda *a, **k: None, eval_clips=1)
    return before, RGBAVAE.load(run / "vae.safetensors").eval(), out, FixedClips(b=1, t=5, size=64).rgba


def test_rgba_decoders_stage_keeps_the_latent_space(tmp_path):
    from rgbacli.train.recipe import stage_rgba_decoders

    before, after, out, x = _run_decoder_stage(stage_rgba_decoders, tmp_path)
    assert out["steps"] > 0 and 0.0 <= out["alpha_iou"] <= 1.0
    with torch.no_grad():
        assert torch.equal(before.encode(x), after.encode(x))  # merge block and encoder untouched
        changed = [n for n, p in after.named_parameters() if not torch.equal(p, dict(before.named_parameters())[n])]
    assert changed and all(".lora_" in n for n in changed)


def test_rgb_decoder_stage_trains_only_the_rgb_decoder_copy(tmp_path):
    """Stage 3c: encoder, merge block and alpha decoder untouched (so the latents and the generated
    alpha stay valid); the fused RGB decoder copy changes; rgba-decoders then refuses the merged file."""
    from rgbacli.errors import RgbaError
    from rgbacli.train.recipe import stage_rgb_decoder, stage_rgba_decoders

    before, after, out, x = _run_decoder_stage(stage_rgb_decoder, tmp_path)
    assert out["steps"] > 0 and after.merged is not None and not after.has_lora
    with torch.no_grad():
        z = before.encode(x)
        assert torch.equal(z, after.encode(x))
        old, new = before.decode(z), after.decode(z)
    torch.testing.assert_close(new[:, 3], old[:, 3], atol=1e-5, rtol=0)  # alpha: the same decoder, fused
    assert (new[:, :3] - old[:, :3]).abs().max() > 1e-3
    fused = before.merge_lora(drop_lora=True).merged
    changed = {n.split(".")[0] for n, p in after.merged.named_parameters()
               if not torch.equal(p, dict(fused.named_parameters())[n])}
    assert changed == {"rgb"}
    with pytest.raises(RgbaError, match="merged decoders.*run it before rgb-decoder"):
        stage_rgba_decoders(tmp_path, minutes=0.05, resume=False, folder=None, log=lambda *a, **k: None, eval_clips=1)


def test_training_the_fused_rgb_copy_alone_lowers_the_loss():
    """What stage 3c optimises: with only merged["rgb"] trainable, a few steps lower the RGB terms of
    stage 3's loss (soft and hard renders) and leave the alpha decode as it was."""
    from rgbacli.train.vae_losses import PerceptualLoss, rgba_vae_losses

    torch.manual_seed(0)
    model = RGBAVAE.from_config(VAE, lora_rank=2, lora_alpha=2).merge_lora(drop_lora=True)
    model.requires_grad_(False)
    model.merged["rgb"].requires_grad_(True)
    src = FixedClips()
    perceptual = PerceptualLoss(vae=model)

    @torch.no_grad()
    def evaluate():
        gen = torch.Generator().manual_seed(0)  # the same render colours before and after
        model.eval()
        losses = rgba_vae_losses(model(src.rgba, generator=gen), src.rgba, perceptual, gen)
        rgb = sum(float(v) for k, v in losses.items() if k.endswith(("_soft", "_hard")))
        return rgb, model.decode(model.encode(src.rgba))[:, 3]

    before, alpha_before = evaluate()
    train_rgba_vae(model, src, RGBAVAEConfig(steps=12, minutes=5, batch=2, image_batch=2, lr=3e-3, warmup=1),
                   __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "ck.safetensors", perceptual=perceptual)
    after, alpha_after = evaluate()
    print("stage-3 RGB terms", before, "->", after)
    assert after < before * 0.95  # 1.23 -> 1.11 here
    torch.testing.assert_close(alpha_after, alpha_before, atol=1e-6, rtol=0)


def test_rgb_decoder_cli_without_a_stage_3_vae(tmp_path, cli):
    r = cli("train", "rgb-decoder", "--out", tmp_path, "--minutes", "0.01")
    assert r.returncode == 1 and "vae.safetensors is missing" in r.stderr and "rgba train rgba-vae" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "vae.safetensors").exists()


def test_stage_cli_refuses_to_clobber_a_run_and_resumes_only_from_a_checkpoint(tmp_path, cli):
    import json

    torch.manual_seed(0)
    RGBAVAE.from_config(VAE, lora_rank=2, lora_alpha=2).save(tmp_path / "vae.safetensors")
    original = (tmp_path / "vae.safetensors").read_bytes()
    args = ("train", "rgba-decoders", "--out", tmp_path, "--minutes", "0.01", "--threads", "1", "--json",
            "--eval-clips", "1")  # one held-out clip for its before/after figure (default 8): seconds, not minutes

    r = cli(*args, "--resume")
    assert r.returncode == 1 and "nothing to resume" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "vae.safetensors").read_bytes() == original

    r = cli(*args)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["stage"] == "rgba-decoders" and first["steps"] > 0
    trained = (tmp_path / "vae.safetensors").read_bytes()
    assert trained != original

    r = cli(*args)  # ran before: refused, nothing touched
    assert r.returncode == 1 and "already exists: rgba-decoders has run" in r.stderr and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (tmp_path / "vae.safetensors").read_bytes() == trained

    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] > first["steps"]  # continued from the checkpoint's step
    r = cli(*args, "--force")
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob(".*tmp*"))  # atomic saves leave no temporary files behind


@pytest.mark.parametrize("flags, code, message", [
    (("--minutes", "0"), 2, "--minutes must be positive"),
    (("--minutes", "-1"), 2, "--minutes must be positive"),
    (("--threads", "0"), 2, "--threads must be at least 1"),
    (("--clips", "0"), 2, "--clips must be at least 1"),
])
def test_stage_cli_rejects_bad_numbers_before_creating_anything(tmp_path, cli, flags, code, message):
    run = tmp_path / "run"
    r = cli("train", "base-dit", "--out", run, *flags)
    assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not run.exists()


def test_stage_cli_rejects_a_file_as_run_folder_a_bad_data_folder_and_a_missing_vgg_file(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    r = cli("train", "base-vae", "--out", tmp_path / "file", "--minutes", "0.01")
    assert r.returncode == 1 and "is a file, not a run folder" in r.stderr
    r = cli("train", "base-vae", "--out", tmp_path / "run", "--data", tmp_path / "nowhere")
    assert r.returncode == 1 and "not a directory of clips" in r.stderr and not (tmp_path / "run").exists()
    r = cli("train", "rgba-vae", "--out", tmp_path / "run", "--vgg", tmp_path / "vgg16.pth")
    assert r.returncode == 1 and "vgg16.pth: no such weights file" in r.stderr and not (tmp_path / "run").exists()


def test_export_checks_every_file_first_and_replaces_only_with_force(tmp_path):
    from rgbacli.errors import OutputExistsError, RgbaError
    from rgbacli.train.recipe import SHIPPED, export

    run, to = tmp_path / "run", tmp_path / "weights"
    run.mkdir()
    for name in SHIPPED[:-1]:
        (run / name).write_bytes(name.encode())
    assert SHIPPED[-1] == "trajectory.safetensors"
    with pytest.raises(RgbaError, match="trajectory.safetensors is missing: run `rgba train trajectory"):
        export(run, to)
    assert not to.exists()
    (run / SHIPPED[-1]).write_bytes(b"tokens")
    assert [p.read_bytes() for p in export(run, to)] == [(run / n).read_bytes() for n in SHIPPED]
    assert export(run, to)  # identical files: nothing to replace, no --force needed
    (run / "vae.safetensors").write_bytes(b"retrained")
    with pytest.raises(OutputExistsError, match="vae.safetensors already exists and differs.*--force"):
        export(run, to)
    assert (to / "vae.safetensors").read_bytes() == b"vae.safetensors"
    export(run, to, force=True)
    assert (to / "vae.safetensors").read_bytes() == b"retrained"


def _rgb_run(run):
    """A run folder with a tiny-config base VAE (random weights), as stage 1 leaves it."""
    from rgbacli.train import tiny_config as tc
    from rgbacli.weights.own import save_model

    torch.manual_seed(0)
    save_model(new_base_vae(tc.TINY_VAE), run / "base_vae.safetensors")


def test_a_latent_cache_is_encoded_again_when_its_encoder_or_its_clips_change(tmp_path, capsys):
    from rgbacli.train.recipe import rgb_latents

    _rgb_run(tmp_path)
    first = rgb_latents(tmp_path, 2, lambda *a: None)
    assert first.source == "procedural" and first.probe is not None
    again = rgb_latents(tmp_path, 2, lambda *a: None)  # same encoder: the cache is used as it is
    assert torch.equal(again.latents, first.latents)
    assert "encoding it again" not in capsys.readouterr().err

    torch.manual_seed(1)  # stage 1 trained again: other weights, so other latents
    from rgbacli.train import tiny_config as tc
    from rgbacli.weights.own import save_model

    save_model(new_base_vae(tc.TINY_VAE), tmp_path / "base_vae.safetensors")
    fresh = rgb_latents(tmp_path, 2, lambda *a: None)
    assert "encoding it again (its VAE encoder has changed since)" in capsys.readouterr().err
    assert not torch.allclose(fresh.latents, first.latents)
    assert torch.equal(LatentSet.load(tmp_path / "rgb_latents.safetensors").latents, fresh.latents)


def _clip_folder(folder, captions):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for i, caption in enumerate(captions):
        frames = np.zeros((6, 64, 64, 4), np.uint8)
        for t in range(6):
            frames[t, 20:40, 8 + 4 * t:28 + 4 * t] = (40, 60, 220, 255)
        ims = [Image.fromarray(f, "RGBA") for f in frames]
        ims[0].save(folder / f"clip{i}.png", save_all=True, append_images=ims[1:], duration=125, format="PNG")
        (folder / f"clip{i}.txt").write_text(caption)


def test_dit_stages_train_on_a_folder_of_captioned_clips(tmp_path, capsys):
    """base-dit on user clips learns their caption words (vocabulary grows); dora on clips whose words
    the frozen text encoder lacks says which, once."""
    from rgbacli.train import tiny_config as tc
    from rgbacli.train.recipe import load_base_vae, stage_base_dit, stage_dora

    run = tmp_path / "run"
    run.mkdir()
    _rgb_run(run)
    clips = tmp_path / "clips"
    _clip_folder(clips, ["a cobalt widget sliding right", "a blue widget"])
    out = stage_base_dit(run, 0.02, False, 50, lambda *a: None, folder=str(clips))
    assert out["steps"] > 0
    cache = LatentSet.load(run / "rgb_latents.safetensors")
    assert cache.source == f"folder:{clips.resolve()}" and len(cache.captions) == 2  # each clip once
    assert cache.latents.shape == (2, 8, 9, 16, 16) and cache.masks.amax() > 0
    text = TinyTextEncoder.load(run / "text_encoder.safetensors")
    from rgbacli.models.text_encoder import default_vocab

    assert {"cobalt", "widget", "sliding"} <= set(text.vocab)
    assert text.vocab[:len(default_vocab())] == default_vocab()  # known words keep their ids

    model = RGBAVAE(load_base_vae(run / "base_vae.safetensors"), lora_rank=tc.TINY_VAE_LORA["rank"],
                    lora_alpha=tc.TINY_VAE_LORA["alpha"]).init_merge_from_encoder_head()
    model.save(run / "vae.safetensors")
    other = tmp_path / "other"
    _clip_folder(other, ["a cobalt gizmo spinning", "a blue gizmo"])
    capsys.readouterr()
    out = stage_dora(run, 0.02, False, 50, lambda *a: None, folder=str(other))
    assert out["steps"] > 0 and (run / "dora.safetensors").exists()
    err = capsys.readouterr().err
    assert "outside the text encoder's vocabulary (set by base-dit) are ignored: gizmo\n" in err
