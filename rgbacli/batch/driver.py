"""The batch driver: skip what a previous run finished, run the rest on an executor, keep the
manifest current, summarise.

The driver, not the executor, writes the manifest: when the batch starts, when each item starts
and after each item ends (one atomic rename each time), and once more when the batch stops for
any reason (a stop signal is a SystemExit raised inside the loop, see fsutil.install_signal_cleanup).
So any executor (the local one, a distributed one) gets the same guarantees: `--resume` after an
interruption skips exactly the items that finished.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from rgbacli.batch.executor import Executor
from rgbacli.batch.jobs import Event, OnEvent
from rgbacli.batch.manifest import UNFINISHED, differences, entries_by_index, is_done, load_manifest, write_manifest
from rgbacli.batch.plan import Job
from rgbacli.errors import UsageError


def check_resume(previous: dict, jobs: list[Job], header: dict) -> None:
    """Refuse to resume a batch whose finished items would now come out differently (other options,
    prompts, outputs or preset): a UsageError naming each such item, and nothing is written."""
    old = entries_by_index(previous)
    differ = []
    for job in jobs:
        entry = old.get(job.index)
        if entry is None or entry.get("status") != "ok" or job.error:
            continue
        was = {"prompt": entry.get("prompt"), "output": entry.get("output"), **(entry.get("params") or {})}
        now = {"prompt": job.prompt, "output": job.output, **job.params}
        if "preset" in header and previous.get("preset") != header["preset"]:
            was["preset"], now["preset"] = previous.get("preset"), header.get("preset")
        if was != now:
            differ.append(f"item {job.index} (line {job.line}): {differences(was, now)}")
    if differ:
        more = f"; and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise UsageError(f"--resume: {len(differ)} finished item(s) differ from the manifest ("
                         + "; ".join(differ[:3]) + more + "); rerun with the original options, "
                         "or without --resume (and --force) to redo them")


def run_batch(executor: Executor, jobs: list[Job], manifest_path: Path, resume: bool = False,
              header: dict | None = None, on_event: OnEvent | None = None,
              on_update: Callable[[dict], None] | None = None) -> dict:
    """Run `jobs`; returns the manifest document (also written to `manifest_path` after every item).

    With `resume`, a job that the previous manifest records as finished with the same params (and
    whose output is still there) is skipped, and a job it records as started but unfinished may
    replace its own leftover output. `on_update(doc)` sees the document each time it is written."""
    header = dict(header or {})
    emit = on_event or (lambda _e: None)
    manifest_path = Path(manifest_path)
    previous = load_manifest(manifest_path) if resume else {}
    if resume:
        check_resume(previous, jobs, header)
    old = entries_by_index(previous)
    entries: dict[int, dict] = {}
    todo = []
    for job in jobs:
        if resume and job.error is None and is_done(previous, job.output, job.params):
            entries[job.index] = {**old.get(job.index, job.entry()), "status": "ok", "skipped": True}
            emit(Event("skipped", job, entry=entries[job.index]))
            continue
        was = old.get(job.index, {})
        if resume and was.get("status") in UNFINISHED and was.get("output") == job.output:
            job = replace(job, options={**job.options, "force": True})  # our own leftover from the interruption
        entries[job.index] = {**job.entry(), "status": "failed" if job.error else "pending"}
        if job.error:
            entries[job.index]["error"] = job.error
        todo.append(job)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    state = {"batch": "running"}

    def save() -> dict:
        items = [entries[i] for i in sorted(entries)]
        counts = {s: sum(e["status"] == s for e in items) for s in ("ok", "failed", "pending", "running", "interrupted")}
        doc = {**header, "state": state["batch"], "items": items, **counts}
        write_manifest(manifest_path, doc)
        if on_update is not None:
            on_update(doc)
        return doc

    def on_item(event: Event) -> None:
        if event.kind == "started":
            entries[event.job.index] = {**entries[event.job.index], "status": "running"}
            save()
        emit(event)

    doc = save()
    try:
        for job, entry in executor.run(todo, on_item):
            entry.pop("summary", None)
            entries[job.index] = entry
            doc = save()
        state["batch"] = "complete"
    except BaseException:
        state["batch"] = "interrupted"
        for e in entries.values():
            if e["status"] == "running":
                e["status"] = "interrupted"
        raise
    finally:
        doc = save()
    return doc
