"""CLI usage errors: one line on stderr and exit code 2, whatever copy of click Typer runs on."""

from __future__ import annotations

import pytest

from rgbacli.cli import main


@pytest.mark.parametrize("argv, message", [
    (["frobnicate"], "rgba: error: No such command 'frobnicate'"),
    (["generate", "x", "--threads", "1"], "rgba generate: error: No such option: --threads"),
    (["generate", "x", "--steps", "many"], "rgba generate: error: Invalid value for '--steps'"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
    assert "internal error" not in err


def test_weights_dir_is_read_for_the_embedded_preset(cli, tmp_path):
    """`--weights-dir RUN` tries a trained run on the tiny preset: its files are the ones read."""
    (tmp_path / "transformer.safetensors").write_bytes(b"not a weights file")
    r = cli("generate", "a red orb", "-o", tmp_path / "x.webm", "--steps", "2", "--weights-dir", tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot read weights file {tmp_path / 'transformer.safetensors'}" in r.stderr
    assert not (tmp_path / "x.webm").exists()
