"""The batch driver: skip what a previous run finished, run the rest on an executor, write the
manifest, summarise."""

from __future__ import annotations

from pathlib import Path

from rgbacli.batch.executor import Executor
from rgbacli.batch.jobs import Event, OnEvent
from rgbacli.batch.manifest import is_done, load_manifest, write_manifest
from rgbacli.batch.plan import Job


def run_batch(executor: Executor, jobs: list[Job], manifest_path: Path, resume: bool = False,
              header: dict | None = None, on_event: OnEvent | None = None) -> dict:
    """Run `jobs`; returns the manifest document (also written to `manifest_path`). With `resume`, a
    job whose output the previous manifest records as finished with the same params is skipped."""
    emit = on_event or (lambda _e: None)
    previous = load_manifest(manifest_path) if resume else {}
    entries: dict[int, dict] = {}
    todo = []
    for job in jobs:
        if resume and job.error is None and is_done(previous, job.output, job.params):
            entries[job.index] = {**job.entry(), "status": "ok", "skipped": True}
            emit(Event("skipped", job, entry=entries[job.index]))
        else:
            todo.append(job)
    for job, entry in executor.run(todo, on_event):
        entry.pop("summary", None)
        entries[job.index] = entry
    items = [entries[i] for i in sorted(entries)]
    failed = sum(e["status"] == "failed" for e in items)
    doc = {**(header or {}), "items": items, "ok": len(items) - failed, "failed": failed}
    write_manifest(manifest_path, doc)
    return doc
