"""Deterministic random initialisation that leaves the global RNG state alone."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int):
    """Random initialisation that is the same in every process, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
