"""Executors run planned jobs and hand back their manifest entries as each finishes.

The interface is small so that a distributed executor (Ray, one loaded engine per worker) can
stand beside the local one: `run(jobs, on_event)` yields `(job, entry)` pairs in completion
order. Executors never write the manifest; the driver does.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from rgbacli.batch.jobs import OnEvent, run_job
from rgbacli.batch.plan import Job


class Executor:
    """Runs jobs; subclasses decide where and how many at a time."""

    name = "executor"

    def run(self, jobs: Iterable[Job], on_event: OnEvent | None = None) -> Iterator[tuple[Job, dict]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (nothing for the local executor)."""


class LocalExecutor(Executor):
    """One engine in this process, jobs one after another in the order given."""

    name = "local"

    def __init__(self, engine):
        self.engine = engine

    def run(self, jobs, on_event=None):
        for job in jobs:
            yield job, run_job(self.engine, job, on_event)
