"""Choosing where a batch runs (`--executor local|ray` and the Ray options), shared by every
command with a batch form, and the driver's progress display for workers.

The command builds a `BatchTarget` from its options first (usage errors, and the missing-extra
line, before any model loads), plans its jobs, and hands them to `run_jobs`: the executor, the
progress display, the driver (manifest after each item) and the summary, the same for every batch
form (`generate --prompts`, and any other command whose jobs are in JOB_KINDS).
"""

from __future__ import annotations

from dataclasses import dataclass

from rgbacli.console import info, print_json, progress, warn
from rgbacli.errors import UsageError

EXECUTORS = ("local", "ray")


@dataclass
class BatchTarget:
    """Where a batch runs: `executor` is local or ray; the rest only apply to ray."""

    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    max_retries: int = 2

    def check(self, batch: bool, batch_flag: str = "--prompts FILE") -> "BatchTarget":
        """Usage errors for the options themselves (exit 2, one line); Ray's absence is one too."""
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, not '{self.executor}'")
        if self.executor == "local":
            given = [flag for flag, value, default in (
                ("--ray-address", self.ray_address, None), ("--workers", self.workers, None),
                ("--gpus-per-worker", self.gpus_per_worker, None), ("--max-retries", self.max_retries, 2))
                if value != default]
            if given:
                raise UsageError(f"{given[0]} needs --executor ray")
            return self
        if not batch:
            raise UsageError(f"--executor ray runs batches: give {batch_flag}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, not {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be 0 or more, not {self.gpus_per_worker:g}")
        if self.max_retries < 0:
            raise UsageError(f"--max-retries must be 0 or more, not {self.max_retries}")
        from rgbacli.batch.ray_executor import require_ray

        require_ray()
        return self


def open_executor(target: BatchTarget | None, engine, bar, on_event, *, total=None, device="auto", dtype="auto",
                  offload=False, weights_dir=None):
    """(executor, on_event) for a batch; the caller closes the executor (`finally: ex.close()`)."""
    from rgbacli.batch.executor import LocalExecutor

    if target is None or target.executor == "local":
        return LocalExecutor(engine), on_event
    from rgbacli.batch.ray_executor import EngineSpec, RayExecutor

    display = WorkerDisplay(bar, total)
    spec = EngineSpec(engine.preset, device=device, dtype=dtype, offload=offload, weights_dir=weights_dir)
    executor = RayExecutor(spec, address=target.ray_address, workers=target.workers,
                           gpus_per_worker=target.gpus_per_worker, max_retries=target.max_retries,
                           on_worker=display.on_worker, announce=info)
    return executor, display.wrap(on_event)  # Ray starts with the first item to run (none: not at all)


class WorkerDisplay:
    """One progress line per worker (loading, idle, item and step, dead) and one for the batch."""

    def __init__(self, bar, total: int | None = None):
        self.bar = bar
        self.rows: dict[int, int] = {}
        self.done = self.failed = 0
        self.summary = bar.add_task(self._label(), total=total)

    def _label(self) -> str:
        return f"items: {self.done} done, {self.failed} failed"

    def on_worker(self, wid: int, state: str, job, detail: str) -> None:
        what = {"loading": "loading the engine", "idle": f"idle {detail}".strip(), "dead": detail,
                "running": f"[{job.index}] '{job.prompt[:24]}'" if job else "running"}[state]  # the bar: its step
        label = f"  worker {wid}: {what}"
        step, _, steps = detail.partition("/") if state == "running" else ("", "", "")
        done, total = (int(step), int(steps)) if step.isdigit() and steps.isdigit() else (0, None)
        if wid not in self.rows:
            self.rows[wid] = self.bar.add_task(label, total=total)
        self.bar.update(self.rows[wid], description=label, completed=done, total=total)
        if state == "dead":
            warn(detail)

    def wrap(self, on_event):
        """The command's reporter gets finished and skipped items (its lines); the worker rows show
        what runs where, so per-item bars are not drawn."""

        def handle(event) -> None:
            if event.kind == "retry":
                warn(f"item {event.job.index} goes to another worker (attempt {event.entry['attempt'] + 1})")
                return
            if event.kind not in ("finished", "skipped"):
                return
            ok = event.kind == "skipped" or event.entry.get("status") == "ok"
            self.done += ok
            self.failed += not ok
            self.bar.update(self.summary, description=self._label(), completed=self.done + self.failed)
            if on_event is not None:
                on_event(event)

        return handle


def run_jobs(engine, jobs, manifest_path, resume: bool, as_json: bool, target: BatchTarget | None = None,
             placement: dict | None = None, header: dict | None = None) -> int:
    """Run planned jobs on the chosen executor with progress; the summary (also when a stop signal
    ends the batch); exit status 1 if any item failed."""
    from rgbacli.batch.driver import run_batch

    header = {"preset": engine.preset.name, "device": str(engine.device), **(header or {})}
    last: dict = {}
    try:
        with progress() as bar:
            executor, on_event = open_executor(target, engine, bar, item_reporter(bar), total=len(jobs),
                                               **(placement or {}))
            try:
                doc = run_batch(executor, jobs, manifest_path, resume, header, on_event, on_update=last.update)
            finally:
                executor.close()
    finally:  # also when a stop signal ends the batch: the summary of what the manifest says
        if last:
            if as_json:
                print_json({**last, "manifest": str(manifest_path)})
            else:
                info(f"{last['ok']} ok, {last['failed']} failed"
                     + (f", {last['pending'] + last['interrupted']} not done" if last["state"] != "complete" else "")
                     + f"; manifest {manifest_path}")
    return 1 if doc["failed"] else 0


def item_reporter(bar):
    """Batch events → a progress bar per item and one line per finished, skipped or failed item."""
    tasks = {}

    def on_event(event) -> None:
        job = event.job
        if event.kind == "started":
            tasks[job.index] = bar.add_task(f"[{job.index}] '{job.prompt[:30]}'", total=job.params.get("steps"))
        elif event.kind == "progress" and job.index in tasks:
            bar.update(tasks[job.index], completed=event.step)
        elif event.kind == "skipped":
            info(f"[{job.index}] skipped (done): {job.output}")
        elif event.kind == "finished":
            if job.index in tasks:
                bar.remove_task(tasks.pop(job.index))
            if event.entry["status"] == "ok":
                info(f"[{job.index}] wrote {job.output}")
            else:
                error = event.entry["error"]
                where = "" if error.startswith(f"line {job.line}:") else f"line {job.line}: "
                warn(f"item {job.index} failed: {where}{error}")

    return on_event
