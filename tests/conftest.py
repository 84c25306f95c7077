"""Shared test helpers: small thread counts (CI has 2 cores) and a real-process CLI runner (warm: cli_server.py)."""

from __future__ import annotations

import json
import locale
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# One thread: the test tensors are tiny, and spinning OpenMP threads stall each other when the
# machine is shared (the CLI processes take OMP_NUM_THREADS: scripts/test sets 1).
torch.set_num_threads(1)


def _cli_env(env) -> dict:
    full_env = dict(os.environ)
    full_env.pop("RGBA_DEBUG", None)
    full_env.setdefault("RGBA_WEIGHTS", "")
    if env:
        full_env.update(env)
    return full_env


class _WarmCLI:
    """One tests/cli_server.py per test process: forks a real `rgba` process per call, with torch and
    diffusers already imported (RGBA_TEST_COLD_CLI=1 runs every call as a cold `python -m rgbacli`)."""

    proc: subprocess.Popen | None = None
    buf = b""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_server.py"))], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, bufsize=0, env=_cli_env(None), cwd=str(Path(__file__).parents[1]))
        self.buf = b""
        if self.readline(120) != "ready":
            raise RuntimeError("tests/cli_server.py did not start")

    def readline(self, timeout: float) -> str | None:
        """The server's next reply line, or None after `timeout` seconds without one."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            if not select.select([fd], [], [], timeout)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("tests/cli_server.py exited")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().strip()

    def run(self, args: list[str], input, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        with tempfile.TemporaryDirectory(prefix="rgba-cli-") as d:
            files = {k: os.path.join(d, k) for k in ("stdin", "stdout", "stderr")}
            Path(files["stdin"]).write_text(input or "")
            req = dict(files, args=args, env=env, cwd=str(cwd or os.getcwd()))
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            pid = int(self.readline(60))
            code = self.readline(timeout)
            if code is None:
                os.kill(pid, signal.SIGKILL)
                self.readline(60)
                raise subprocess.TimeoutExpired([sys.executable, "-m", "rgbacli", *args], timeout)
            code = int(code)
            enc = locale.getpreferredencoding(False)
            out, err = (Path(files[k]).read_bytes().decode(enc).replace("\r\n", "\n") for k in ("stdout", "stderr"))
        return subprocess.CompletedProcess([sys.executable, "-m", "rgbacli", *args], code, out, err)


_warm = _WarmCLI()


def run_cli(*args: str, input: str | None = None, cwd=None, env=None, timeout: float = 300):
    """Run `python -m rgbacli ARGS` as a real separate process; returns CompletedProcess (text)."""
    full_env = _cli_env(env)
    if os.environ.get("RGBA_TEST_COLD_CLI"):
        return subprocess.run([sys.executable, "-m", "rgbacli", *map(str, args)], input=input, capture_output=True,
                              text=True, cwd=cwd, env=full_env, timeout=timeout)
    return _warm.run(list(map(str, args)), input, cwd, full_env, timeout)


@pytest.fixture
def cli():
    return run_cli


TINY_TEST_PRESET = """
name = "{name}"
backend = "{backend}"
family = "wan"

[text_encoder]
kind = "tiny"
format = "random"
config = {{ width = 32, layers = 1, heads = 2, max_len = 24 }}

[transformer]
format = "random"
config = {{ patch_size = [1, 2, 2], num_attention_heads = 2, attention_head_dim = 8, in_channels = 4, out_channels = 4, text_dim = 32, freq_dim = 16, ffn_dim = 32, num_layers = 2, rope_max_seq_len = 32 }}
{adapters}

[vae]
format = "random"
config = {{ base_dim = 8, z_dim = 4, dim_mult = [1, 2], num_res_blocks = 1, attn_scales = [], temperal_downsample = [true], scale_factor_temporal = 2, scale_factor_spatial = 2 }}
rank = 4
alpha = 4

[sampling]
width = 16
height = 16
frames = 5
fps = 8
steps = 2
guidance = 1.0
shift = 3.0
solver = "euler"
"""


def write_test_preset(folder, name="test-tiny", backend="wan-alpha", adapters=""):
    """A random-initialised tiny preset TOML (deterministic weights, no files needed)."""
    path = folder / f"{name}.toml"
    path.write_text(TINY_TEST_PRESET.format(name=name, backend=backend, adapters=adapters))
    return path


@pytest.fixture
def tiny_preset(tmp_path):
    return write_test_preset(tmp_path)


def tiny_wan():
    """A 2-block Wan DiT small enough for attention-level checks (2 heads of 8, 4 latent channels)."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32,
    ).eval()


def tiny_wan_inputs(b=2, frames=3, seed=1):
    """Latents (B, 4, F, 4, 4), timesteps and text (B, 3, 16) for `tiny_wan()`."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, frames, 4, 4, generator=g), torch.full((b,), 400.0), torch.randn(b, 3, 16, generator=g)


def run_wan(model, x, t, ctx):
    """One no-grad forward of a diffusers Wan DiT; the prediction tensor."""
    with torch.no_grad():
        return model(x, t, ctx, return_dict=False)[0]


def disk_full_after(monkeypatch, n: int) -> list:
    """Make the n-th frame file a sequence writer writes fail with ENOSPC (a disk that fills up);
    returns the list of paths it was asked to write."""
    import errno

    import rgbacli.media.write as write_mod

    real, calls = write_mod._write_bytes, []

    def fill_up(path, data):
        calls.append(path)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(write_mod, "_write_bytes", fill_up)
    return calls

@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for all the Ray tests (loopback only, 2 CPUs, no dashboard), started once;
    its GCS address (for a CLI run joining it with --ray-address). Skips where Ray is absent."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback: read when ray is first imported
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
