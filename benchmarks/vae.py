"""RGBA VAE benchmark: decode peak memory vs clip length, encode/decode speed, RGBA overhead.

    python benchmarks/vae.py                       # tiny config, CPU
    python benchmarks/vae.py --weights v.safetensors   # + alpha IoU / MAE of a trained model

Peak memory: each measurement runs in a fresh subprocess; on CPU it is ru_maxrss after the
decode minus ru_maxrss just before it (model and latents already built), on CUDA
torch.cuda.max_memory_allocated minus the allocation before decoding. CPU children run with
MALLOC_MMAP_THRESHOLD_=65536 so the RSS peak reflects live tensors, not allocator fragmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from rgbacli.train.tiny_config import TINY_VAE as TINY, TINY_VAE_LORA  # the embedded model's VAE


def _model(weights: str | None, device: str):
    from rgbacli.models.rgba_vae import RGBAVAE

    torch.manual_seed(0)
    m = RGBAVAE.load(weights) if weights else RGBAVAE.from_config(TINY, lora_rank=TINY_VAE_LORA["rank"], lora_alpha=TINY_VAE_LORA["alpha"])
    return m.to(device).eval()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(args) -> None:
    """One decode in this (fresh) process; prints a JSON line with the peak-memory delta."""
    torch.set_num_threads(args.threads)
    m = _model(args.weights, args.device)
    z = torch.randn(1, m.base.config.z_dim, m.latent_frames(args.frames), args.size // m.spatial_factor,
                    args.size // m.spatial_factor, device=args.device)
    if args.merged:
        m.merge_lora(drop_lora=True)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_mb()
    t = time.perf_counter()
    with torch.no_grad():
        if args.stream:
            for _ in m.iter_decode(z):
                pass
        else:
            m.decode(z)
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()
    print(json.dumps({"frames": args.frames, "delta_mb": peak - before, "seconds": dt}))


def run_child(frames: int, args, stream: bool, merged: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", "--frames", str(frames), "--size", str(args.size),
           "--device", args.device, "--threads", str(args.threads)]
    cmd += ["--stream"] if stream else []
    cmd += ["--merged"] if merged else []
    cmd += ["--weights", args.weights] if args.weights else []
    # A fixed mmap threshold makes glibc return large freed buffers at once, so ru_maxrss tracks
    # live memory instead of heap fragmentation (otherwise ±100 MB noise at this model size).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(args) -> dict:
    """Encode+decode frames/s, and decode time of RGBA (2 decoders) vs RGB only (1 decoder)."""
    torch.set_num_threads(args.threads)
    m = _model(args.weights, args.device)
    x = torch.rand(1, 4, 17, args.size, args.size, device=args.device)
    res = {}
    with torch.no_grad():
        m.decode(m.encode(x[:, :, :5]))  # warm-up
        for label, merged in (("lora", False), ("merged", True)):
            if merged and m.has_lora:
                m.merge_lora()
            t = time.perf_counter()
            z = m.encode(x)
            t1 = time.perf_counter()
            m.decode(z)
            t2 = time.perf_counter()
            m.decode_rgb_only(z)
            t3 = time.perf_counter()
            res[label] = {"encode_fps": 17 / (t1 - t), "decode_fps": 17 / (t2 - t1),
                          "encode_decode_fps": 17 / (t2 - t), "rgba_over_rgb_decode": (t2 - t1) / (t3 - t2)}
    return res


def alpha_quality(args) -> dict:
    """Alpha IoU (α>0.5), alpha MAE, RGB PSNR of encode→decode on held-out procedural clips."""
    from rgbacli.evaluation import vae_reconstruction

    return vae_reconstruction(_model(args.weights, args.device), n=24)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--merged", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", default=None, help="an rgbacli RGBA VAE .safetensors (adds alpha IoU/MAE)")
    args = p.parse_args()
    if args.child:
        return child(args)
    report = {"device": args.device, "size": args.size, "config": "file" if args.weights else "tiny", "memory": {}}
    for stream in (True, False):
        short, long = run_child(17, args, stream), run_child(129, args, stream)
        key = "iter_decode" if stream else "decode"
        report["memory"][key] = {"17_mb": round(short["delta_mb"], 1), "129_mb": round(long["delta_mb"], 1),
                                 "ratio_129_over_17": round(long["delta_mb"] / max(short["delta_mb"], 1e-6), 3)}
    report["speed"] = speed(args)
    if args.weights:
        report["alpha"] = alpha_quality(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
