"""Running one job: `run_job(engine, job, on_event) -> manifest entry`.

Each job kind registers a runner in `JOB_KINDS` (`generate` here; `story` and `interpolate` from
their own modules). A runner writes its outputs through the atomic writers and returns a
summary; `run_job` turns that into the job's manifest entry, with a failure as its own entry.
"""

from __future__ import annotations

import time

import numpy as np
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rgbacli.batch.interpolate import run_interpolate
from rgbacli.batch.plan import Job, preview_paths
from rgbacli.batch.story import run_story
from rgbacli.errors import RgbaError
from rgbacli.fsutil import check_output
from rgbacli.media import Clip, matte_path, write_clip, write_contact_sheet, write_matte, write_preview_mp4
from rgbacli.media.preview import PATH_COLOUR, TRACK_COLOUR, centroid_tracks
from rgbacli.media.write import check_delivery, check_writable
from rgbacli.pipelines.t2v import GenerateParams, TextToRGBAPipeline
from rgbacli.pipelines.trajectory import TrajectoryPipeline
from rgbacli.registry import Registry


@dataclass
class Event:
    """What a running batch reports: `kind` is started, progress, finished or skipped."""

    kind: str
    job: Job
    step: int = 0
    total: int = 0
    entry: dict | None = None


OnEvent = Callable[[Event], None]
Runner = Callable[..., dict]  # (engine, job, progress(step, total)) -> summary
JOB_KINDS: Registry[Runner] = Registry("job kind")


def run_job(engine, job: Job, on_event: OnEvent | None = None) -> dict:
    """Run one job on a loaded engine; its manifest entry (status ok or failed, never an exception
    for a problem with the job itself)."""
    emit = on_event or (lambda _e: None)
    entry = job.entry()
    if job.error:
        entry.update(status="failed", error=job.error)
        emit(Event("finished", job, entry=entry))
        return entry
    emit(Event("started", job))
    try:
        if job.output is not None:  # a batch creates its output folders (out/{index}.mov on a fresh checkout)
            make_parent(job.output)
        summary = JOB_KINDS.get(job.kind, f"job {job.index}")(
            engine, job, lambda i, n: emit(Event("progress", job, i, n)))
        entry.update(status="ok", seconds=summary["seconds"], timings=summary["timings"], summary=summary)
    except Exception as e:  # any failure is this item's alone; stop signals (SystemExit) and Ctrl-C pass
        entry.update(status="failed", error=describe_failure(e), error_kind=failure_kind(e))
        if entry["error_kind"] == "memory":
            _release_memory()
    emit(Event("finished", job, entry=entry))
    return entry


def describe_failure(e: BaseException) -> str:
    """One line for a failed item: the message of an RgbaError, else what went wrong and where."""
    if isinstance(e, RgbaError):
        return str(e)
    text = (str(e).strip().splitlines() or [""])[0][:300]
    if failure_kind(e) == "memory":
        return f"out of memory ({type(e).__name__}{': ' + text if text else ''})"
    return f"internal error: {type(e).__name__}{': ' + text if text else ''}"


def failure_kind(e: BaseException) -> str:
    """usage, weights, media, memory, error (other RgbaError) or internal."""
    from rgbacli.errors import MediaError, UsageError, WeightsError

    for cls, kind in ((UsageError, "usage"), (WeightsError, "weights"), (MediaError, "media"), (RgbaError, "error")):
        if isinstance(e, cls):
            return kind
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError":
        return "memory"
    return "internal"


def _release_memory() -> None:
    """After an out-of-memory item, hand cached GPU blocks back so the next item starts clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_parent(output: str) -> None:
    """Create the folder an output goes in (a MediaError of one line if that is impossible)."""
    from rgbacli.errors import MediaError
    from rgbacli.fsutil import reason

    parent = Path(output).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MediaError(f"cannot create output folder {parent} ({reason(e)})") from None


@JOB_KINDS.register("generate")
def run_generate(engine, job: Job, progress: Callable[[int, int], None]) -> dict:
    """Generate one clip and write it (+ previews) atomically; returns a summary dict."""
    opts, out = job.options, job.output
    check_writable(out, opts.get("force", False))
    extras = preview_paths(out) if opts.get("preview") else []
    for extra in extras:
        check_output(extra, opts.get("force", False))
    delivery = {"bit_depth": opts.get("bit_depth"), "start_number": opts.get("start_number")}
    check_delivery(out, **delivery)
    matte = str(matte_path(out)) if opts.get("matte") else None
    if matte is not None:
        check_writable(matte, opts.get("force", False))
    params = GenerateParams(**job.params)
    t0 = time.perf_counter()
    pipeline = TextToRGBAPipeline(engine) if params.trajectory is None else TrajectoryPipeline(engine)
    result = pipeline(params, progress=progress)
    clip = Clip(frames=result.frames.numpy(), fps=params.fps, had_alpha=True)
    path = write_clip(clip, out, force=opts.get("force", False), premultiplied=opts.get("premultiplied", False),
                      **delivery)
    if matte is not None:
        write_matte(clip, matte, force=opts.get("force", False), **delivery)
    tracks, realised = None, None
    if params.trajectory is not None:
        requested = np.asarray(params.trajectory, np.float64)
        realised = centroid_tracks(clip.frames[..., 3], requested)
        tracks = [(p, PATH_COLOUR) for p in requested] + [(r, TRACK_COLOUR) for r in realised]
    if extras:
        write_preview_mp4(clip, extras[0], force=opts.get("force", False), tracks=tracks)
        write_contact_sheet(clip, extras[1], force=opts.get("force", False), tracks=tracks)
    t, h, w, _ = result.frames.shape
    alpha = result.frames[..., 3]
    return {
        "output": str(path), "previews": extras, "frames": t, "size": f"{w}x{h}", "fps": params.fps,
        "seed": params.seed, "params": params.to_dict(), "seconds": round(time.perf_counter() - t0, 3),
        "timings": {k: round(v, 3) for k, v in result.timings.items()}, "passes_per_step": result.passes_per_step,
        "alpha_mean": round(float(alpha.mean()), 4), "alpha_coverage": round(float((alpha > 0.5).float().mean()), 4),
        "alpha": "premultiplied" if opts.get("premultiplied") else "straight",
        **({"matte": matte} if matte else {}),
        **({} if realised is None else {"trajectory_method": params.trajectory_method,
                                         "trajectory_error_px": round(float(np.linalg.norm(
                                             realised - np.asarray(params.trajectory), axis=-1).mean()), 3)}),
    }

JOB_KINDS.add("story", run_story)
JOB_KINDS.add("interpolate", run_interpolate)
