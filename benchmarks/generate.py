"""Generate benchmark: RGBA overhead, alpha-token cost, and time/peak memory vs clip length.

    python benchmarks/generate.py                 # CPU: tiny preset (trained weights) + medium random config
    python benchmarks/generate.py --device cuda   # + random-init Wan2.1-1.3B at 832x480x81, bf16, vs WanPipeline
    python benchmarks/generate.py --vs-diffusers  # our sampler vs WanPipeline / CogVideoXPipeline (CPU, fp32)

Every comparison is measured side by side in one run (alternating, best of --repeat) because
machines are noisy. Peak memory runs each case in a fresh process (CPU: ru_maxrss delta with
MALLOC_MMAP_THRESHOLD_ so the figure reflects live tensors; CUDA: max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEDIUM = """
name = "{name}"
backend = "{backend}"
family = "wan"
[text_encoder]
kind = "tiny"
format = "random"
config = {{ width = {text_dim}, layers = 1, heads = 4, max_len = 24 }}
[transformer]
format = "random"
config = {{ patch_size = [1, 2, 2], num_attention_heads = {heads}, attention_head_dim = {head_dim}, in_channels = 16, out_channels = 16, text_dim = {text_dim}, freq_dim = 256, ffn_dim = {ffn}, num_layers = {layers}, rope_max_seq_len = 1024 }}
{adapters}
[vae]
format = "random"
config = {{ base_dim = {vae_dim}, z_dim = 16 }}
rank = {rank}
alpha = 1
"""
MEDIUM_CFG = dict(heads=4, head_dim=32, ffn=512, layers=4, text_dim=128, vae_dim=16, rank=8)
WAN13B_CFG = dict(heads=12, head_dim=128, ffn=8960, layers=30, text_dim=4096, vae_dim=96, rank=128)


def write_preset(folder: Path, name: str, cfg: dict, backend: str = "wan-alpha") -> Path:
    """A random-initialised preset; the alpha-token variant gets a zero-init alpha-token file."""
    adapters = ""
    if backend == "alpha-tokens":
        from rgbacli.engine import Engine
        from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights

        base_preset = write_preset(folder, name + "-base", cfg)
        dit = AlphaTokenTransformer(Engine(str(base_preset), device="cpu").component("transformer"), rank=16, lora_alpha=16.0)
        save_alpha_token_weights(dit, folder / f"{name}.alpha.safetensors")
        adapters = f'adapters = [{{ kind = "alpha-tokens", path = "{name}.alpha.safetensors", rank = 16, alpha = 16.0 }}]'
    path = folder / f"{name}.toml"
    path.write_text(MEDIUM.format(name=name, backend=backend, adapters=adapters, **cfg))
    return path


def timed_generate(pipe, params, decode: str) -> float:
    t = time.perf_counter()
    pipe(params, decode=decode)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def overhead(preset: str, size: int, frames: int, steps: int, device: str, repeat: int, at_preset: str | None) -> dict:
    """RGBA generate vs the same generate decoding RGB only (and alpha tokens vs RGB only)."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    eng = Engine(preset, device=device)
    pipe = TextToRGBAPipeline(eng)
    p = params_from_preset(eng, "a glass jellyfish", width=size, height=size, frames=frames, steps=steps, seed=0)
    at_pipe = TextToRGBAPipeline(Engine(at_preset, device=device)) if at_preset else None
    if at_pipe:
        at_p = params_from_preset(at_pipe.engine, p.prompt, width=size, height=size, frames=frames, steps=steps,
                                  guidance=p.guidance, seed=0)
    timed_generate(pipe, p, "rgb")  # warm-up: loads the components
    if at_pipe:
        timed_generate(at_pipe, at_p, "rgba")
    rgb, rgba, at = [], [], []
    for _ in range(repeat):
        rgb.append(timed_generate(pipe, p, "rgb"))
        rgba.append(timed_generate(pipe, p, "rgba"))
        if at_pipe:
            at.append(timed_generate(at_pipe, at_p, "rgba"))
    out = {"size": size, "frames": frames, "steps": steps, "rgb_only_s": min(rgb), "rgba_s": min(rgba),
           "rgba_over_rgb": min(rgba) / min(rgb)}
    if at:
        out.update(alpha_tokens_s=min(at), alpha_tokens_over_rgb=min(at) / min(rgb))
    return out


