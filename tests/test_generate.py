"""`rgba generate`: pipeline shapes, determinism, guidance pass counts, adapters, CLI behaviour."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_test_preset

from rgbacli.engine import Engine
from rgbacli.errors import UsageError
from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset


def _count_forwards(model):
    calls = []
    def hook(module, args, kwargs, out):
        calls.append((kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).shape[0])

    handle = model.register_forward_hook(hook, with_kwargs=True)
    return calls, handle


def test_pipeline_shapes_determinism_and_trim(tiny_preset):
    eng = Engine(str(tiny_preset), device="cpu")
    pipe = TextToRGBAPipeline(eng)
    p = params_from_preset(eng, "a glass jellyfish", seed=3, frames=6)  # 6 → 2 latent frames → 7 decoded → trim
    a = pipe(p)
    assert a.frames.shape == (6, 16, 16, 4) and a.frames.dtype == torch.float32
    assert float(a.frames.min()) >= 0.0 and float(a.frames.max()) <= 1.0
    b = pipe(p)
    assert torch.equal(a.frames, b.frames)  # same seed, same device → identical
    c = pipe(params_from_preset(eng, "a glass jellyfish", seed=4, frames=6))
    assert not torch.equal(a.frames, c.frames)
    assert a.frames[..., 3].std() > 0  # the alpha decoder really produced a varying channel


@pytest.mark.parametrize("guidance,motion,passes", [(1.0, None, 1), (4.0, None, 2), (4.0, 1.2, 3)])
def test_guidance_pass_counts(tiny_preset, guidance, motion, passes):
    eng = Engine(str(tiny_preset), device="cpu")
    calls, handle = _count_forwards(eng.component("transformer"))
    p = params_from_preset(eng, "a red orb", steps=3, guidance=guidance, motion_guidance=motion)
    out = TextToRGBAPipeline(eng)(p)
    handle.remove()
    assert calls == [passes] * 3  # one batched forward per step, `passes` samples in it
    assert out.passes_per_step == passes


def test_motion_guidance_changes_output_only_when_not_one(tiny_preset):
    eng = Engine(str(tiny_preset), device="cpu")
    pipe = TextToRGBAPipeline(eng)
    base = pipe(params_from_preset(eng, "a red orb", guidance=3.0)).frames
    same = pipe(params_from_preset(eng, "a red orb", guidance=3.0, motion_guidance=1.0)).frames
    moved = pipe(params_from_preset(eng, "a red orb", guidance=3.0, motion_guidance=1.3)).frames
    assert torch.allclose(base, same, atol=1e-6)  # λM = 1 is plain CFG
    assert not torch.allclose(base, moved, atol=1e-4)


def test_bad_size_is_usage_error(tiny_preset):
    eng = Engine(str(tiny_preset), device="cpu")
    with pytest.raises(UsageError, match="multiples of 4"):
        TextToRGBAPipeline(eng)(params_from_preset(eng, "x", width=18, height=16))


def test_dora_adapter_from_preset_is_merged(tmp_path):
    """A DoRA file named by the preset (Wan-Alpha layout) is merged into the DiT at load."""
    from safetensors.torch import save_file

    from rgbacli.models.dora import add_dora_adapter, export_dora_state_dict

    plain = Engine(str(write_test_preset(tmp_path, "plain")), device="cpu").component("transformer")
    donor = Engine(str(write_test_preset(tmp_path, "donor")), device="cpu").component("transformer")
    add_dora_adapter(donor, rank=2)
    with torch.no_grad():
        for name, prm in donor.named_parameters():
            if "lora_B" in name:
                prm.normal_(std=0.1)
    save_file({k: v.contiguous() for k, v in export_dora_state_dict(donor).items()}, str(tmp_path / "d.safetensors"))
    preset = write_test_preset(tmp_path, "dora", adapters='adapters = [{ kind = "dora", path = "d.safetensors" }]')
    merged = Engine(str(preset), device="cpu").component("transformer")
    x, t, ctx = torch.randn(1, 4, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 24, 32)
    with torch.no_grad():
        ref = donor(x, t, ctx, return_dict=False)[0]
        got = merged(x, t, ctx, return_dict=False)[0]
        base = plain(x, t, ctx, return_dict=False)[0]
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)


def test_alpha_token_backend_runs_on_wan(tmp_path):
    from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights

    base = Engine(str(write_test_preset(tmp_path, "b")), device="cpu").component("transformer")
    dit = AlphaTokenTransformer(base, rank=2, lora_alpha=2.0)
    with torch.no_grad():
        for prm in dit.adapter_parameters():
            prm.normal_(std=0.1)
    save_alpha_token_weights(dit, tmp_path / "at.safetensors")
    preset = write_test_preset(tmp_path, "at", backend="alpha-tokens",
                               adapters='adapters = [{ kind = "alpha-tokens", path = "at.safetensors", rank = 2, alpha = 2.0 }]')
    eng = Engine(str(preset), device="cpu")
    calls, handle = _count_forwards(eng.component("transformer").base)
    out = TextToRGBAPipeline(eng)(params_from_preset(eng, "a red orb", frames=5))
    handle.remove()
    assert out.frames.shape == (5, 16, 16, 4)
    # the DiT saw doubled latent frames: 3 RGB + 3 alpha
    assert eng.component("transformer").base.config.in_channels == 4
    assert len(calls) == 2


# ----------------------------------------------------------------------------- CLI (real subprocess)
def test_cli_generate_writes_clip_and_json(cli, tmp_path, tiny_preset):
    out = tmp_path / "clip.%04d.png"
    r = cli("generate", "a glass jellyfish", "--preset", tiny_preset, "-o", out, "--seed", "5", "--json",
            "--preview", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["frames"] == 5 and doc["size"] == "16x16" and doc["passes_per_step"] == 1 and doc["seed"] == 5
    frames = sorted(tmp_path.glob("clip.0*.png"))
    assert [f.name for f in frames] == [f"clip.{i:04d}.png" for i in range(1, 6)]
    assert (tmp_path / "clip.preview.mp4").stat().st_size > 0 and (tmp_path / "clip.sheet.png").stat().st_size > 0
    # same seed again (with --force) → byte-identical frames
    first = [f.read_bytes() for f in frames]
    r2 = cli("generate", "a glass jellyfish", "--preset", tiny_preset, "-o", out, "--seed", "5", "--force",
             cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert [f.read_bytes() for f in sorted(tmp_path.glob("clip.0*.png"))] == first


def test_cli_generate_errors(cli, tmp_path, tiny_preset):
    r = cli("generate", "x", "--preset", "nope", "-o", tmp_path / "a.mov")
    assert r.returncode == 2 and "unknown preset 'nope'" in r.stderr and "Traceback" not in r.stderr
    missing = write_test_preset(tmp_path, "m", adapters='adapters = [{ kind = "dora", path = "absent.safetensors" }]')
    r = cli("generate", "x", "--preset", missing, "-o", tmp_path / "a.mov")
    assert r.returncode == 1 and "absent.safetensors" in r.stderr and "preset 'm'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("generate", "x", "--preset", tiny_preset, "-o", tmp_path / "a.mov", "--size", "17x16")
    assert r.returncode == 2 and "multiples of 4" in r.stderr
    existing = tmp_path / "keep.mov"
    existing.write_bytes(b"precious")
    r = cli("generate", "x", "--preset", tiny_preset, "-o", existing)
    assert r.returncode == 1 and "--force" in r.stderr and existing.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_cli_batch_manifest_failure_and_resume(cli, tmp_path, tiny_preset):
    prompts = tmp_path / "p.txt"
    prompts.write_text('a red orb\n{"prompt": "a blue star", "seed": 9}\n{"prompt": broken\n')
    pattern = str(tmp_path / "out" / "{index:03d}-{slug}.apng")
    (tmp_path / "out").mkdir()
    r = cli("generate", "--prompts", prompts, "-o", pattern, "--preset", tiny_preset, "--json")
    assert r.returncode == 1, r.stderr  # one bad line → non-zero, the others still ran
    doc = json.loads(r.stdout)
    status = [(e["index"], e["status"]) for e in doc["items"]]
    assert status == [(0, "ok"), (1, "ok"), (2, "failed")]
    assert "line 3: invalid JSON" in doc["items"][2]["error"] and "line 3" in r.stderr
    assert doc["items"][1]["seed"] == 9 and doc["items"][0]["seed"] == 0
    first = tmp_path / "out" / "000-a-red-orb.apng"
    assert first.exists() and (tmp_path / "out" / "001-a-blue-star.apng").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["failed"] == 1 and manifest["ok"] == 2
    mtime = first.stat().st_mtime_ns
    prompts.write_text('a red orb\n{"prompt": "a blue star", "seed": 9}\n')
    r = cli("generate", "--prompts", "-", "-o", pattern, "--preset", tiny_preset, "--resume", "--json",
            input=prompts.read_text())
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [e.get("skipped") for e in doc["items"]] == [True, True]
    assert first.stat().st_mtime_ns == mtime


def test_backend_flag_picks_the_variant(cli, tmp_path):
    """--backend alpha-tokens switches to the preset's declared variant; without one it is a usage error."""
    from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights

    base = Engine(str(write_test_preset(tmp_path, "b")), device="cpu").component("transformer")
    save_alpha_token_weights(AlphaTokenTransformer(base, rank=2, lora_alpha=2.0), tmp_path / "at.safetensors")
    variant = write_test_preset(tmp_path, "v-at", backend="alpha-tokens",
                                adapters='adapters = [{ kind = "alpha-tokens", path = "at.safetensors", rank = 2, alpha = 2.0 }]')
    main = write_test_preset(tmp_path, "v-main")
    main.write_text(main.read_text().replace('family = "wan"', f'family = "wan"\nvariants = {{ alpha-tokens = "{variant}" }}'))
    r = cli("generate", "a red orb", "--preset", main, "--backend", "alpha-tokens", "-o", tmp_path / "o.apng", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["preset"] == "v-at"
    r = cli("generate", "a red orb", "--preset", variant, "--backend", "alpha-tokens", "-o", tmp_path / "o2.apng")
    assert r.returncode == 0, r.stderr  # already that backend
    r = cli("generate", "a red orb", "--preset", tmp_path / "b.toml", "--backend", "alpha-tokens", "-o", tmp_path / "x.apng")
    assert r.returncode == 2 and "has no alpha-tokens backend" in r.stderr and not (tmp_path / "x.apng").exists()


# ----------------------------------------------------------------------------- pipeline steps
def test_batch_of_clips_matches_clips_one_by_one(tiny_preset):
    """Clips that share their sampling settings sample as one batch; each keeps its prompt and seed."""
    eng = Engine(str(tiny_preset), device="cpu")
    pipe = TextToRGBAPipeline(eng)
    ps = [params_from_preset(eng, "a red orb", seed=1, guidance=3.0, motion_guidance=1.2),
          params_from_preset(eng, "a blue star", seed=2, guidance=3.0, motion_guidance=1.2)]
    calls, handle = _count_forwards(eng.component("transformer"))
    batched = pipe.generate_batch(ps)
    handle.remove()
    assert calls == [6] * ps[0].steps  # 2 clips × 3 guidance passes in one forward per step
    for p, got in zip(ps, batched):
        alone = pipe(p).frames
        assert got.frames.shape == alone.shape == (5, 16, 16, 4)
        torch.testing.assert_close(got.frames, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0].frames, batched[1].frames, atol=1e-3)
    with pytest.raises(UsageError, match="share frames, size"):
        pipe.generate_batch([ps[0], params_from_preset(eng, "x", frames=9)])


