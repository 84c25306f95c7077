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

TINY = dict(base_dim=32, z_dim=8, dim_mult=[1, 2, 4], num_res_blocks=1, attn_scales=[],
            temperal_downsample=[False, True], scale_factor_temporal=2, scale_factor_spatial=4)


def _model(weights: str | None, device: str):
    from rgbacli.models.rgba_vae import RGBAVAE

    torch.manual_seed(0)
    m = RGBAVAE.load(weights) if weights else RGBAVAE.from_config(TINY, lora_rank=16, lora_alpha=16)
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


def disc_clip(frames: int, size: int) -> torch.Tensor:
    """A soft-edged disc moving left to right over a transparent background: (1,4,T,H,W)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(1, 4, frames, size, size)
    for t in range(frames):
        cx = size * (0.25 + 0.5 * t / max(frames - 1, 1))
        d = ((xx - cx) ** 2 + (yy - size / 2) ** 2).sqrt()
        a = (size * 0.2 - d).clamp(0, 1.5) / 1.5
        out[0, 3, t] = a
        out[0, 0, t], out[0, 1, t], out[0, 2, t] = 0.9, 0.3 * a, 0.2
    return out


def alpha_quality(args) -> dict:
    """Alpha MAE and IoU (α>0.5) of encode→decode on procedural clips (meaningful for trained weights)."""
    m = _model(args.weights, args.device)
    x = disc_clip(17, args.size).to(args.device)
    with torch.no_grad():
        y = m.decode(m.encode(x))
    a, b = y[:, 3] > 0.5, x[:, 3] > 0.5
    iou = (a & b).sum().item() / max((a | b).sum().item(), 1)
    return {"alpha_mae": (y[:, 3] - x[:, 3]).abs().mean().item(), "alpha_iou": iou}


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
