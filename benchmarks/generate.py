"""Generate benchmark: RGBA overhead, alpha-token cost, and time/peak memory vs clip length.

    python benchmarks/generate.py                 # CPU: tiny preset (trained weights) + medium random config
    python benchmarks/generate.py --device cuda   # + random-init Wan2.1-1.3B at 832x480x81, bf16, vs WanPipeline

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
    args = ap.parse_args()
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
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
