"""Batch benchmark: the local executor vs the Ray executor (1 and 2 workers) on one machine.

    nice -n 10 python benchmarks/batch.py                    # tiny preset, 16 items (needs rgbacli[ray])
    nice -n 10 python benchmarks/batch.py --items 8 --steps 8 --json

Measures, on one local Ray (loopback, no dashboard, this machine's CPUs):
- items/s for local, Ray with 1 worker and Ray with 2 workers, timed from the moment the
  engine(s) are loaded (steady state), and the overhead per item of Ray-1 vs local;
- the start-up cost: `ray.init` of the local cluster, then workers spawned and engines loaded;
- the time lost when one worker is killed (`ray.kill`) in the middle of an item of a 2-worker
  batch: its item is redone on a new worker while the other worker goes on.

The outputs of every run are checked to be byte-identical to the local run's. Runs are one
after another (a batch takes minutes); the local run is repeated at the end to show the drift
of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback (read when ray is imported)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROMPTS = ["a red orb drifting left", "a glass jellyfish drifting upward", "a blue star spinning",
           "a green ring drifting right", "a yellow square falling", "a white moon rising"]


def prompt_file(n: int) -> str:
    return "".join(f"{PROMPTS[i % len(PROMPTS)]} {i}\n" for i in range(n))


def plan(engine, folder: Path, n: int, steps: int | None):
    from rgbacli.batch.plan import plan_generate

    folder.mkdir(parents=True, exist_ok=True)
    return plan_generate(prompt_file(n), str(folder / "{index:02d}.mov"), 0, {"steps": steps},
                         engine.preset.sampling, {})


def outputs(jobs) -> dict[int, bytes]:
    return {j.index: Path(j.output).read_bytes() for j in jobs}


def run_local(engine, folder, n, steps) -> dict:
    from rgbacli.batch.driver import run_batch
    from rgbacli.batch.executor import LocalExecutor
    from rgbacli.batch.ray_executor import load_engine

    t0 = time.perf_counter()
    load_engine(engine)
    loaded = time.perf_counter() - t0
    jobs = plan(engine, folder, n, steps)
    t0 = time.perf_counter()
    doc = run_batch(LocalExecutor(engine), jobs, folder / "manifest.json")
    wall = time.perf_counter() - t0
    return {"wall": wall, "load": loaded, "doc": doc, "bytes": outputs(jobs)}


def run_ray(engine, folder, n, steps, workers, threads, kill_at=None) -> dict:
    import ray

    from rgbacli.batch.driver import run_batch
    from rgbacli.batch.ray_executor import EngineSpec, RayExecutor

    killed = []

    def on_worker(wid, state, job, detail):
        if kill_at is not None and state == "running" and job is not None and job.index == kill_at and detail \
                and not killed:
            killed.append((wid, time.perf_counter()))
            ray.kill(executor.slots[wid].actor, no_restart=True)

    spec = EngineSpec(engine.preset, device="cpu", threads=threads)
    executor = RayExecutor(spec, workers=workers, max_retries=2, on_worker=on_worker, poll_seconds=0.25)
    ready = executor.warm_up()  # every worker spawned and loaded before the clock starts
    threads = sorted({s.info.get("threads") for s in executor.slots.values()})
    jobs = plan(engine, folder, n, steps)
    t0 = time.perf_counter()
    try:
        doc = run_batch(executor, jobs, folder / "manifest.json")
    finally:
        executor.close()
    wall = time.perf_counter() - t0
    return {"wall": wall, "ready": ready, "doc": doc, "bytes": outputs(jobs), "killed": killed, "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, locally and in each Ray worker "
                    "(default 1: on a shared 2-core machine 2 threads run 10x slower, docs/scale.md)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray
    import torch

    from rgbacli.engine import Engine

    torch.set_num_threads(args.threads)
    engine = Engine(args.preset, device="cpu")
    cpus = os.cpu_count() or 1
    results: dict = {"preset": args.preset, "items": args.items, "cpus": cpus, "torch_threads": torch.get_num_threads(),
                     "steps": args.steps or engine.preset.sampling["steps"], "ray": ray.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        local = run_local(engine, tmp / "local", args.items, args.steps)
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="error")
        results["ray_init_s"] = round(time.perf_counter() - t0, 2)
        try:
            r1 = run_ray(engine, tmp / "ray1", args.items, args.steps, 1, args.threads)
            r2 = run_ray(engine, tmp / "ray2", args.items, args.steps, 2, args.threads)
            rk = run_ray(engine, tmp / "ray2k", args.items, args.steps, 2, args.threads, kill_at=args.items // 3)
        finally:
            ray.shutdown()
        local2 = run_local(Engine(args.preset, device="cpu"), tmp / "local2", args.items, args.steps)

    n = args.items
    for name, r in (("ray1", r1), ("ray2", r2), ("ray2_kill", rk), ("local_again", local2)):
        assert r["bytes"] == local["bytes"], f"{name}: outputs differ from the local run"
        assert r["doc"]["failed"] == 0, f"{name}: {r['doc']['failed']} items failed"

    def compute(r):  # mean seconds inside the pipeline per item (the part no executor can save)
        return sum(e["seconds"] for e in r["doc"]["items"]) / n

    results.update({
        "local_items_per_s": round(n / local["wall"], 4), "local_s_per_item": round(local["wall"] / n, 3),
        "local_compute_s_per_item": round(compute(local), 3), "local_engine_load_s": round(local["load"], 2),
        "ray1_items_per_s": round(n / r1["wall"], 4), "ray1_s_per_item": round(r1["wall"] / n, 3),
        "ray1_compute_s_per_item": round(compute(r1), 3), "ray1_threads_per_worker": r1["threads"],
        "ray2_items_per_s": round(n / r2["wall"], 4), "ray2_s_per_item": round(r2["wall"] / n, 3),
        "ray2_compute_s_per_item": round(compute(r2), 3), "ray2_threads_per_worker": r2["threads"],
        "ray1_workers_ready_s": round(r1["ready"], 2), "ray2_workers_ready_s": round(r2["ready"], 2),
        "ray1_overhead_per_item": round(r1["wall"] / local["wall"] - 1, 4),
        "ray2_speedup_vs_local": round(local["wall"] / r2["wall"], 3),
        "kill_wall_s": round(rk["wall"], 2), "kill_lost_s": round(rk["wall"] - r2["wall"], 2),
        "kill_lost_items": round((rk["wall"] - r2["wall"]) / (r2["wall"] / n), 2),
        "killed": len(rk["killed"]), "local_again_items_per_s": round(n / local2["wall"], 4),
        "identical_bytes": True,
    })
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"batch benchmark: preset {args.preset}, {n} items, {results['steps']} steps, {cpus} CPUs, Ray {ray.__version__}")
    print(f"{'':24}{'items/s':>10}{'s/item':>10}{'compute s/item':>16}")
    for label, key in (("local", "local"), ("ray, 1 worker", "ray1"), ("ray, 2 workers", "ray2")):
        print(f"{label:24}{results[key + '_items_per_s']:>10.3f}{results[key + '_s_per_item']:>10.2f}"
              f"{results[key + '_compute_s_per_item']:>16.2f}")
    print(f"{'local (again, drift)':24}{results['local_again_items_per_s']:>10.3f}")
    print(f"ray-1 vs local, overhead per item: {results['ray1_overhead_per_item']:+.1%} (target <= +10%)")
    print(f"ray-2 vs local, speed-up: {results['ray2_speedup_vs_local']:.2f}x")
    print(f"start-up: ray.init {results['ray_init_s']:.1f}s; workers spawned + engines loaded: 1 worker "
          f"{results['ray1_workers_ready_s']:.1f}s, 2 workers {results['ray2_workers_ready_s']:.1f}s "
          f"(local engine load {results['local_engine_load_s']:.1f}s)")
    print(f"one worker killed mid-item (2 workers): {results['kill_wall_s']:.1f}s vs {r2['wall']:.1f}s, "
          f"lost {results['kill_lost_s']:.1f}s = {results['kill_lost_items']:.2f} items' worth")
    print("outputs byte-identical to the local run: yes")


if __name__ == "__main__":
    main()
