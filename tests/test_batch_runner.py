"""The batch runner: pure planning, picklable jobs, executors behind one interface, the driver's manifest."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from rgbacli.batch.driver import run_batch
from rgbacli.batch.executor import Executor
from rgbacli.batch.plan import Job, plan_generate
from rgbacli.errors import UsageError

SAMPLING = {"width": 16, "height": 16, "frames": 5, "steps": 2, "guidance": 1.0}


def test_planning_is_pure_and_jobs_pickle(tmp_path):
    text = 'a red orb\n{"prompt": "a blue star", "seed": 9, "frames": 9}\n{"prompt": broken\n'
    jobs = plan_generate(text, str(tmp_path / "{index:03d}-{slug}.apng"), 100, {"steps": None, "guidance": 2.0},
                         SAMPLING, {"force": False})
    assert [(j.index, j.line, j.seed, j.error is None) for j in jobs] == [(0, 1, 100, True), (1, 2, 9, True), (2, 3, None, False)]
    assert jobs[0].output.endswith("000-a-red-orb.apng") and jobs[0].params["guidance"] == 2.0
    assert jobs[0].params["steps"] == 2 and jobs[1].params["frames"] == 9  # preset default, item override
    assert "line 3: invalid JSON" in jobs[2].error
    assert pickle.loads(pickle.dumps(jobs)) == jobs  # an executor may run them in another process
    code = ("import sys; from rgbacli.batch.plan import plan_generate; "
            "plan_generate('a red orb', 'o/{index}.apng', 0, {}, {}, {}); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


class Recording(Executor):
    """Finishes jobs in reverse order without running a model."""

    def __init__(self):
        self.ran = []

    def run(self, jobs, on_event=None):
        for job in reversed(list(jobs)):
            self.ran.append(job.index)
            entry = job.entry()
            if job.error:
                entry.update(status="failed", error=job.error)
            else:
                Path(job.output).write_text("x")
                entry.update(status="ok", seconds=0.1)
            yield job, entry


def test_driver_orders_entries_writes_the_manifest_and_resumes(tmp_path):
    jobs = plan_generate("a\nb\n{\nc\n", str(tmp_path / "{index}.apng"), 0, {}, SAMPLING, {})
    manifest = tmp_path / "manifest.json"
    executor = Recording()
    doc = run_batch(executor, jobs, manifest, header={"preset": "p"})
    assert executor.ran == [3, 2, 1, 0]
    assert [e["index"] for e in doc["items"]] == [0, 1, 2, 3] and (doc["ok"], doc["failed"]) == (3, 1)
    assert json.loads(manifest.read_text()) == doc and doc["preset"] == "p"
    again = Recording()
    doc = run_batch(again, jobs, manifest, resume=True)
    assert again.ran == [2]  # only the failed one runs again
    assert [e.get("skipped") for e in doc["items"]] == [True, True, None, True]
    changed = [Job(**{**j.__dict__, "params": {**j.params, "steps": 9}}) if j.index == 1 else j for j in jobs]
    third = Recording()
    before = manifest.read_bytes()
    with pytest.raises(UsageError, match=r"1 finished item\(s\) differ.*item 1 \(line 2\): steps 2 → 9"):
        run_batch(third, changed, manifest, resume=True)
    assert third.ran == [] and manifest.read_bytes() == before  # nothing ran, the manifest is untouched
