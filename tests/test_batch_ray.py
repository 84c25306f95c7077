"""The Ray executor on a local Ray started once for these tests (tests/conftest.py `ray_cluster`):
same bytes as the local executor, a killed worker costs one item, --resume across executors after
the driver is interrupted, and the one-line message where Ray is not installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, write_test_preset
from rgbacli.batch.driver import run_batch
from rgbacli.batch.executor import LocalExecutor
from rgbacli.batch.plan import plan_generate

# Item 1 is slow enough (about 3 s here) to be killed while it samples; line 3 is a bad line.
PROMPTS = ('a red orb drifting left\n{"prompt": "a blue star", "steps": 30, "frames": 17, "size": "48x48"}\n'
           '{"prompt": broken\na green ring\n')
VOLATILE = ("seconds", "timings")


def _plan(preset, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    return plan_generate(PROMPTS, str(folder / "{index}.apng"), 5, {}, preset.sampling, {})


def _stable(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in VOLATILE and k != "output"}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The batch on the local executor: (preset, outputs' bytes by index, manifest document)."""
    from rgbacli.engine import Engine
    from rgbacli.presets import load_preset

    root = tmp_path_factory.mktemp("local")
    preset = load_preset(str(write_test_preset(root)))
    jobs = _plan(preset, root / "out")
    doc = run_batch(LocalExecutor(Engine(preset, device="cpu")), jobs, root / "out" / "manifest.json")
    outputs = {j.index: Path(j.output).read_bytes() for j in jobs if j.error is None}
    return preset, outputs, doc


@pytest.fixture(scope="module")
def executor(ray_cluster, local_reference):
    """Two Ray workers with the test preset, kept loaded across these tests (a worker they kill is
    replaced by a new one)."""
    from rgbacli.batch.ray_executor import EngineSpec, RayExecutor

    executor = RayExecutor(EngineSpec(local_reference[0], device="cpu"), workers=2, max_retries=1, poll_seconds=0.2)
    yield executor
    executor.close()


def _killer(executor, index, states):
    """on_worker callback: records states, and ray.kills the worker running item `index` once it
    reports a sampling step (once)."""
    import ray

    killed = []

    def on_worker(wid, state, job, detail):
        states.append((wid, state, job.index if job is not None else None))
        if state == "running" and job is not None and job.index == index and detail and not killed:
            killed.append(wid)
            ray.kill(executor.slots[wid].actor, no_restart=True)

    return killed, on_worker


