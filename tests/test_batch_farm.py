"""Batches a render farm can trust (issue #17, rows 1, 2, 3 and 7): the manifest after every item,
resume after a real signal, items that fail alone, resume with changed options, output folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_test_preset

from rgbacli.batch.driver import run_batch
from rgbacli.batch.executor import LocalExecutor
from rgbacli.batch.jobs import JOB_KINDS
from rgbacli.batch.plan import Job

PROMPTS = "".join(f"a red orb number {i}\n" for i in range(6))


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", RGBA_WEIGHTS="")
    env.pop("RGBA_DEBUG", None)
    return env


def _start(tmp_path: Path, preset: Path, *extra: str) -> subprocess.Popen:
    """A batch of 6 slow items (many steps on the random test preset) in a real subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "rgbacli", "generate", "--prompts", "p.txt", "-o", "out/{index:03d}-{slug}.apng",
         "--preset", str(preset), "--steps", "30", "--json", *extra],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _manifest(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "out" / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_interrupted_batch_resumes_exactly_the_unfinished_items(tmp_path, sig):
    """Row 1: stop a batch with a real signal after 2 of 6 items; the manifest says which finished,
    no temporary file stays (TERM/INT), and --resume runs only the others, with no 'already exists'."""
    preset = write_test_preset(tmp_path)
    (tmp_path / "p.txt").write_text(PROMPTS)
    proc = _start(tmp_path, preset)
    deadline = time.monotonic() + 240
    while _manifest(tmp_path).get("ok", 0) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch never finished two items"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    doc = _manifest(tmp_path)
    done = [e["index"] for e in doc["items"] if e["status"] == "ok"]
    assert 2 <= len(done) < 6 and done == list(range(len(done))), doc
    for e in doc["items"]:
        assert (tmp_path / e["output"]).exists() == (e["status"] == "ok") or e["status"] == "running"
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, err
        assert doc["state"] == "interrupted" and "stopped by a signal" in err
        assert json.loads(out)["ok"] == len(done)  # the --json summary, even when stopped
        assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
        assert "Traceback" not in err
    mtimes = {i: (tmp_path / doc["items"][i]["output"]).stat().st_mtime_ns for i in done}
    r = run_cli("generate", "--prompts", "p.txt", "-o", "out/{index:03d}-{slug}.apng", "--preset", preset,
                "--steps", "30", "--resume", "--json", cwd=tmp_path, env=_env())
    assert r.returncode == 0, r.stderr
    assert "already exists" not in r.stderr
    again = json.loads(r.stdout)
    assert [bool(e.get("skipped")) for e in again["items"]] == [i in done for i in range(6)]
    assert again["ok"] == 6 and again["state"] == "complete" and _manifest(tmp_path)["items"] == again["items"]
    assert all((tmp_path / doc["items"][i]["output"]).stat().st_mtime_ns == m for i, m in mtimes.items())


def test_a_bad_item_fails_alone_on_the_tiny_preset(cli, tmp_path):
    """Row 2: `"frames": 33` in the middle of a batch on tiny is that item's usage error (with its
    line and the limit); the others run, the manifest and the --json summary are written."""
    (tmp_path / "p.txt").write_text('a red orb\n{"prompt": "a blue star", "frames": 33}\n'
                                    '{"prompt": "a red star", "seed": 99999999999999999999}\na red orb\n')
    r = cli("generate", "--prompts", "p.txt", "-o", "out/{index}.apng", "--preset", "tiny", "--frames", "1",
            "--steps", "1", "--size", "16x16", "--json", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [e["status"] for e in doc["items"]] == ["ok", "failed", "failed", "ok"]
    assert doc["items"][1]["error"] == ("line 2: --frames 33: preset 'tiny' allows 1 to 31 frames (its position "
                                        "table holds 16 latent frames; frames = 2k+1)")
    assert doc["items"][2]["error"].startswith("line 3: --seed must be a whole number 0 to 2**63-1")
    assert "item 1 failed: line 2: --frames 33" in r.stderr and "internal error" not in r.stderr
    assert {**json.loads((tmp_path / "out" / "manifest.json").read_text()), "manifest": "out/manifest.json"} == doc


class _Crash(Exception):
    pass


@pytest.fixture
def crashing_kind():
    """A job kind that fails the way models do: an exception from inside, out of memory, or works."""

    def run(engine, job, progress):
        how = job.options["how"]
        if how == "crash":
            raise _Crash("index 40 is out of bounds for dimension 0 with size 16")
        if how == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if how == "weights":
            from rgbacli.errors import WeightsError

            raise WeightsError("preset 'x' needs model.safetensors, not found")
        Path(job.output).write_text("ok")
        return {"seconds": 0.0, "timings": {}}

    JOB_KINDS.add("test-crash", run)
    yield "test-crash"
    JOB_KINDS.remove("test-crash")


def test_any_failure_inside_an_item_fails_that_item_alone(tmp_path, crashing_kind):
    """Row 2: a crash inside a model, out of memory or missing weights fail the item, the rest run;
    the folders of the outputs are created."""
    hows = ["ok", "crash", "oom", "weights", "ok"]
    jobs = [Job(i, i + 1, f"p{i}", crashing_kind, 0, str(tmp_path / "new" / "dir" / f"{i}.txt"), {"seed": 0},
                {"how": how}) for i, how in enumerate(hows)]
    doc = run_batch(LocalExecutor(engine=None), jobs, tmp_path / "new" / "manifest.json")
    assert [e["status"] for e in doc["items"]] == ["ok", "failed", "failed", "failed", "ok"]
    assert doc["items"][1]["error"] == "internal error: _Crash: index 40 is out of bounds for dimension 0 with size 16"
    assert doc["items"][2]["error"].startswith("out of memory (OutOfMemoryError: CUDA out of memory")
    assert [e.get("error_kind") for e in doc["items"]] == [None, "internal", "memory", "weights", None]
    assert (tmp_path / "new" / "dir" / "4.txt").read_text() == "ok"


def test_missing_weights_fail_every_item_alone_with_a_summary(cli, tmp_path):
    """Row 2 (weights): a batch on a preset without its weights: each item fails with the weights
    message, exit 1 (not 3), the summary and the manifest are written."""
    (tmp_path / "p.txt").write_text("a red orb\na blue star\n")
    r = cli("generate", "--prompts", "p.txt", "-o", "out/{index}.mov", "--preset", "wan-alpha-14b", "--json",
            cwd=tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "nohub")})
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [e["status"] for e in doc["items"]] == ["failed", "failed"]
    assert all(e["error_kind"] == "weights" for e in doc["items"]) and "internal error" not in r.stderr


def test_resume_with_changed_options_names_the_items_and_keeps_the_manifest(cli, tmp_path):
    """Row 3 and row 7: the README's batch line on a fresh folder (out/ does not exist yet); then
    --resume with other options is exit 2 naming the items, the manifest unchanged; --resume with
    the original options skips them all."""
    preset = write_test_preset(tmp_path)
    (tmp_path / "prompts.txt").write_text("a glass jellyfish\na red orb\n")
    line = ["generate", "--prompts", "prompts.txt", "-o", "out/{index:03d}-{slug}.mov", "--preset", preset]
    r = cli(*line, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000-a-glass-jellyfish.mov", "001-a-red-orb.mov",
                                                                   "manifest.json"]
    manifest = tmp_path / "out" / "manifest.json"
    before = manifest.read_bytes()
    r = cli(*line, "--resume", "--steps", "3", "--seed", "5", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--resume: 2 finished item(s) differ from the manifest (item 0 (line 1): seed 0 → 5, steps 2 → 3;" in r.stderr
    assert manifest.read_bytes() == before
    r = cli(*line, "--resume", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [e.get("skipped") for e in json.loads(r.stdout)["items"]] == [True, True]
