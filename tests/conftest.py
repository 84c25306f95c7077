"""Shared test helpers: small thread counts (CI has 2 cores) and a real-subprocess CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def run_cli(*args: str, input: str | None = None, cwd=None, env=None, timeout: float = 300):
    """Run `python -m rgbacli ARGS` in a real subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("RGBA_DEBUG", None)
    full_env.setdefault("RGBA_WEIGHTS", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "rgbacli", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