def child(args) -> None:
    """One generate in this fresh process; prints seconds and the peak-memory delta as JSON."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    torch.set_num_threads(args.threads)
    eng = Engine(args.preset, device=args.device)
    pipe = TextToRGBAPipeline(eng)
    p = params_from_preset(eng, "a glass jellyfish", width=args.width, height=args.height, frames=args.frames,
                           steps=args.steps, seed=0)
    for name in ("transformer", "vae", "text_encoder"):  # load before measuring
        eng.component(name)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # high-water mark after loading
    t = time.perf_counter()
    result = pipe(p)
    if cuda:
        torch.cuda.synchronize()
        peak, loaded = torch.cuda.max_memory_allocated(), before
    else:  # absolute peak RSS of the process; `loaded_mb` is the peak reached while loading
        peak, loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, before
    print(json.dumps({"frames": args.frames, "seconds": time.perf_counter() - t, "peak_mb": peak / 2**20,
                      "loaded_mb": loaded / 2**20, "per_step_s": result.timings["denoise_s"] / args.steps,
                      **result.timings}))


def run_child(preset: Path, frames: int, width: int, height: int, steps: int, device: str, threads: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", "--preset", str(preset), "--frames", str(frames), "--width",
           str(width), "--height", str(height), "--steps", str(steps), "--device", device, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wan_pipeline_gpu(preset: Path, width: int, height: int, frames: int, steps: int) -> dict:
    """diffusers' WanPipeline on the same random-initialised components (prompt embeddings given)."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from rgbacli.engine import Engine

    eng = Engine(str(preset), device="cuda")
    vae = eng.component("vae").base  # the plain Wan VAE inside our RGBA VAE: RGB decode, as WanPipeline does
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=eng.component("transformer"), vae=vae,
                       scheduler=sched)
    emb = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    t = time.perf_counter()
    pipe(prompt_embeds=emb, height=height, width=width, num_frames=frames, num_inference_steps=steps,
         guidance_scale=1.0, output_type="latent")
    torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t, "peak_mb": (torch.cuda.max_memory_allocated() - before) / 2**20}


def flop_ratios(steps: int = 4) -> dict:
    """Compute (not time) at real scale, counted on meta tensors: one DiT step of Wan2.1-1.3B/14B and
    one Wan 2.1 VAE decode at 832x480x81, and the RGBA/RGB-only ratio a second decoder implies."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            fn()
        return fc.get_total_flops() / 1e12

    with torch.device("meta"):
        x, t, ctx = torch.randn(1, 16, 21, 60, 104), torch.tensor([500.0]), torch.randn(1, 512, 4096)
        vae = AutoencoderKLWan()
        dits = {"1.3B": WanTransformer3DModel(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960,
                                              num_layers=30),
                "14B": WanTransformer3DModel(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824,
                                             num_layers=40)}
    decode = count(lambda: vae.decode(x))
    out = {"decode_tflop": decode, "steps": steps}
    for name, dit in dits.items():
        step = count(lambda: dit(x, t, ctx, return_dict=False))
        rgb = steps * step + decode
        out[name] = {"dit_step_tflop": step, "rgba_over_rgb": (rgb + decode) / rgb}
    return out


WAN_VS = """
name = "vs-wan"
backend = "wan-alpha"
family = "wan"
[text_encoder]
kind = "tiny"
format = "random"
config = {{ width = 32, layers = 1, heads = 2, max_len = 8 }}
[transformer]
format = "random"
config = {{ patch_size = [1, 2, 2], num_attention_heads = 12, attention_head_dim = 128, in_channels = 16, out_channels = 16, text_dim = 4096, freq_dim = 256, ffn_dim = 8960, num_layers = {layers}, rope_max_seq_len = 1024 }}
[vae]
format = "random"
config = {{ base_dim = 8, z_dim = 16 }}
rank = 2
alpha = 1
"""
COG_TRANSFORMER = dict(num_attention_heads=8, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
                       text_embed_dim=4096, num_layers=2, sample_width=90, sample_height=60, sample_frames=49,
                       patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
                       use_rotary_positional_embeddings=True)
COG_VAE = dict(block_out_channels=[8, 16, 16, 16], down_block_types=["CogVideoXDownBlock3D"] * 4,
               up_block_types=["CogVideoXUpBlock3D"] * 4, latent_channels=16, layers_per_block=1, norm_num_groups=4,
               temporal_compression_ratio=4)


def _toml_table(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"


def _cog_vs_preset(folder: Path, layers: int) -> Path:
    """CogVideoX (a few layers, 4096-d T5 embeddings) + a zeroed TransPixar adapter file."""
    from diffusers import CogVideoXTransformer3DModel

    from rgbacli.models.alpha_tokens import AlphaTokenTransformer, save_alpha_token_weights
    from rgbacli.seeding import seeded

    cfg = {**COG_TRANSFORMER, "num_layers": layers}
    with seeded(0):
        base = CogVideoXTransformer3DModel(**cfg)
    save_alpha_token_weights(AlphaTokenTransformer(base, rank=128, lora_alpha=1.0), folder / "zero_alpha.safetensors")
    path = folder / "vs-cog.toml"
    path.write_text(f"""
