"""The Ray executor: one actor per worker holds one loaded Engine; items are handed out one at a
time to whichever worker is free, and a worker that dies costs only the item it was running.

    driver (this process)                          Ray actors (one per worker, GPU or CPUs each)
    run_batch ─ RayExecutor.run(jobs) ──dispatch──▶ _Worker(spec): Engine built once, kept loaded
       ▲  manifest after each item   ◀──entry────── run(job): run_job → outputs via atomic writers
       └── (the only manifest writer)               (to the shared output path)

Ray is an optional extra (`pip install "rgbacli[ray]"`): nothing here imports it before
`RayExecutor` starts. The actor class is plain Python, wrapped by `ray.remote` at start-up.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rgbacli.batch.executor import Executor
from rgbacli.batch.jobs import Event, describe_failure, failure_kind, preview_paths, run_job
from rgbacli.batch.plan import Job
from rgbacli.errors import RgbaError, UsageError
from rgbacli.fsutil import signals_deferred

INSTALL_HINT = "--executor ray needs Ray, an optional extra: pip install \"rgbacli[ray]\" (or .venv/bin/pip install -e '.[ray]')"
# Environment a worker needs to find weights the way the driver does (for an existing cluster,
# whose workers do not inherit the driver's environment).
FORWARDED_ENV = ("RGBA_WEIGHTS", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


def require_ray():
    """The `ray` module, or a usage error saying how to install it (exit 2, one line)."""
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


@dataclass
class EngineSpec:
    """Everything a worker needs to build the driver's Engine itself (picklable: a parsed preset
    and plain strings, never loaded modules)."""

    preset: Any  # rgbacli.presets.Preset (the chosen one, backend variant applied)
    device: str = "auto"
    dtype: str = "auto"
    offload: bool = False
    weights_dir: str | None = None
    cwd: str | None = None  # relative outputs resolve here (a path shared by the cluster)
    threads: int | None = None  # torch CPU threads in the worker
    env: dict[str, str] = field(default_factory=dict)

    def build(self):
        from rgbacli.engine import Engine

        return Engine(self.preset, device=self.device, dtype=self.dtype, offload=self.offload,
                      weights_dir=self.weights_dir)


def load_engine(engine) -> None:
    """Build every component of the preset now (a worker loads once, before its first item)."""
    for name in engine.preset.components:
        engine.component(name)
    if engine.has("transformer") and engine.has("vae"):
        engine.backend  # noqa: B018 (builds the backend object)


class _Worker:
    """The actor body: one Engine, loaded in `load()`, used for every job sent to `run()`.

    Runs with max_concurrency=2 so the driver can read `step()` while `run()` samples."""

    def __init__(self, spec: EngineSpec):
        os.environ.update(spec.env)
        if spec.cwd and os.path.isdir(spec.cwd):
            os.chdir(spec.cwd)
        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.engine = None
        self._step = (None, 0, 0)
        self._lock = threading.Lock()

    def load(self) -> dict:
        t0 = time.perf_counter()
        self.engine = self.spec.build()
        load_engine(self.engine)
        import torch

        return {"pid": os.getpid(), "device": str(self.engine.device), "threads": torch.get_num_threads(),
                "seconds": round(time.perf_counter() - t0, 3)}

    def run(self, job: Job) -> dict:
        def on_event(event: Event) -> None:
            if event.kind == "progress":
                with self._lock:
                    self._step = (job.index, event.step, event.total)

        with self._lock:
            self._step = (job.index, 0, 0)
        return run_job(self.engine, job, on_event)

    def step(self) -> tuple:
        with self._lock:
            return self._step


@dataclass
class _Slot:
    """The driver's view of one worker."""

    wid: int
    actor: Any
    state: str = "loading"  # loading, idle, running, dead
    job: Job | None = None
    ref: Any = None
    info: dict = field(default_factory=dict)


OnWorker = Callable[[int, str, "Job | None", str], None]  # (worker id, state, job, detail)


