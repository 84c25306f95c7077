"""The tests' warm CLI runner (conftest.run_cli → cli_server.py) behaves as a cold `python -m rgbacli`."""

from __future__ import annotations

import json

from conftest import run_cli


def test_warm_runner_matches_a_cold_process(tmp_path, monkeypatch):
    (tmp_path / "p.txt").write_text("a red orb\n")
    cases = [("generate", "x", "--preset", "nope"), ("compare", "missing-a.png", "missing-b.png"), ("models", "--json")]
    for args in cases:
        warm = run_cli(*args, cwd=tmp_path)
        monkeypatch.setenv("RGBA_TEST_COLD_CLI", "1")
        cold = run_cli(*args, cwd=tmp_path)
        monkeypatch.delenv("RGBA_TEST_COLD_CLI")
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr), args
    assert warm.returncode == 0 and '"tiny"' in warm.stdout


def test_warm_runner_gives_the_child_its_cwd_env_and_stdin(tmp_path):
    r = run_cli("generate", "--prompts", "-", "-o", "{index}.png", "--preset", "tiny", "--frames", "1", "--steps", "1",
                "--size", "16x16", input="a red orb\n", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "0.png").exists()  # the prompt from stdin, the relative output in the child's cwd
    first = json.loads(run_cli("models", "wan-alpha-1.3b", "--json").stdout)["presets"][0]["files"][0]
    assert first["found"] is None
    (tmp_path / first["file"]).mkdir(parents=True)
    doc = json.loads(run_cli("models", "wan-alpha-1.3b", "--json", env={"RGBA_WEIGHTS": str(tmp_path)}).stdout)
    assert doc["presets"][0]["files"][0]["found"] == str(tmp_path / first["file"])  # the child's environment