def test_ray_gives_the_local_bytes_and_a_killed_worker_costs_only_its_item(tmp_path, executor, local_reference):
    import ray

    preset, reference, local_doc = local_reference
    states = []
    killed, executor.on_worker = _killer(executor, 1, states)
    jobs = _plan(preset, tmp_path / "out")
    doc = run_batch(executor, jobs, tmp_path / "out" / "manifest.json", header={"preset": preset.name})
    assert len(killed) == 1  # killed while sampling item 1, which was then redone on another worker
    item = doc["items"][1]
    assert item["status"] == "ok" and len(item["retries"]) == 1 and f"worker {killed[0]} died" in item["retries"][0]
    assert {i: Path(j.output).read_bytes() for i, j in enumerate(jobs) if j.error is None} == reference
    assert [_stable(e) for e in doc["items"]] == [_stable({**e, **({"retries": item["retries"]} if e["index"] == 1
                                                                   else {})}) for e in local_doc["items"]]
    assert [e["status"] for e in doc["items"]] == ["ok", "ok", "failed", "ok"] and "line 3" in doc["items"][2]["error"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == doc
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.apng", "1.apng", "3.apng", "manifest.json"]
    assert {s for _, s, _ in states} == {"loading", "running", "idle", "dead"}
    assert {w for w, s, i in states if s == "running" and i == 1} - set(killed)  # redone on another worker
    assert ray.is_initialized()  # the executor joined a running cluster: it leaves it running


def test_an_item_whose_worker_dies_past_max_retries_fails_alone_with_the_reason(tmp_path, executor, local_reference):
    preset, reference, _ = local_reference
    executor.max_retries = 0
    killed, executor.on_worker = _killer(executor, 1, [])
    jobs = _plan(preset, tmp_path / "out")[:2]
    doc = run_batch(executor, jobs, tmp_path / "out" / "manifest.json")
    assert len(killed) == 1 and [e["status"] for e in doc["items"]] == ["ok", "failed"]
    assert "died" in doc["items"][1]["error"] and "gave up after 1 attempts" in doc["items"][1]["error"]
    assert Path(jobs[0].output).read_bytes() == reference[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.apng", "manifest.json"]


def test_resume_on_the_local_executor_after_the_ray_driver_is_interrupted(tmp_path, ray_cluster, executor,
                                                                          local_reference):
    preset, reference, _ = local_reference
    executor.close()  # its workers hold the test cluster's 2 CPUs; the CLI's worker needs one
    preset_path = write_test_preset(tmp_path)
    (tmp_path / "p.txt").write_text(PROMPTS)
    args = ["generate", "--prompts", "p.txt", "-o", "out/{index}.apng", "--preset", str(preset_path), "--seed", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RGBA_WEIGHTS": ""}  # one thread: 2 cores shared by CI
    proc = subprocess.Popen([sys.executable, "-m", "rgbacli", *args, "--executor", "ray", "--ray-address",
                             ray_cluster, "--workers", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    manifest = tmp_path / "out" / "manifest.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:  # stop the driver once item 0 is done
        doc = json.loads(manifest.read_text()) if manifest.exists() else {}
        if any(e.get("status") == "ok" for e in doc.get("items", [])):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    doc = json.loads(manifest.read_text())
    done = [e["index"] for e in doc["items"] if e["status"] == "ok"]
    assert 0 in done and 3 not in done
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # nothing half-written

    again = run_cli(*args, "--resume", "--json", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 1, again.stderr  # item 2 is a bad line
    summary = json.loads(again.stdout)
    assert [e["index"] for e in summary["items"] if e.get("skipped")] == done
    assert [e["status"] for e in summary["items"]] == ["ok", "ok", "failed", "ok"]
    for i, data in reference.items():
        assert (tmp_path / "out" / f"{i}.apng").read_bytes() == data


def test_without_ray_the_ray_executor_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch, capsys):
    from rgbacli.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is absent
    (tmp_path / "p.txt").write_text("a red orb\n")
    for extra, message in (([], 'pip install "rgbacli[ray]"'), (["--workers", "2"], None)):
        argv = ["generate", "--prompts", str(tmp_path / "p.txt"), "-o", str(tmp_path / "{index}.apng"),
                "--preset", "tiny"] + (["--executor", "ray"] if message else extra)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert (message or "--workers needs --executor ray") in err
    assert list(tmp_path.iterdir()) == [tmp_path / "p.txt"]


def test_workers_that_cannot_load_the_engine_fail_each_item_alone(tmp_path, ray_cluster, executor, monkeypatch):
    """Missing weights on the workers: as on the local executor, each item fails with the weights
    message (kind 'weights'), the manifest is complete and the batch ends normally."""
    from rgbacli.batch.ray_executor import EngineSpec, RayExecutor
    from rgbacli.presets import load_preset

    executor.close()  # free the test cluster's CPUs
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nohub"))
    monkeypatch.setenv("RGBA_WEIGHTS", "")
    preset = load_preset("wan-alpha-14b")
    jobs = plan_generate("a red orb\na blue star\n", str(tmp_path / "{index}.mov"), 0, {}, preset.sampling, {})
    missing = RayExecutor(EngineSpec(preset, device="cpu"), workers=1)
    try:
        doc = run_batch(missing, jobs, tmp_path / "manifest.json")
    finally:
        missing.close()
    assert [e["status"] for e in doc["items"]] == ["failed", "failed"] and doc["state"] == "complete"
    assert all(e["error_kind"] == "weights" and "wan-alpha-14b" in e["error"] for e in doc["items"])


def test_interpolate_batches_run_on_ray_with_the_local_bytes(tmp_path, ray_cluster, executor):
    """`rgba interpolate --batch … --executor ray`: the same runner, the same bytes as local."""
    from test_interpolate import _write_keyframes, smp_preset

    executor.close()  # its workers hold the test cluster's 2 CPUs; the CLI's worker needs one
    preset = smp_preset(tmp_path)
    _write_keyframes(tmp_path)
    items = [{"a": "a.png", "b": "b.png", "frames": 5, "prompt": "a red orb"}, {"a": "b.png", "b": "a.png", "frames": 5}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    env = {"OMP_NUM_THREADS": "1"}
    runs = {}
    for name, extra in (("local", []), ("ray", ["--executor", "ray", "--ray-address", ray_cluster, "--workers", "1"])):
        r = run_cli("interpolate", "--batch", "pairs.jsonl", "-o", f"{name}/{{index}}.mkv", "--preset", str(preset),
                    "--json", *extra, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        runs[name] = json.loads(r.stdout)
        assert json.loads((tmp_path / name / "manifest.json").read_text())["kind"] == "interpolate"
    assert [e["status"] for e in runs["ray"]["items"]] == ["ok", "ok"]
    for i in range(2):
        assert (tmp_path / "ray" / f"{i}.mkv").read_bytes() == (tmp_path / "local" / f"{i}.mkv").read_bytes()