def _signal_handlers() -> dict:
    import signal

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(handlers: dict) -> None:
    """Put back the handlers `ray.init` replaced (Ray's own SIGTERM handler aborts the process),
    so that a stop signal still removes temporaries and leaves the manifest whole."""
    import signal

    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def discard_partial(job: Job, cwd: str | None = None) -> None:
    """Remove what a killed worker may have left of this job's outputs: the atomic writers' hidden
    temporaries beside the output (the output itself only ever appears complete)."""
    if not job.output:
        return
    out = Path(job.output)
    if not out.is_absolute() and cwd:
        out = Path(cwd) / out
    targets = [out] + [Path(p) for p in preview_paths(str(out))]
    import shutil

    for target in targets:
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            continue
        for pattern in {f".{target.stem}.tmp-*", f".{target.name}.tmp-*"}:
            for tmp in parent.glob(pattern):
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)


class RayExecutor(Executor):
    """Jobs on Ray actors, each with one loaded Engine; dynamic hand-out, one job per actor at a time.

    address: None starts a private local Ray (this machine's CPUs and GPUs, loopback, no dashboard)
    and shuts it down in `close()`; "auto" or "HOST:PORT" joins an existing cluster (left running).
    A worker that dies (killed, node lost, out of memory) fails its current job with the reason;
    the job is retried on a new worker up to `max_retries` times, then recorded as failed.
    """

    name = "ray"

    def __init__(self, spec: EngineSpec, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float | None = None, max_retries: int = 2, on_worker: OnWorker | None = None,
                 init_kwargs: dict | None = None, poll_seconds: float = 0.5,
                 announce: Callable[[str], None] | None = None):
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be at least 1, not {workers}")
        if gpus_per_worker is not None and gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be 0 or more, not {gpus_per_worker}")
        if max_retries < 0:
            raise UsageError(f"--max-retries must be 0 or more, not {max_retries}")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address is None:
            # A private local cluster: loopback only (Ray's switch for that is named after the
            # platforms where it is the default); read when ray is first imported.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self.ray = require_ray()
        self.spec = spec
        self.address = address
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.max_retries = max_retries
        self.on_worker = on_worker or (lambda *_a: None)
        self.init_kwargs = init_kwargs or {}
        self.poll_seconds = poll_seconds
        self.announce = announce or (lambda _line: None)
        self.slots: dict[int, _Slot] = {}
        self.started_here = self.connected_here = False
        self.startup_seconds = 0.0
        self._next_wid = 0
        self._remote = None

    # ----------------------------------------------------------------- cluster
    def start(self) -> None:
        """Connect to (or start) Ray and work out how many workers with which resources."""
        if self._remote is not None:
            return
        t0 = time.perf_counter()
        ray = self.ray
        if not ray.is_initialized():
            self.announce("rgba: starting a local Ray" if self.address is None else f"rgba: joining Ray at {self.address}")
            handlers = _signal_handlers()
            quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="error")
            if self.address is None:
                import torch

                gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
                ray.init(num_cpus=os.cpu_count() or 1, num_gpus=gpus, **{**quiet, **self.init_kwargs})
                self.started_here = True
            else:
                self.connected_here = True
                try:
                    ray.init(address=self.address, **{"log_to_driver": False, "logging_level": "error",
                                                      **self.init_kwargs})
                except (ConnectionError, RuntimeError, ValueError) as e:
                    raise RgbaError(f"cannot join the Ray cluster at {self.address}: {_first_line(e)}") from None
            _restore_signal_handlers(handlers)
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        gpw = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
        if gpw > gpus:
            raise UsageError(f"--gpus-per-worker {gpw:g} but the Ray cluster has {gpus:g} GPUs")
        if self.workers is None:
            self.workers = max(1, int(gpus // gpw)) if gpw > 0 else 1
        # CPU workers of a local Ray share this machine's cores; on a cluster each takes one CPU
        # (a node's cores are not known here, and the cluster's total may span many nodes).
        cpw = 1.0 if gpw > 0 or not self.started_here else max(1.0, float(int(cpus // self.workers)))
        if self.spec.threads is None and gpw == 0:
            self.spec.threads = int(cpw)
        if self.spec.cwd is None:
            self.spec.cwd = os.getcwd()
        for key in FORWARDED_ENV:
            if key in os.environ:
                self.spec.env.setdefault(key, os.environ[key])
        self._remote = ray.remote(num_cpus=cpw, num_gpus=gpw, max_restarts=0, max_task_retries=0,
                                  max_concurrency=2)(_Worker)
        self.gpus_per_worker, self.cpus_per_worker = gpw, cpw
        self.startup_seconds = time.perf_counter() - t0
        self.announce(f"rgba: {self.workers} Ray worker(s), {gpw:g} GPU and {cpw:g} CPU each "
                      f"(Ray ready in {self.startup_seconds:.1f}s; each worker loads its engine once)")

    def warm_up(self) -> float:
        """Start every worker and wait until each has loaded its engine (else the first items wait
        for them); the seconds it took."""
        t0 = time.perf_counter()
        self.start()
        while self._live() < self.workers:
            self._spawn()
        from ray.exceptions import RayError

        for slot in self.slots.values():
            if slot.state == "loading":
                try:
                    slot.info = self.ray.get(slot.ref)
                except RayError as e:
                    cause = getattr(e, "cause", None) or e
                    raise RgbaError(f"Ray worker {slot.wid} could not load the engine: {_first_line(cause)}") from None
                slot.state, slot.ref = "idle", None
                self.on_worker(slot.wid, "idle", None, slot.info.get("device", ""))
        return time.perf_counter() - t0

    def _spawn(self) -> _Slot:
        wid, self._next_wid = self._next_wid, self._next_wid + 1
        slot = _Slot(wid, self._remote.remote(self.spec))
        slot.ref = slot.actor.load.remote()
        self.slots[wid] = slot
        self.on_worker(wid, "loading", None, "")
        return slot

    def _kill(self, slot: _Slot) -> None:
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone  # noqa: BLE001
            pass

    # ----------------------------------------------------------------- running
    # Every blocking Ray call of the driver is short (a poll) and inside `signals_deferred()`: a
    # stop signal caught inside Ray's C++ wait would come out as Ray's own SystemExit(1), so our
    # handler (fsutil.install_signal_cleanup) acts on it when the call returns, with 143/130.
    def run(self, jobs, on_event=None):
        emit = on_event or (lambda _e: None)
        pending: deque[Job] = deque()
        for job in jobs:
            if job.error:  # a bad line fails without a worker
                yield job, run_job(None, job, on_event)
            else:
                pending.append(job)
        if not pending:
            return
        self.start()
        ray = self.ray
        from ray.exceptions import RayActorError, RayError, RayTaskError

        attempts: dict[int, list[str]] = {}
        load_deaths = 0
        load_error: tuple[str, str] | None = None  # (message, kind) of a worker that could not load
        while self._live() < min(self.workers, len(pending)):  # workers of an earlier run() stay loaded
            self._spawn()
        try:
            self._dispatch(pending, emit)
            while True:
                live = [s for s in self.slots.values() if s.state != "dead"]
                if not pending and not any(s.state == "running" for s in live):
                    break
                refs = {s.ref: s for s in live if s.ref is not None}
                if not refs and load_error is not None:  # no worker could load the engine
                    while pending:  # each item fails alone with the reason, as on the local executor
                        job = pending.popleft()
                        entry = {**job.entry(), "status": "failed", "error": load_error[0], "error_kind": load_error[1]}
                        emit(Event("finished", job, entry=entry))
                        yield job, entry
                    continue
                if not refs:  # nothing loading or running, yet items wait: a fresh worker
                    self._spawn()
                    continue
                with signals_deferred():  # see above
                    ready, _ = ray.wait(list(refs), num_returns=1, timeout=self.poll_seconds)
                if not ready:
                    self._poll_progress(emit)
                    continue
                slot = refs[ready[0]]
                job, slot.ref = slot.job, None
                try:
                    with signals_deferred():
                        result = ray.get(ready[0])
                except RayTaskError as e:  # the call raised inside a live worker
                    cause = getattr(e, "cause", None) or e
                    if job is None:  # this worker cannot build the engine (missing weights, …): it
                        # leaves; the others go on, and when none is left the items fail with it
                        load_error = (describe_failure(cause), failure_kind(cause))
                        slot.state = "dead"
                        self.on_worker(slot.wid, "dead", None, f"worker {slot.wid} could not load: {load_error[0]}")
                        self._kill(slot)
                        continue
                    entry = {**job.entry(), "status": "failed", "error": describe_failure(cause),
                             "error_kind": failure_kind(cause)}
                    self._finish(slot, job, entry, emit)
                    yield job, entry
                except (RayActorError, RayError) as e:  # the worker died (killed, node lost, OOM)
                    reason = f"worker {slot.wid} died ({_first_line(e)})"
                    slot.state, slot.job = "dead", None
                    self.on_worker(slot.wid, "dead", job, reason)
                    self._kill(slot)
                    if job is None:
                        load_deaths += 1
                        if load_deaths > self.workers + self.max_retries:
                            raise RgbaError(f"Ray workers keep dying while loading the engine: {reason}") from None
                    else:
                        discard_partial(job, self.spec.cwd)
                        tries = attempts.setdefault(job.index, [])
                        tries.append(reason)
                        if len(tries) <= self.max_retries:
                            pending.appendleft(job)
                            emit(Event("retry", job, entry={"error": reason, "attempt": len(tries)}))
                        else:
                            entry = {**job.entry(), "status": "failed", "retries": tries, "error_kind": "worker",
                                     "error": f"{reason}; gave up after {len(tries)} attempts"}
                            emit(Event("finished", job, entry=entry))
                            yield job, entry
                    if pending and self._live() < min(self.workers, len(pending) + self._busy()):
                        self._spawn()  # a new worker (Ray does not restart ours: max_restarts=0)
                else:
                    if job is None:  # loaded
                        slot.info = result
                    else:
                        if attempts.get(job.index):
                            result["retries"] = attempts[job.index]
                        self._finish(slot, job, result, emit)
                        yield job, result
                    slot.state = "idle"
                    self.on_worker(slot.wid, "idle", None, slot.info.get("device", ""))
                self._dispatch(pending, emit)
        finally:
            self._stop_running()

    def _live(self) -> int:
        return sum(s.state != "dead" for s in self.slots.values())

    def _busy(self) -> int:
        return sum(s.state == "running" for s in self.slots.values())

    def _finish(self, slot: _Slot, job: Job, entry: dict, emit) -> None:
        slot.state, slot.job = "idle", None
        emit(Event("finished", job, entry=entry))

    def _dispatch(self, pending: deque, emit) -> None:
        for slot in self.slots.values():
            if not pending:
                return
            if slot.state == "idle":
                job = pending.popleft()
                slot.state, slot.job = "running", job
                slot.ref = slot.actor.run.remote(job)
                emit(Event("started", job))
                self.on_worker(slot.wid, "running", job, "")

    def _poll_progress(self, emit) -> None:
        running = [s for s in self.slots.values() if s.state == "running"]
        if not running:
            return
        refs = [s.actor.step.remote() for s in running]
        try:
            with signals_deferred():
                steps = self.ray.get(refs, timeout=self.poll_seconds)
        except Exception:  # a dying worker: its main call reports it  # noqa: BLE001
            return
        for slot, (index, step, total) in zip(running, steps):
            if slot.job is not None and index == slot.job.index and total:
                emit(Event("progress", slot.job, step, total))
                self.on_worker(slot.wid, "running", slot.job, f"{step}/{total}")

    def _stop_running(self) -> None:
        """Stop workers still running a job (the batch was interrupted) and remove their temporaries."""
        for slot in self.slots.values():
            if slot.state == "running" and slot.job is not None:
                self._kill(slot)
                slot.state = "dead"
                discard_partial(slot.job, self.spec.cwd)

    def close(self) -> None:
        """Kill the workers; shut down the local Ray this executor started (an existing cluster stays)."""
        for slot in self.slots.values():
            if slot.state != "dead":
                self._kill(slot)
                slot.state = "dead"
        self.slots.clear()
        if (self.started_here or self.connected_here) and self.ray.is_initialized():
            self.ray.shutdown()  # ends the local Ray, or disconnects from a cluster (which keeps running)
        self.started_here = self.connected_here = False
        self._remote = None