def test_step_callback_and_extra_conditioning_reach_the_loop(tiny_preset):
    from rgbacli.models.attention import Behaviour, attach

    eng = Engine(str(tiny_preset), device="cpu")
    pipe = TextToRGBAPipeline(eng)
    p = params_from_preset(eng, "a red orb", steps=3, guidance=2.0)
    seen, conds = [], []

    class Probe(Behaviour):
        def kv(self, call, query, key, value, mask):
            conds.append(call.context.values["cond"]["probe"].clone())
            return key, value, mask

    def callback(pipeline, step, timestep, values):
        seen.append((step, float(timestep), tuple(values["latents"].shape), tuple(values["prediction"].shape)))
        return {"latents": torch.zeros_like(values["latents"])} if step == 2 else {}

    probe = attach(eng.component("transformer"), lambda i: Probe(), "attn1", blocks=[0])
    out = pipe(p, cond={"probe": torch.tensor([[7.0]])}, callback_on_step_end=callback)
    probe.remove()
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][2] == seen[0][3] == (1, 4, 3, 8, 8)
    assert seen[0][1] > seen[1][1] > seen[2][1]  # timesteps run from noise to data
    assert [c.flatten().tolist() for c in conds] == [[7.0, 7.0]] * 3  # one copy per guidance pass
    zeros = pipe.decode(torch.zeros(1, 4, 3, 8, 8), p)[0]  # the last step's latents were replaced
    torch.testing.assert_close(out.frames, zeros)