name = "vs-cog"
backend = "alpha-tokens"
family = "cogvideox"
[text_encoder]
kind = "tiny"
format = "random"
config = {{ width = 32, layers = 1, heads = 2, max_len = 8 }}
[transformer]
format = "random"
config = {_toml_table(cfg)}
adapters = [{{ kind = "alpha-tokens", path = "zero_alpha.safetensors", rank = 128, alpha = 1.0 }}]
[vae]
format = "random"
config = {_toml_table(COG_VAE)}
""")
    return path


def vs_diffusers(args) -> dict:
    """Our sampler vs diffusers' WanPipeline and CogVideoXPipeline on the same random DiT, prompt
    embeddings, starting noise and scheduler: max |Δ| of the final latents and s/step ours/diffusers,
    alternating runs, best of --repeat."""
    from rgbacli.engine import Engine
    from rgbacli.parity import cogvideox_pipeline_latents, wan_pipeline_latents
    from rgbacli.pipelines.guidance import GuidancePlan
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    tmp = Path(tempfile.mkdtemp(prefix="rgba-vs-"))
    out = {"threads": args.threads, "steps": args.vs_steps}

    def side_by_side(ours_fn, ref_fn):
        ours_t, ref_t, a, b = [], [], None, None
        ours_fn(), ref_fn()  # warm-up: caches (RoPE tables), allocator

        def timed(fn, into):
            t = time.perf_counter()
            result = fn()
            into.append(time.perf_counter() - t)
            return result

        for i in range(args.repeat):  # alternate which side goes first
            if i % 2 == 0:
                a, b = timed(ours_fn, ours_t), timed(ref_fn, ref_t)
            else:
                b, a = timed(ref_fn, ref_t), timed(ours_fn, ours_t)
        return {"max_abs_diff": float((a - b).abs().max()), "latent_abs_max": float(a.abs().max()),
                "ours_s_per_step": min(ours_t) / args.vs_steps, "diffusers_s_per_step": min(ref_t) / args.vs_steps,
                "ours_over_diffusers": min(ours_t) / min(ref_t)}

    # --- Wan2.1-1.3B width and heads, a few layers, WanPipeline, UniPC flow (shift 5)
    wan = tmp / "vs-wan.toml"
    wan.write_text(WAN_VS.format(layers=args.vs_layers))
    eng = Engine(str(wan), device="cpu")
    pipe = TextToRGBAPipeline(eng)
    g = torch.Generator().manual_seed(0)
    text, uncond = torch.randn(1, 512, 4096, generator=g), torch.randn(1, 512, 4096, generator=g)
    for guidance in (1.0, 5.0):
        p = params_from_preset(eng, "x", width=args.vs_size, height=args.vs_size, frames=args.vs_frames,
                               steps=args.vs_steps, guidance=guidance, shift=5.0, solver="unipc")
        plan = GuidancePlan.build(guidance)
        latents = pipe.prepare_latents(p, [0])
        u = uncond if guidance > 1 else None
        with torch.no_grad():
            out[f"wan_guidance_{guidance:g}"] = side_by_side(
                lambda: pipe.denoise(latents, text, u, p, plan),
                lambda: wan_pipeline_latents(eng.component("transformer"), latents, text, u, p.steps, guidance, 5.0))
    out["wan_config"] = {"width": 1536, "heads": 12, "ffn": 8960, "layers": args.vs_layers, "text": "1x512x4096",
                         "latent": list(latents.shape)}
    del eng, pipe

    # --- CogVideoX on the alpha-token backend, adapter zeroed, CogVideoXDPMScheduler
    eng = Engine(str(_cog_vs_preset(tmp, args.vs_layers)), device="cpu")
    pipe = TextToRGBAPipeline(eng)
    text, uncond = torch.randn(1, 226, 4096, generator=g), torch.randn(1, 226, 4096, generator=g)
    for guidance, dynamic in ((1.0, False), (6.0, True)):
        p = params_from_preset(eng, "x", width=args.vs_size, height=args.vs_size, frames=args.vs_frames,
                               steps=args.vs_steps, guidance=guidance, dynamic_cfg=dynamic, solver="cogvideox-dpm")
        plan = GuidancePlan.build(guidance)
        latents = pipe.prepare_latents(p, [0])
        u = uncond if guidance > 1 else None

        def reference():
            gen = torch.Generator().manual_seed(0)
            torch.randn(latents[0].numel() // 2, generator=gen)  # the initial noise the seed drew
            return cogvideox_pipeline_latents(eng.component("transformer"), latents, text, u, p.steps, guidance,
                                              dynamic, gen)

        with torch.no_grad():
            out[f"cogvideox_guidance_{guidance:g}{'_dynamic' if dynamic else ''}"] = side_by_side(
                lambda: pipe.denoise(latents, text, u, p, plan, seeds=[0]), reference)
    out["cogvideox_config"] = {"width": 512, "heads": 8, "layers": args.vs_layers, "text": "1x226x4096",
                               "latent": list(latents.shape), "adapter": "alpha tokens, zeroed (rank 128)"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parts", default="overhead,scale,flops", help="comma list: overhead, scale, flops")
    ap.add_argument("--vs-diffusers", action="store_true", help="only: our sampler vs WanPipeline / CogVideoXPipeline")
    ap.add_argument("--vs-layers", type=int, default=2)
    ap.add_argument("--vs-size", type=int, default=64)
    ap.add_argument("--vs-frames", type=int, default=9)
    ap.add_argument("--vs-steps", type=int, default=4)
    args = ap.parse_args()
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
    if args.vs_diffusers:
        report = vs_diffusers(args)
        print(json.dumps(report, indent=2))
        for name, row in report.items():
            if isinstance(row, dict) and "max_abs_diff" in row:
                print(f"{name}: max |ours - diffusers| {row['max_abs_diff']:.2e} (target <= 1e-5 fp32); s/step ours "
                      f"{row['ours_s_per_step']:.3f} / diffusers {row['diffusers_s_per_step']:.3f} = "
                      f"{row['ours_over_diffusers']:.3f} (target <= 1.0)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="rgba-bench-"))
    report = {}
    # 1. RGBA overhead on the tiny preset (trained weights) and on a medium random config + alpha tokens.
    parts = set(args.parts.split(","))
    med = write_preset(tmp, "medium", MEDIUM_CFG)
    if "overhead" in parts:
        med_at = write_preset(tmp, "medium-at", MEDIUM_CFG, backend="alpha-tokens")
        report["overhead_tiny"] = overhead("tiny", 64, 17, 16, args.device, args.repeat, "tiny-alpha-tokens")
        report["overhead_medium"] = overhead(str(med), 128, 17, 4, args.device, args.repeat, str(med_at))
    # 2. Scale: seconds and peak memory vs frames on the medium config.
    if "scale" in parts:
        report["scale_medium_128x128"] = [run_child(med, f, 128, 128, 4, args.device, args.threads)
                                          for f in (17, 33, 65)]
    if "flops" in parts:
        report["flops_832x480x81"] = flop_ratios()
    # 3. Real scale on a GPU: random-init Wan2.1-1.3B at 832x480x81, 4 steps, bf16, ours vs WanPipeline.
    if args.device.startswith("cuda"):
        big = write_preset(tmp, "wan13b", WAN13B_CFG)
        report["wan13b_ours"] = run_child(big, 81, 832, 480, 4, args.device, args.threads)
        report["wan13b_diffusers"] = wan_pipeline_gpu(big, 832, 480, 81, 4)
    else:
        report["wan13b"] = "not run: no CUDA GPU on this machine (pass --device cuda where one exists)"
    print(json.dumps(report, indent=2))
    for name in ("overhead_tiny", "overhead_medium"):
        if name in report:
            o = report[name]
            print(f"{name}: RGBA/RGB-only {o['rgba_over_rgb']:.3f}x (target <= 1.10); "
                  f"alpha tokens/RGB-only {o['alpha_tokens_over_rgb']:.3f}x (reference design ~2-4x)")
    if "flops_832x480x81" in report:
        f = report["flops_832x480x81"]
        for name in ("1.3B", "14B"):
            print(f"compute at 832x480x81, {f['steps']} steps, Wan2.1-{name}: DiT step {f[name]['dit_step_tflop']:.0f} "
                  f"TFLOP, VAE decode {f['decode_tflop']:.0f} TFLOP → RGBA/RGB-only {f[name]['rgba_over_rgb']:.3f}x")
    for row in report.get("scale_medium_128x128", []):
        print(f"frames {row['frames']:3d}: {row['seconds']:.2f}s (denoise {row['denoise_s']:.2f}s, "
              f"decode {row['decode_s']:.2f}s), peak RSS {row['peak_mb']:.0f} MB (after load {row['loaded_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
